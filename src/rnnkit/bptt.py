"""Explicit backpropagation through time (``jax.custom_vjp``) for the built-in cells.

Autodiff of ``lax.scan`` keeps every weight gradient inside the backward loop. Here the backward
loop carries only the sequential dependency, ``d_state[t-1] = f(d_state[t])``; everything else is
computed once, after the loop, as large matmuls over all ``T * B`` rows::

    forward:   state[t] = step(x[t] w_x + b, state[t-1])   # saves the gate activations
    backward:  d_xp[t], d_state[t-1] = step_vjp(saved[t], d_state[t] + d_out[t])
    after:     d_w_h = prev_h[T*B, H].T @ d_xp[T*B, G*H]     # one matmul, not T
               d_w_x = x[T*B, I].T @ d_xp[T*B, G*H];  d_x = d_xp @ w_x.T

Masks (``sequence_length``) are applied exactly as in ``unroll.py``.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnkit.activations import ACTIVATIONS, activation_name
from rnnkit.cells import LSTMStateTuple, builtin_kind, gate_blocks
from rnnkit.masks import select, zero_where_invalid

# d act / dz written with the activation's output h, for the activations that allow it.
_DERIVATIVE_FROM_OUTPUT = {
    "tanh": lambda h: 1.0 - h * h,
    "relu": lambda h: (h > 0).astype(h.dtype),
    "sigmoid": lambda h: h * (1.0 - h),
    "identity": jnp.ones_like,
    "elu": lambda h: jnp.where(h > 0, 1.0, h + 1.0),
}


class _Spec(NamedTuple):
    """The static description of a built-in cell (hashable: it keys the compiled function)."""

    kind: str  # "basic", "lstm", "gru"
    option: object  # activation name, (forget_bias, peepholes), or reset_after


def supports(cell):
    """Whether ``cell`` is a built-in cell (``cells.builtin_kind``) whose step this module's
    backward pass knows: every LSTM and GRU, and a basic cell whose activation's derivative can
    be written with its output (tanh, relu, sigmoid, identity, elu)."""
    kind = builtin_kind(cell)
    if kind == "basic":
        return activation_name(cell.activation) in _DERIVATIVE_FROM_OUTPUT
    return kind is not None


def explicit_rnn(cell, xs, state0, valid, *, unroll=1):
    """Run ``cell`` over ``xs`` with the explicit backward pass.

    Args:
      cell: a cell for which ``supports(cell)``; xs: time-major inputs ``[T, B, I]``, already
        zero where not valid.
      state0: the initial state; valid: bool ``[T, B]`` (False past each length) or None.
      unroll: time steps per iteration of the compiled loops (``lax.scan``'s ``unroll``).
    Returns:
      ``(outputs [T, B, H], final_state)``, zero outputs and a copied state where not valid.
    """
    kind = builtin_kind(cell)
    if kind == "basic":
        spec, params = _Spec("basic", activation_name(cell.activation)), (cell.w_h,)
    elif kind == "lstm":
        spec = _Spec("lstm", (cell.forget_bias, cell.use_peepholes))
        params = (cell.w_h, cell.peepholes)
    else:
        spec, params = _Spec("gru", cell.reset_after), (cell.w_h, cell.b_h)
    return _recurrence(spec, unroll, (cell.w_x, cell.b), params, xs, state0, valid)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _recurrence(spec, unroll, projection, params, xs, state0, valid):
    final, outputs = _forward(spec, unroll, projection, params, xs, state0, valid, save=False)
    return outputs, final


def _forward(spec, unroll, projection, params, xs, state0, valid, save):
    """The time loop; with ``save`` it returns the states and gate activations of every step
    (the outputs are then the states' ``h``, zeroed past the lengths: no separate copy).

    The input projection ``x_t w_x + b`` runs inside the loop, step by step, rather than for
    all steps before it (``docs/design.md#the-input-projection-inside-the-loop``)."""
    step = _STEPS[spec.kind]
    w_x, b = projection
    gates = _GATES[spec.kind]

    def body(prev, inputs):
        x_t, valid_t = inputs
        new, saved = step(spec, params, gate_blocks(x_t @ w_x + b, gates), prev)
        h = _hidden(spec, new)
        if valid_t is not None:
            new = select(valid_t, new, prev)
            h = jnp.where(valid_t[:, None], h, jnp.zeros_like(h))
        return new, ((new, saved) if save else h)

    return jax.lax.scan(body, state0, (xs, valid), unroll=unroll)


def _hidden(spec, state):
    return state.h if spec.kind == "lstm" else state


def _recurrence_fwd(spec, unroll, projection, params, xs, state0, valid):
    final, (states, saved) = _forward(spec, unroll, projection, params, xs, state0, valid,
                                      save=True)
    outputs = _hidden(spec, states)  # [T, B, H]
    if valid is not None:
        outputs = jnp.where(valid[..., None], outputs, jnp.zeros_like(outputs))
    return (outputs, final), (projection, params, xs, state0, states, saved, valid)


def _recurrence_bwd(spec, unroll, residuals, cotangents):
    projection, params, xs, state0, states, saved, valid = residuals
    d_outputs, d_final = cotangents
    prevs = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s[:-1]]), state0, states)
    step_vjp = _STEP_VJPS[spec.kind]

    def body(d_state, inputs):
        d_out_t, prev_t, saved_t, new_t, valid_t = inputs
        d_new = _add_to_h(spec, d_state, d_out_t)
        if valid_t is not None:
            d_pass = select(valid_t, jax.tree.map(jnp.zeros_like, d_state), d_state)
            d_new = zero_where_invalid(valid_t, d_new)
        d_prev, d_xp_t, extra_t = step_vjp(spec, params, saved_t, prev_t, new_t, d_new)
        if valid_t is not None:
            d_prev = jax.tree.map(jnp.add, d_prev, d_pass)
        return d_prev, (d_xp_t, extra_t)

    scanned = (d_outputs, prevs, saved, states, valid)
    d_state0, (d_xp, extra) = jax.lax.scan(body, d_final, scanned, reverse=True, unroll=unroll)
    d_projection, d_params = _weight_grads(spec, params, xs, prevs, states, saved, d_xp, extra)
    return d_projection, d_params, _input_grad(projection, d_xp), d_state0, None


