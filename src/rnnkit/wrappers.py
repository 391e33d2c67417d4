"""Cells made of cells: stacking (``MultiRNNCell``) and the TF1 wrappers.

Randomness: the unroll functions pass each step ``key=fold_in(key, t)``. A cell whose masks must
stay the same at every step (variational dropout) also gets ``begin_sequence(key)`` called once
before the loop; it returns a copy of the cell that carries the sequence key. Input and output
dropout sit outside the recurrence: ``sequence_dropout`` draws the same masks for whole sequences,
so that the explicit BPTT can run the layers between them (``docs/design.md``).
"""

import functools

import jax
import jax.numpy as jnp

from rnnkit.cells import LSTMStateTuple
from rnnkit.checks import check_keep_prob, check_size
from rnnkit.pytree import build, pytree_dataclass, replace, set_fields, static_field

_glorot = jax.nn.initializers.glorot_uniform()


def begin_sequence(cell, key):
    """``cell.begin_sequence(key)`` where the cell has it, else the cell unchanged."""
    begin = getattr(cell, "begin_sequence", None)
    return cell if key is None or begin is None else begin(key)


def has_dropout(cell):
    """Whether a ``DropoutWrapper`` sits anywhere in ``cell`` (the only user of a PRNG key)."""
    is_dropout = lambda node: isinstance(node, DropoutWrapper)  # noqa: E731
    return any(map(is_dropout, jax.tree.leaves(cell, is_leaf=is_dropout)))


def call_cell(cell, inputs, state, key):
    """One step; ``key`` is passed only when given, so cells without randomness need no ``key``."""
    return cell(inputs, state) if key is None else cell(inputs, state, key=key)


@pytree_dataclass
class MultiRNNCell:
    """Stacked cells: layer ``l`` reads layer ``l-1``'s output; the state is a tuple of states."""

    cells: tuple

    def __init__(self, cells):
        cells = tuple(cells)
        if not cells:
            raise ValueError("cells: expected at least one cell, got an empty sequence")
        for depth, (lower, upper) in enumerate(zip(cells, cells[1:])):
            wanted = getattr(upper, "input_size", None)
            if wanted is not None and wanted != lower.output_size:
                raise ValueError(
                    f"cells: layer {depth + 1} expects inputs of size {wanted}, but layer "
                    f"{depth} outputs size {lower.output_size}; sizes must chain"
                )
        set_fields(self, cells=cells)

    input_size = property(lambda self: getattr(self.cells[0], "input_size", None))
    output_size = property(lambda self: self.cells[-1].output_size)
    state_size = property(lambda self: tuple(c.state_size for c in self.cells))

    def zero_state(self, batch_size, dtype=jnp.float32):
        return tuple(c.zero_state(batch_size, dtype) for c in self.cells)

    def begin_sequence(self, key):
        keys = jax.random.split(key, len(self.cells))
        return build(MultiRNNCell, cells=tuple(map(begin_sequence, self.cells, keys)))

    def layer_keys(self, key):
        """The step keys of the layers, from the stack's step ``key``."""
        return jax.random.split(key, len(self.cells))

    def __call__(self, inputs, state, *, key=None):
        keys = [None] * len(self.cells) if key is None else self.layer_keys(key)
        new_states = []
        for cell, layer_state, layer_key in zip(self.cells, state, keys):
            inputs, layer_state = call_cell(cell, inputs, layer_state, layer_key)
            new_states.append(layer_state)
        return inputs, tuple(new_states)


def _forward_sizes(cls):
    """Wrappers keep their inner cell's sizes and zero state unless they override them."""
    for name in ("input_size", "output_size", "state_size"):
        if name not in cls.__dict__:
            setattr(cls, name, property(lambda self, n=name: getattr(self.cell, n, None)))
    if "zero_state" not in cls.__dict__:
        cls.zero_state = lambda self, batch_size, dtype=jnp.float32: self.cell.zero_state(
            batch_size, dtype
        )
    if "begin_sequence" not in cls.__dict__:
        cls.begin_sequence = lambda self, key: replace(self, cell=begin_sequence(self.cell, key))
    return cls


@_forward_sizes
@pytree_dataclass
class OutputProjectionWrapper:
    """Adds a linear projection of the cell's output: ``y = out w + b``, ``w [H, output_size]``."""

    cell: object
    w: jax.Array
    b: jax.Array

    def __init__(self, cell, output_size, *, key):
        output_size = check_size("output_size", output_size)
        w = _glorot(key, (cell.output_size, output_size), jnp.float32)
        set_fields(self, cell=cell, w=w, b=jnp.zeros((output_size,), jnp.float32))

    output_size = property(lambda self: self.w.shape[1])

    def __call__(self, inputs, state, *, key=None):
        output, state = call_cell(self.cell, inputs, state, key)
        return output @ self.w + self.b, state


@_forward_sizes
@pytree_dataclass
class ResidualWrapper:
    """Adds the cell's input to its output: ``y = x + cell(x)``; sizes must match."""

    cell: object

    def __init__(self, cell):
        size_in, size_out = getattr(cell, "input_size", None), cell.output_size
        if size_in is not None and size_in != size_out:
            raise ValueError(
                f"cell: ResidualWrapper needs input_size == output_size, got {size_in} != {size_out}"
            )
        set_fields(self, cell=cell)

    def __call__(self, inputs, state, *, key=None):
        output, state = call_cell(self.cell, inputs, state, key)
        return inputs + output, state


