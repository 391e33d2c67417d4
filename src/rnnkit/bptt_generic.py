"""Explicit backpropagation through time for any split cell, built on the cell's own step.

A split cell has ``input_projection(x [..., I]) -> [..., P]`` and
``recurrent_step(xp [B, P], state) -> (output, new_state)``. Its backward pass is ``jax.vjp`` of
the step, taken in two parts so that the loop carries only the sequential dependency::

    forward:   output[t], state[t] = step(xp[t], state[t-1])            # saves every state[t]
    backward:  d_xp[t], d_state[t-1] = vjp(step, weights fixed)(d_output[t], d_state[t])
    after:     d_weights = vjp(step, xp and prev fixed)(d_output, d_state)  # T*B rows at once

The last line calls the step once on all ``T * B`` rows (time folded into the batch), so each
weight gradient is one large matmul instead of ``T`` small ones, summed inside the loop. Masks
(``valid``) act as in ``bptt.explicit_rnn``: zero output and a copied state where not valid.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnkit.masks import select, zero_where_invalid


class _Layout(NamedTuple):
    """How to rebuild the cell from its leaves (kind per leaf: "diff", "const" or "static")."""

    treedef: object
    kinds: tuple
    statics: tuple  # the non-array leaves, in order


def generic_recurrence(cell, xp, state0, valid, *, unroll=1):
    """Run ``cell.recurrent_step`` over projected inputs, with the explicit backward pass.

    Only the cell's floating-point array leaves get gradients; integer and boolean arrays and
    non-array leaves are constants. The step must accept any batch size (it also runs on
    ``T * B`` rows), and at steps that are not valid it must give finite values.

    Args:
      cell: a split cell (``rnnkit.protocols.SplitCell``); xp: ``cell.input_projection(x)``, ``[T, B, P]``.
      state0: the initial state; valid: bool ``[T, B]`` (False past each length) or None.
      unroll: time steps per iteration of the compiled loops (``lax.scan``'s ``unroll``).
    Returns:
      ``(outputs [T, B, O], final_state)``, zero outputs and a copied state where not valid.
    """
    leaves, treedef = jax.tree.flatten(cell)
    kinds = tuple(_kind(leaf) for leaf in leaves)
    layout = _Layout(treedef, kinds, tuple(x for x, k in zip(leaves, kinds) if k == "static"))
    diff = [x for x, k in zip(leaves, kinds) if k == "diff"]
    consts = [x for x, k in zip(leaves, kinds) if k == "const"]
    return _recurrence(layout, unroll, diff, consts, xp, state0, valid)


def _kind(leaf):
    if not isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
        return "static"
    return "diff" if jnp.issubdtype(leaf.dtype, jnp.inexact) else "const"


def _rebuild(layout, diff, consts):
    pools = {"diff": iter(diff), "const": iter(consts), "static": iter(layout.statics)}
    return jax.tree.unflatten(layout.treedef, [next(pools[k]) for k in layout.kinds])


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _recurrence(layout, unroll, diff, consts, xp, state0, valid):
    final, outputs = _forward(layout, unroll, diff, consts, xp, state0, valid, save=False)
    return outputs, final


def _forward(layout, unroll, diff, consts, xp, state0, valid, save):
    cell = _rebuild(layout, diff, consts)

    def body(prev, inputs):
        xp_t, valid_t = inputs
        output, new = cell.recurrent_step(xp_t, prev)
        if valid_t is not None:
            output, new = zero_where_invalid(valid_t, output), select(valid_t, new, prev)
        return new, ((output, new) if save else output)

    return jax.lax.scan(body, state0, (xp, valid), unroll=unroll)


def _recurrence_fwd(layout, unroll, diff, consts, xp, state0, valid):
    final, (outputs, states) = _forward(layout, unroll, diff, consts, xp, state0, valid, save=True)
    return (outputs, final), (diff, consts, xp, state0, states, valid)


def _recurrence_bwd(layout, unroll, residuals, cotangents):
    diff, consts, xp, state0, states, valid = residuals
    d_outputs, d_final = cotangents
    cell = _rebuild(layout, diff, consts)  # the weights are constants of the loop body
    prevs = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s[:-1]]), state0, states)

    def body(d_state, inputs):
        xp_t, prev_t, d_out_t, valid_t = inputs
        d_new = d_state
        if valid_t is not None:  # an invalid step passes d_state through and sees no cotangent
            zeros = jax.tree.map(jnp.zeros_like, d_state)
            d_pass, d_new = select(valid_t, zeros, d_state), select(valid_t, d_state, zeros)
            d_out_t = zero_where_invalid(valid_t, d_out_t)
        _, step_vjp = jax.vjp(cell.recurrent_step, xp_t, prev_t)
        d_xp_t, d_prev = step_vjp((d_out_t, d_new))
        if valid_t is not None:
            d_prev = jax.tree.map(jnp.add, d_prev, d_pass)
        return d_prev, (d_xp_t, (d_out_t, d_new))

    scanned = (xp, prevs, d_outputs, valid)
    d_state0, (d_xp, d_steps) = jax.lax.scan(body, d_final, scanned, reverse=True, unroll=unroll)
    d_diff = _weight_grads(layout, diff, consts, xp, prevs, d_steps)
    return d_diff, None, d_xp, d_state0, None


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def _weight_grads(layout, diff, consts, xp, prevs, d_steps):
    """One vjp of the step over all ``T * B`` rows: the per-step weight gradients, summed."""
    rows = functools.partial(jax.tree.map, lambda x: x.reshape((-1,) + x.shape[2:]))
    xp_rows, prev_rows = rows(xp), rows(prevs)  # [T*B, P], state leaves [T*B, ...]

    def step(diff):
        return _rebuild(layout, diff, consts).recurrent_step(xp_rows, prev_rows)

    _, weights_vjp = jax.vjp(step, diff)
    (d_diff,) = weights_vjp(rows(d_steps))
    return d_diff