def _weight_grads(spec, params, xs, prevs, states, saved, d_xp, extra):
    """``(d_projection, d_params)`` from the gate gradients of every step, after the loop:
    ``x w_x`` and ``h w_h`` get one matmul each over all ``T * B`` rows."""
    d_params = _PARAM_GRADS[spec.kind](spec, params, prevs, states, saved, d_xp, extra)
    return _projection_grads(xs, d_xp), d_params


def _projection_grads(xs, d_xp):
    """Gradients of ``w_x [I, G*H]`` and ``b [G*H]``: one matmul over all ``T*B`` rows."""
    return _weight_grad(xs, d_xp), jnp.sum(d_xp, axis=(0, 1))


def _input_grad(projection, d_xp):
    """Gradient of the inputs ``[T, B, I]``: ``d_xp w_x.T``, one matmul after the loop."""
    w_x, _ = projection
    return (_rows(d_xp) @ w_x.T).reshape(d_xp.shape[:-1] + (w_x.shape[0],))


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def _add_to_h(spec, d_state, d_h):
    if spec.kind == "lstm":
        return LSTMStateTuple(d_state.c, d_state.h + d_h)
    return d_state + d_h


def _rows(x):
    """``[T, B, N] -> [T*B, N]``: time becomes part of the batch for the weight gradients."""
    return x.reshape(-1, x.shape[-1])


def _join(blocks):
    """Gate blocks ``G x [B, H] -> [B, G*H]`` by a ``concatenate``, a copy kernel of its own
    (``docs/design.md#joining-gate-blocks``)."""
    return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=-1)


def _sigmoid_grad(s):
    return s * (1.0 - s)


# Basic RNN: h = act(xp + h_prev w_h). Nothing saved beyond the states.

def _basic_step(spec, params, xp_t, prev):
    (w_h,) = params
    return ACTIVATIONS[spec.option](xp_t[0] + prev @ w_h), None


def _basic_vjp(spec, params, saved_t, prev_t, new_t, d_h):
    (w_h,) = params
    d_z = d_h * _DERIVATIVE_FROM_OUTPUT[spec.option](new_t)  # [B, H]
    return d_z @ w_h.T, d_z, None


def _weight_grad(prevs, d_xp):
    """``sum_t prevs[t].T @ d_xp[t]``, one matmul over all ``T*B`` rows."""
    return _rows(prevs).T @ _rows(d_xp)


def _basic_grads(spec, params, prevs, states, saved, d_xp, extra):
    return (_weight_grad(prevs, d_xp),)


# LSTM: saves the activated gates (i, f, g, o).

def _lstm_step(spec, params, xp_t, prev):
    w_h, peepholes = params
    forget_bias, _ = spec.option
    h_i, h_f, h_g, h_o = gate_blocks(prev.h @ w_h, 4)
    z_i, z_f, z_g, z_o = xp_t[0] + h_i, xp_t[1] + h_f + forget_bias, xp_t[2] + h_g, xp_t[3] + h_o
    if peepholes is not None:
        z_i, z_f = z_i + peepholes[0] * prev.c, z_f + peepholes[1] * prev.c
    i, f, g = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f), jnp.tanh(z_g)
    c = f * prev.c + i * g
    if peepholes is not None:
        z_o = z_o + peepholes[2] * c
    o = jax.nn.sigmoid(z_o)
    return LSTMStateTuple(c, o * jnp.tanh(c)), (i, f, g, o)


