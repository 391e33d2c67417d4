"""Checks of user input at the public boundary, before anything is traced.

Each failure raises one ``ValueError``/``TypeError`` whose message names the argument, what was
expected and what came. Shapes are always known (also under ``jit``); values only when concrete.
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from rnnkit.protocols import missing_members

_ARRAYS = (jax.Array, np.ndarray, np.generic)


def is_concrete(x):
    return not isinstance(x, jax.core.Tracer)


def check_size(name, value):
    """``value`` as a Python int, if it is a positive integer (not a bool); else a ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


def check_keep_prob(name, p):
    """``p`` as a Python float, if it is a concrete real scalar in (0, 1] (not a bool)."""
    if not is_concrete(p):
        raise ValueError(f"{name}: expected a concrete number in (0, 1], got a traced value "
                         f"({type(p).__name__}); pass a Python or NumPy number, fixed when the "
                         f"wrapper is made, not one computed under jit")
    if isinstance(p, (bool, np.bool_)):
        real = False
    elif isinstance(p, numbers.Real):
        real = True
    else:  # NumPy and JAX scalars and 0-d arrays
        dtype = None if isinstance(p, (str, bytes)) or np.ndim(p) != 0 else np.asarray(p).dtype
        real = dtype is not None and (jnp.issubdtype(dtype, jnp.integer)
                                      or jnp.issubdtype(dtype, jnp.floating))
    if not real or not 0.0 < float(p) <= 1.0:
        raise ValueError(f"{name}: expected a number in (0, 1], got {p!r}")
    return float(p)


def check_cell(cell, name="cell"):
    """``cell`` satisfies ``rnnkit.protocols.Cell``; else a TypeError naming what it lacks."""
    missing = missing_members(cell)
    if missing:
        raise TypeError(f"{name}: expected a cell (rnnkit.protocols.Cell: __call__(inputs, "
                        f"state), zero_state(batch_size, dtype), output_size, state_size), got "
                        f"{type(cell).__name__} without {', '.join(missing)}")


def weights_dtype(cell, name="cell"):
    """The one floating dtype of ``cell``'s weights (its floating array leaves); None if it has
    none. Weights of two dtypes are a ValueError: rnnkit computes in the weights' dtype."""
    found = {}  # dtype -> the path of its first weight
    for path, leaf in jax.tree_util.tree_leaves_with_path(cell):
        if isinstance(leaf, _ARRAYS) and jnp.issubdtype(leaf.dtype, jnp.floating):
            found.setdefault(jnp.dtype(leaf.dtype), jax.tree_util.keystr(path))
    if len(found) > 1:
        listed = " and ".join(f"{dtype.name} ({path})" for dtype, path in found.items())
        raise ValueError(f"{name}: expected weights of one floating dtype, got {listed}; cast "
                         f"them all, e.g. jax.tree.map(lambda w: w.astype(jnp.float32), {name})")
    return next(iter(found), None)


def as_numeric_array(x, name):
    """``x`` as an array of real numbers (nested lists of numbers are accepted); a TypeError for
    strings, objects and complex numbers, a ValueError for ragged nested lists."""
    if not isinstance(x, _ARRAYS):
        if isinstance(x, (str, bytes)):
            raise TypeError(f"{name}: expected an array of numbers, got str {x!r:.40}")
        try:
            x = np.asarray(x)
        except ValueError:  # NumPy refuses ragged nested sequences
            raise ValueError(f"{name}: expected an array of numbers, got ragged nested lists "
                             f"(of unequal lengths); pad them to one shape") from None
    dtype = jnp.dtype(x.dtype) if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.extended) else None
    if dtype is not None and jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"{name}: expected real numbers, got dtype {dtype.name}")
    if dtype is None or not (jnp.issubdtype(dtype, jnp.number) or dtype == np.bool_):
        raise TypeError(f"{name}: expected an array of numbers, got dtype {x.dtype} "
                        f"(shape {np.shape(x)})")
    return x


def compute_dtype(cell, x, name="cell"):
    """The dtype an unroll computes in: the weights' (``weights_dtype``), else the inputs' if
    floating, else float32."""
    dtype = weights_dtype(cell, name)
    if dtype is not None:
        return dtype
    return jnp.dtype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else jnp.dtype(jnp.float32)


def check_cell_inputs(cell, x, name, rank, cell_name="the cell"):
    """``x`` has ``rank`` dimensions and its last one matches the cell's ``input_size``."""
    shape = np.shape(x)
    if len(shape) != rank:
        layout = {2: "[B, I]", 3: "[B, T, I] (or [T, B, I] with time_major=True)"}[rank]
        raise ValueError(f"{name}: expected a rank-{rank} array {layout}, got shape {shape}")
    expected = getattr(cell, "input_size", None)
    if expected is not None and shape[-1] != expected:
        raise ValueError(
            f"{name}: {cell_name} expects {expected} features per step (input_size), "
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
    """``state`` has the structure and shapes of ``cell.zero_state(batch_size, dtype)``; returns
    it with each floating part cast to ``dtype``'s part (an integer part there is a TypeError)."""
    expected = jax.eval_shape(lambda: cell.zero_state(batch_size, dtype))
    want, got = jax.tree.structure(expected), jax.tree.structure(state)
    if want != got:
        raise ValueError(f"initial_state: expected the structure {want}, got {got}")
    cast = []
    for (path, e), s in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree.leaves(state)):
        where = jax.tree_util.keystr(path) or "the state"
        if np.shape(s) != e.shape:
            raise ValueError(
                f"initial_state: expected shape {e.shape} at {where}, got {np.shape(s)}"
            )
        s = as_numeric_array(s, f"initial_state{jax.tree_util.keystr(path)}")
        if jnp.issubdtype(e.dtype, jnp.floating):
            if not jnp.issubdtype(s.dtype, jnp.floating):
                raise TypeError(f"initial_state: expected floating-point arrays (the cell "
                                f"computes in {jnp.dtype(e.dtype).name}), got "
                                f"{jnp.dtype(s.dtype).name} at {where}")
            s = jnp.asarray(s, e.dtype)
        cast.append(s)
    return jax.tree.unflatten(got, cast)