@_forward_sizes
@pytree_dataclass
class DropoutWrapper:
    """Dropout on a cell's inputs, outputs and new state (inverted: kept units scale by 1/p).

    Dropout acts only when the unroll call gets a PRNG ``key``; without one the wrapper is the
    identity. ``variational_recurrent=True`` uses the same masks at every time step (Gal and
    Ghahramani); otherwise each step draws new masks. As in TF1, an LSTM's ``c`` is never dropped.
    """

    cell: object
    sequence_key: object  # set by begin_sequence for variational masks, else None
    input_keep_prob: float = static_field()
    output_keep_prob: float = static_field()
    state_keep_prob: float = static_field()
    variational_recurrent: bool = static_field()

    def __init__(self, cell, *, input_keep_prob=1.0, output_keep_prob=1.0, state_keep_prob=1.0,
                 variational_recurrent=False):
        probs = dict(input_keep_prob=input_keep_prob, output_keep_prob=output_keep_prob,
                     state_keep_prob=state_keep_prob)
        set_fields(self, cell=cell, sequence_key=None,
                   variational_recurrent=bool(variational_recurrent),
                   **{name: check_keep_prob(name, p) for name, p in probs.items()})

    def begin_sequence(self, key):
        inner_key, own_key = jax.random.split(key)
        cell = begin_sequence(self.cell, inner_key)
        return replace(self, cell=cell, sequence_key=own_key if self.variational_recurrent else None)

    def step_keys(self, key):
        """``(k_in, k_out, k_state, k_cell)``: the keys of a step's masks (drawn from the sequence
        key for variational masks, else from the step's ``key``) and of the inner cell's step."""
        mask_key = self.sequence_key if self.sequence_key is not None else key
        k_in, k_out, k_state, k_cell = jax.random.split(mask_key, 4)
        if self.sequence_key is not None:
            k_cell = key  # the inner cell still gets a fresh key at every step
        return k_in, k_out, k_state, k_cell

    def __call__(self, inputs, state, *, key=None):
        if key is None:
            return self.cell(inputs, state)
        k_in, k_out, k_state, k_cell = self.step_keys(key)
        inputs = _dropout(k_in, inputs, self.input_keep_prob)
        output, new_state = call_cell(self.cell, inputs, state, k_cell)
        output = _dropout(k_out, output, self.output_keep_prob)
        return output, _drop_state(k_state, new_state, self.state_keep_prob)


def sequence_dropout(cell, key, num_steps):
    """The input and output dropout of the ``DropoutWrapper``s in ``cell``, for whole sequences.

    ``cell`` is one layer or a ``MultiRNNCell`` of layers, either possibly wrapped (as
    ``rnnkit.loops.layers`` reads it); its wrappers must drop no state. The masks are those that
    the step-by-step unroll draws (``begin_sequence(key)``, then per step ``fold_in(key, t)`` and
    the splits of ``MultiRNNCell.layer_keys`` and ``DropoutWrapper.step_keys``), so both compute
    the same numbers.
    Returns:
      per layer, ``(drop_inputs, drop_outputs)``: functions ``[T, B, N] -> [T, B, N]``.
    """
    step_keys = jax.vmap(lambda t: jax.random.fold_in(key, t))(jnp.arange(num_steps))  # [T]
    layers = _sequence_masks(begin_sequence(cell, key), step_keys, top=True)
    return [(_masker(before), _masker(after)) for before, after in layers]


def _sequence_masks(cell, step_keys, top):
    """Per layer, the ``(keys [T], keep_prob)`` of its input masks and of its output masks, in
    the order they act: an outer wrapper's input mask first, its output mask last."""
    if isinstance(cell, DropoutWrapper):
        k_in, k_out, _, k_cell = jax.vmap(cell.step_keys)(step_keys)
        layers = _sequence_masks(cell.cell, k_cell, top)
        layers[0] = ([(k_in, cell.input_keep_prob)] + layers[0][0], layers[0][1])
        layers[-1] = (layers[-1][0], layers[-1][1] + [(k_out, cell.output_keep_prob)])
        return layers
    if top and isinstance(cell, MultiRNNCell):
        keys = jax.vmap(cell.layer_keys)(step_keys)  # [T, L]
        return [layer for depth, inner in enumerate(cell.cells)
                for layer in _sequence_masks(inner, keys[:, depth], top=False)]
    return [([], [])]


def _masker(masks):
    def drop(xs):  # [T, B, N]
        for keys, keep_prob in masks:
            if keep_prob < 1.0:
                xs = jax.vmap(functools.partial(_dropout, keep_prob=keep_prob))(keys, xs)
        return xs
    return drop


def _dropout(key, x, keep_prob):
    if keep_prob >= 1.0:
        return x
    keep = jax.random.bernoulli(key, keep_prob, x.shape)
    return jnp.where(keep, x / keep_prob, jnp.zeros_like(x))


def _drop_state(key, state, keep_prob):
    """Dropout on every state array except an LSTM's cell state ``c`` (TF1's default filter)."""
    if keep_prob >= 1.0:
        return state
    parts, treedef = jax.tree.flatten(state, is_leaf=lambda s: isinstance(s, LSTMStateTuple))
    keys = jax.random.split(key, len(parts))

    def drop(k, part):
        if isinstance(part, LSTMStateTuple):
            return LSTMStateTuple(part.c, _dropout(k, part.h, keep_prob))
        return _dropout(k, part, keep_prob)

    return jax.tree.unflatten(treedef, [drop(k, part) for k, part in zip(keys, parts)])
