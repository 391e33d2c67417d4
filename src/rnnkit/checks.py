"""Checks of user input at the public boundary, before anything is traced.

Each failure raises one ``ValueError``/``TypeError`` whose message names the argument, what was
expected and what came. Shapes are always known (also under ``jit``); values only when concrete.
"""

import jax
import numpy as np

from rnnkit.protocols import missing_members


def is_concrete(x):
    return not isinstance(x, jax.core.Tracer)


def check_cell(cell, name="cell"):
    """``cell`` satisfies ``rnnkit.protocols.Cell``; else a TypeError naming what it lacks."""
    missing = missing_members(cell)
    if missing:
        raise TypeError(f"{name}: expected a cell (rnnkit.protocols.Cell: __call__(inputs, "
                        f"state), zero_state(batch_size, dtype), output_size, state_size), got "
                        f"{type(cell).__name__} without {', '.join(missing)}")


def check_cell_inputs(cell, x, name, rank):
    """``x`` has ``rank`` dimensions and its last one matches the cell's ``input_size``."""
    shape = np.shape(x)
    if len(shape) != rank:
        layout = {2: "[B, I]", 3: "[B, T, I] (or [T, B, I] with time_major=True)"}[rank]
        raise ValueError(f"{name}: expected a rank-{rank} array {layout}, got shape {shape}")
    expected = getattr(cell, "input_size", None)
    if expected is not None and shape[-1] != expected:
        raise ValueError(
            f"{name}: the cell expects {expected} features per step (input_size), "
            f"got {shape[-1]} (shape {shape})"
        )


def check_sequence_length(sequence_length, batch_size, num_steps):
    """``sequence_length`` is an integer ``[B]`` array with values in ``[0, T]`` when concrete."""
    if sequence_length is None:
        return None
    if isinstance(sequence_length, (list, tuple)):
        sequence_length = np.asarray(sequence_length)
    shape, dtype = np.shape(sequence_length), getattr(sequence_length, "dtype", None)
    if shape != (batch_size,):
        raise ValueError(f"sequence_length: expected shape [B] = ({batch_size},), got {shape}")
    if dtype is None or not np.issubdtype(dtype, np.integer):
        raise TypeError(f"sequence_length: expected an integer array, got dtype {dtype}")
    if is_concrete(sequence_length):
        values = np.asarray(sequence_length)
        bad = values[(values < 0) | (values > num_steps)]
        if bad.size:
            raise ValueError(
                f"sequence_length: expected values in [0, T={num_steps}], got {bad.tolist()}"
            )
    return sequence_length


def check_state(cell, state, batch_size, dtype):
    """``state`` has the structure and shapes of ``cell.zero_state(batch_size)``."""
    expected = jax.eval_shape(lambda: cell.zero_state(batch_size, dtype))
    want, got = jax.tree.structure(expected), jax.tree.structure(state)
    if want != got:
        raise ValueError(f"initial_state: expected the structure {want}, got {got}")
    for path, e, s in zip(jax.tree_util.tree_leaves_with_path(expected),
                          jax.tree.leaves(expected), jax.tree.leaves(state)):
        if np.shape(s) != e.shape:
            where = jax.tree_util.keystr(path[0]) or "the state"
            raise ValueError(
                f"initial_state: expected shape {e.shape} at {where}, got {np.shape(s)}"
            )
