"""Gradient flow through time: the gradient of a loss with respect to each step's state.

What ``state_gradients`` computes, for ``s_t`` the state that step ``t`` hands to step
``t + 1`` (the final state at ``t = T``)::

    outputs, final = dynamic_rnn(cell, inputs)           # with s_t -> s_t + e_t inside
    L = loss(outputs, final)
    dL/ds_t = dL/de_t at e = 0                           # t = 1..T, every leaf of the state

The perturbations ``e_t`` travel as extra input features of a wrapping cell, so the unroll is
``dynamic_rnn``'s own (with its ``sequence_length`` rules) and one reverse pass gives every
step's gradient. A vanishing gradient shows as ``||dL/ds_t||`` falling fast as ``t`` goes back
from ``T`` to 1: the loss can then barely change what the state holds early in the sequence.
See ``docs/gradients.md``.
"""

import itertools
import math

import jax
import jax.numpy as jnp

from rnnkit.checks import as_numeric_array, check_cell, compute_dtype
from rnnkit.model import scores
from rnnkit.pytree import pytree_dataclass, set_fields, static_field
from rnnkit.unroll import dynamic_rnn


@pytree_dataclass
class _Probe:
    """``cell`` reading inputs ``[x_t, e_t]``: it runs on ``x_t`` and adds ``e_t`` (the
    state's leaves, flattened side by side) to the state it returns."""

    cell: object
    n_inputs: int = static_field()
    treedef: object = static_field()
    shapes: tuple = static_field()  # each leaf's shape after the batch axis

    def __init__(self, cell, n_inputs, treedef, shapes):
        set_fields(self, cell=cell, n_inputs=n_inputs, treedef=treedef, shapes=shapes)

    input_size = property(lambda self: self.n_inputs + sum(map(math.prod, self.shapes)))
    output_size = property(lambda self: self.cell.output_size)
    state_size = property(lambda self: self.cell.state_size)

    def zero_state(self, batch_size, dtype=jnp.float32):
        return self.cell.zero_state(batch_size, dtype)

    def __call__(self, inputs, state):
        output, new_state = self.cell(inputs[:, :self.n_inputs], state)
        return output, jax.tree.map(jnp.add, new_state,
                                    unflatten(self.treedef, self.shapes, inputs[:, self.n_inputs:]))


def unflatten(treedef, shapes, flat):
    """``flat [..., S]`` -> the state's leaves ``[..., *shape]`` in ``treedef``'s structure."""
    offsets = [0, *itertools.accumulate(map(math.prod, shapes))]
    leaves = [flat[..., a:b].reshape(*flat.shape[:-1], *shape)
              for a, b, shape in zip(offsets, offsets[1:], shapes)]
    return jax.tree.unflatten(treedef, leaves)


def state_gradients(cell, loss, inputs, *, sequence_length=None, initial_state=None):
    """``dL/ds_t`` for t = 1..T: the gradient of ``loss`` with respect to the state each step
    hands to the next (and, at ``T``, to ``loss`` as the final state).

    The state's path into the outputs is not perturbed: for a loss on the final state (a
    classifier) this is the whole ``dL/ds_t``; a loss on the outputs reaches ``s_t`` here only
    through the steps after ``t``. Past a sequence's length the state is copied, not made, so
    those steps' gradients are zero (the final state's belongs to step ``length``).

    Args:
      cell: any cell (``rnnkit.protocols.Cell``); loss: ``loss(outputs [B, T, O],
        final_state) -> scalar``; inputs: ``[B, T, I]``.
      sequence_length, initial_state: as in ``dynamic_rnn``.
    Returns:
      The state's structure (an array ``[T, B, H]``, an ``LSTMStateTuple`` of them, a tuple per
      layer of a ``MultiRNNCell``), in the weights' dtype.
    """
    check_cell(cell)
    inputs = as_numeric_array(inputs, "inputs")
    if inputs.ndim != 3:
        raise ValueError(f"inputs: expected a rank-3 array [B, T, I], got shape {inputs.shape}")
    dtype = compute_dtype(cell, inputs)
    inputs = jnp.asarray(inputs, dtype)
    batch, steps = inputs.shape[:2]
    template = cell.zero_state(batch, dtype) if initial_state is None else initial_state
    leaves, treedef = jax.tree.flatten(template)
    shapes = tuple(tuple(leaf.shape[1:]) for leaf in leaves)
    probe = _Probe(cell, inputs.shape[-1], treedef, shapes)

    def perturbed(e):  # e [B, T, S]: zeros, the point the gradient is taken at
        outputs, final = dynamic_rnn(probe, jnp.concatenate([inputs, e], axis=-1),
                                     sequence_length=sequence_length,
                                     initial_state=initial_state)
        return loss(outputs, final)

    size = sum(map(math.prod, shapes))
    flat = jax.grad(perturbed)(jnp.zeros((batch, steps, size), dtype))  # [B, T, S]
    return unflatten(treedef, shapes, jnp.swapaxes(flat, 0, 1))  # leaves [T, B, ...]


def norms(gradients):
    """Per step, the norm over the batch and the units: each leaf ``[T, B, ...]`` -> ``[T]``."""
    return jax.tree.map(lambda g: jnp.sqrt(jnp.sum(jnp.square(g).reshape(g.shape[0], -1),
                                                   axis=1)), gradients)


def state_gradient_norms(cell, loss, inputs, *, sequence_length=None, initial_state=None):
    """``||dL/ds_t||``, t = 1..T, of ``state_gradients``: its structure, leaves ``[T]``."""
    return norms(state_gradients(cell, loss, inputs, sequence_length=sequence_length,
                                 initial_state=initial_state))


@jax.jit
def classifier_gradient_norms(model, inputs, labels):
    """``state_gradient_norms`` of a ``rnnkit.model.SequenceClassifier``'s cell for its mean
    cross-entropy on ``inputs [B, T, I]`` (or images ``[B, T*I]``) and ``labels [B]``."""
    inputs = inputs.reshape(inputs.shape[0], -1, model.cell.input_size)

    def loss(outputs, final):
        return jnp.mean(scores(model.readout(final), labels)[0])

    return state_gradient_norms(model.cell, loss, inputs)