def _lstm_vjp(spec, params, gates, prev_t, new_t, d_new):
    w_h, peepholes = params
    i, f, g, o = gates
    tanh_c = jnp.tanh(new_t.c)
    d_zo = d_new.h * tanh_c * _sigmoid_grad(o)
    d_c = d_new.c + d_new.h * o * (1.0 - tanh_c * tanh_c)
    if peepholes is not None:
        d_c = d_c + d_zo * peepholes[2]
    d_zi = d_c * g * _sigmoid_grad(i)
    d_zf = d_c * prev_t.c * _sigmoid_grad(f)
    d_zg = d_c * i * (1.0 - g * g)
    d_c_prev = d_c * f
    if peepholes is not None:
        d_c_prev = d_c_prev + d_zi * peepholes[0] + d_zf * peepholes[1]
    d_z = _join([d_zi, d_zf, d_zg, d_zo])  # [B, 4H]
    return LSTMStateTuple(d_c_prev, d_z @ w_h.T), d_z, None


def _lstm_grads(spec, params, prevs, states, gates, d_xp, extra):
    w_h, peepholes = params
    d_w_h = _weight_grad(prevs.h, d_xp)
    if peepholes is None:
        return d_w_h, None
    d_zi, d_zf, _, d_zo = gate_blocks(d_xp, 4)
    sums = (d_zi * prevs.c, d_zf * prevs.c, d_zo * states.c)
    return d_w_h, tuple(jnp.sum(s, axis=(0, 1)) for s in sums)


# GRU: saves (r, z, n) and, with reset_after, the recurrent candidate term h w_hn + b_hn.

def _gru_step(spec, params, xp_t, prev):
    w_h, b_h = params
    units = prev.shape[-1]
    x_r, x_z, x_n = xp_t
    if spec.option:  # reset_after
        h_r, h_z, h_n = gate_blocks(prev @ w_h + b_h, 3)
        r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        saved = (r, z, n, h_n)
    else:
        h_r, h_z = gate_blocks(prev @ w_h[:, : 2 * units], 2)
        r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + (r * prev) @ w_h[:, 2 * units :])
        saved = (r, z, n)
    return (1.0 - z) * n + z * prev, saved


def _gru_vjp(spec, params, saved_t, prev_t, new_t, d_h):
    w_h, _ = params
    units = prev_t.shape[-1]
    r, z, n = saved_t[:3]
    d_zz = d_h * (prev_t - n) * _sigmoid_grad(z)
    d_zn = d_h * (1.0 - z) * (1.0 - n * n)
    if spec.option:  # reset_after
        d_zr = d_zn * saved_t[3] * _sigmoid_grad(r)
        d_hh = _join([d_zr, d_zz, d_zn * r])  # grad of h w_h + b_h
        return d_h * z + d_hh @ w_h.T, _join([d_zr, d_zz, d_zn]), d_zn * r
    d_rh = d_zn @ w_h[:, 2 * units :].T  # grad of r * h_prev
    d_zr = d_rh * prev_t * _sigmoid_grad(r)
    d_prev = d_h * z + d_rh * r + _join([d_zr, d_zz]) @ w_h[:, : 2 * units].T
    return d_prev, _join([d_zr, d_zz, d_zn]), None


def _gru_grads(spec, params, prevs, states, saved, d_xp, d_hn):
    units = prevs.shape[-1]
    if spec.option:  # reset_after: the gradient of h w_h + b_h is (d_zr, d_zz, d_hn)
        d_hh = jnp.concatenate([d_xp[..., : 2 * units], d_hn], axis=-1)
        return _weight_grad(prevs, d_hh), jnp.sum(d_hh, axis=(0, 1))
    d_w_rz = _weight_grad(prevs, d_xp[..., : 2 * units])
    d_w_n = _weight_grad(saved[0] * prevs, d_xp[..., 2 * units :])
    return jnp.concatenate([d_w_rz, d_w_n], axis=-1), None


_GATES = {"basic": 1, "lstm": 4, "gru": 3}
_STEPS = {"basic": _basic_step, "lstm": _lstm_step, "gru": _gru_step}
_STEP_VJPS = {"basic": _basic_vjp, "lstm": _lstm_vjp, "gru": _gru_vjp}
_PARAM_GRADS = {"basic": _basic_grads, "lstm": _lstm_grads, "gru": _gru_grads}
