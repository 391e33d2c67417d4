"""The explicit BPTT's variants that ``ab_variants.py`` times against the library's own.

Each replaces one function of ``rnnkit.bptt`` (or ``rnnkit.parallel``, ``rnnkit.unroll``) while a
train step is traced, through ``patched``; ``tests/test_benchmark_variants.py`` checks that the
ones that claim to compute the library's gradients do.
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import rnnkit.bptt as bptt
import rnnkit.parallel as parallel
from rnnkit.activations import ACTIVATIONS
from rnnkit.cells import LSTMStateTuple, gate_blocks


GATES = {"basic": 1, "lstm": 4, "gru": 3}


def padded_sum_join(blocks):
    """Each block zero-padded to ``[B, G*H]``, then summed."""
    if len(blocks) == 1:
        return blocks[0]
    units, count = blocks[0].shape[-1], len(blocks)
    padded = [jnp.pad(b, [(0, 0)] * (b.ndim - 1) + [(k * units, (count - 1 - k) * units)])
              for k, b in enumerate(blocks)]
    return functools.reduce(jnp.add, padded)


def forward(hoist):
    """``bptt._forward`` (full sequences only) whose steps take the whole ``[B, G*H]``
    projection; with ``hoist``, projected for all steps before the loop."""
    def run(spec, unroll, projection, params, xs, state0, valid, save):
        assert valid is None, "full sequences only"
        w_x, b = projection
        step = bptt._STEPS[spec.kind]
        inputs = xs @ w_x + b if hoist else xs  # [T, B, G*H] or [T, B, I]

        def body(prev, x_t):
            new, saved = step(spec, params, x_t if hoist else x_t @ w_x + b, prev)
            return new, ((new, saved) if save else bptt._hidden(spec, new))

        return jax.lax.scan(body, state0, inputs, unroll=unroll)
    return run


def joint_forward(spec, unroll, projection, params, xs, state0, valid, save):
    """``bptt._forward`` (BasicRNN, LSTM without peepholes; full sequences) with one matmul a
    step: ``[x_t, h_prev] @ [w_x; w_h] + b``."""
    assert valid is None and (spec.kind == "basic" or params[1] is None), "see docstring"
    w_x, b = projection
    w_xh = jnp.concatenate([w_x, params[0]])  # [I + H, G*H]

    def body(prev, x_t):
        z = jnp.concatenate([x_t, bptt._hidden(spec, prev)], axis=-1) @ w_xh + b
        if spec.kind == "basic":
            new, saved = ACTIVATIONS[spec.option](z), None
        else:
            z_i, z_f, z_g, z_o = gate_blocks(z, 4)
            i, f = jax.nn.sigmoid(z_i), jax.nn.sigmoid(z_f + spec.option[0])
            g, o = jnp.tanh(z_g), jax.nn.sigmoid(z_o)
            c = f * prev.c + i * g
            new, saved = LSTMStateTuple(c, o * jnp.tanh(c)), (i, f, g, o)
        return new, ((new, saved) if save else bptt._hidden(spec, new))

    return jax.lax.scan(body, state0, xs, unroll=unroll)


def whole_projection_steps():
    """The current steps, taking the whole projection and splitting it into gate blocks."""
    return {kind: functools.partial(_split_then, step, GATES[kind])
            for kind, step in bptt._STEPS.items()}


def _split_then(step, count, spec, params, xp_t, prev):
    return step(spec, params, gate_blocks(xp_t, count), prev)


def one_tanh_lstm_step(spec, params, xp_t, prev):
    w_h, _ = params  # no peepholes
    forget_bias, _ = spec.option
    z = xp_t + prev.h @ w_h  # [B, 4H]
    units = z.shape[-1] // 4
    scale = np.repeat(np.array([0.5, 0.5, 1.0, 0.5], z.dtype), units)
    bias = np.repeat(np.array([0.0, forget_bias, 0.0, 0.0], z.dtype), units)
    gates = scale * jnp.tanh(scale * (z + bias)) + (1.0 - scale)  # i, f, g, o in one kernel
    i, f, g, o = gate_blocks(gates, 4)
    c = f * prev.c + i * g
    return LSTMStateTuple(c, o * jnp.tanh(c)), gates


def one_tanh_lstm_vjp(spec, params, gates, prev_t, new_t, d_new):
    return bptt._lstm_vjp(spec, params, gate_blocks(gates, 4), prev_t, new_t, d_new)


def halves_fused_rnn(cell, xs, state0, valid, *, unroll=1):
    """``bptt.fused_rnn`` run separately on the two halves of the batch (two independent loops
    that XLA may run on the two cores at once), then joined."""
    half = xs.shape[1] // 2
    runs = [bptt.fused_rnn(cell, xs[:, part], jax.tree.map(lambda s: s[part], state0),
                           None if valid is None else valid[:, part], unroll=unroll)
            for part in (slice(0, half), slice(half, None))]
    (out_a, final_a), (out_b, final_b) = runs
    final = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), final_a, final_b)
    return jnp.concatenate([out_a, out_b], axis=1), final


def _previous_states_fwd(spec, unroll, projection, params, xs, state0, valid):
    """``bptt._recurrence_fwd`` saving each step's previous state instead of its new one."""
    step, (w_x, b) = bptt._STEPS[spec.kind], projection

    def body(prev, inputs):
        x_t, valid_t = inputs
        new, saved = step(spec, params, gate_blocks(x_t @ w_x + b, GATES[spec.kind]), prev)
        if valid_t is not None:
            new = bptt.select(valid_t, new, prev)
        return new, (prev, saved)

    final, (prevs, saved) = jax.lax.scan(body, state0, (xs, valid), unroll=unroll)
    outputs = bptt._hidden(spec, _shift_in(prevs, final))  # only when the caller reads them
    if valid is not None:
        outputs = jnp.where(valid[..., None], outputs, jnp.zeros_like(outputs))
    return (outputs, final), (projection, params, xs, final, prevs, saved, valid)


def _shift_in(prevs, final):
    """The states after each step: ``prevs[1:]`` followed by ``final``."""
    return jax.tree.map(lambda p, f: jnp.concatenate([p[1:], f[None]]), prevs, final)


def _previous_states_bwd(spec, unroll, residuals, cotangents):
    """The backward pass on the previous states, which the weight gradients read as they are;
    each step's new state is read from the step after it (no shifted copy)."""
    projection, params, xs, final, prevs, saved, valid = residuals
    d_outputs, d_final = cotangents
    last = xs.shape[0] - 1

    def body(d_state, inputs):
        t, d_out_t, prev_t, saved_t, valid_t = inputs
        new_t = jax.tree.map(
            lambda p, f: jnp.where(t == last, f, p[jnp.minimum(t + 1, last)]), prevs, final)
        d_new = bptt._add_to_h(spec, d_state, d_out_t)
        if valid_t is not None:
            d_pass = bptt.select(valid_t, jax.tree.map(jnp.zeros_like, d_state), d_state)
            d_new = bptt.zero_where_invalid(valid_t, d_new)
        d_prev, d_xp_t, extra_t = bptt._STEP_VJPS[spec.kind](spec, params, saved_t, prev_t,
                                                             new_t, d_new)
        if valid_t is not None:
            d_prev = jax.tree.map(jnp.add, d_prev, d_pass)
        return d_prev, (d_xp_t, extra_t)

    scanned = (jnp.arange(last + 1), d_outputs, prevs, saved, valid)
    d_state0, (d_xp, extra) = jax.lax.scan(body, d_final, scanned, reverse=True, unroll=unroll)
    states = _shift_in(prevs, final) if spec.kind == "lstm" else None  # peepholes' sums only
    d_projection, d_params = bptt._weight_grads(spec, params, xs, prevs, states, saved, d_xp,
                                                extra)
    return d_projection, d_params, bptt._input_grad(projection, d_xp), d_state0, None


def recurrence_with(fwd, bwd):
    """``bptt._recurrence`` (the same forward function) with its VJP's two halves replaced."""
    @functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
    def recurrence(spec, unroll, projection, params, xs, state0, valid):
        return bptt._recurrence.fun(spec, unroll, projection, params, xs, state0, valid)

    recurrence.defvjp(fwd, bwd)
    return recurrence


def previous_states_recurrence():
    """``bptt._recurrence`` saving the previous states (a variant tried, not kept)."""
    return recurrence_with(_previous_states_fwd, _previous_states_bwd)


def bf16_matmul(a, b):
    """``a @ b`` with bfloat16 operands and float32 sums."""
    return jnp.matmul(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16),
                      preferred_element_type=jnp.float32)


def bf16_basic_step(spec, params, xp_t, prev):
    (w_h,) = params
    return ACTIVATIONS[spec.option](xp_t[0] + bf16_matmul(prev, w_h)), None


def bf16_basic_vjp(spec, params, saved_t, prev_t, new_t, d_h):
    (w_h,) = params
    d_z = d_h * bptt._DERIVATIVE_FROM_OUTPUT[spec.option](new_t)
    return bf16_matmul(d_z, w_h.T), d_z, None


def bf16_weight_grad(prevs, d_xp):
    return bf16_matmul(bptt._rows(prevs).T, bptt._rows(d_xp))


def joint_weight_grads(with_bias):
    """``bptt._weight_grads`` for BasicRNN and LSTM (no peepholes) as one matmul: ``[x, h]``
    (and, ``with_bias``, a column of ones for the bias) against the gate gradients."""
    def grads(spec, params, xs, prevs, states, saved, d_xp, extra):
        assert spec.kind == "basic" or (spec.kind == "lstm" and params[1] is None), \
            "BasicRNN, or LSTM without peepholes"
        h = bptt._hidden(spec, prevs)
        ones = [jnp.ones(xs.shape[:-1] + (1,), xs.dtype)] if with_bias else []
        joint = bptt._weight_grad(jnp.concatenate([xs, h, *ones], axis=-1), d_xp)
        inputs, units = xs.shape[-1], h.shape[-1]
        d_b = joint[-1] if with_bias else jnp.sum(d_xp, axis=(0, 1))
        d_w_h = joint[inputs:inputs + units]
        return (joint[:inputs], d_b), ((d_w_h,) if spec.kind == "basic" else (d_w_h, None))
    return grads


def _in_loop_bwd(spec, unroll, residuals, cotangents, chunk=1, transposed=False):
    """``bptt._recurrence_bwd`` (BasicRNN, LSTM without peepholes; full sequences) summing the
    weight gradients inside the backward loop instead of after it: the loop runs ``chunk``
    steps an iteration, then adds their weight gradients as one matmul over their
    ``chunk * B`` rows; with ``transposed``, from copies of ``x`` and ``h_prev`` transposed
    (per chunk) before the loop."""
    projection, params, xs, state0, states, saved, valid = residuals
    assert valid is None and (spec.kind == "basic" or params[1] is None), "see docstring"
    steps, batch = xs.shape[:2]
    assert steps % chunk == 0, f"T={steps} is not a multiple of chunk={chunk}"
    count = steps // chunk
    d_outputs, d_final = cotangents
    prevs = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s[:-1]]), state0, states)
    w_x, _ = projection

    def rows(a):  # [T, B, N] -> [T / chunk, chunk * B, N], or its transpose [.., N, chunk * B]
        a = a.reshape(count, chunk * batch, a.shape[-1])
        return jax.lax.optimization_barrier(jnp.swapaxes(a, 1, 2)) if transposed else a

    def grouped(tree):  # [T, ...] -> [T / chunk, chunk, ...]
        return jax.tree.map(lambda a: a.reshape((count, chunk) + a.shape[1:]), tree)

    def body(carry, inputs):
        d_state, (d_w_x, d_b, d_w_h) = carry
        d_out_c, x_c, h_c, prev_c, saved_c, new_c = inputs
        if not transposed:
            x_c, h_c = x_c.T, h_c.T
        d_xps = [None] * chunk
        for j in reversed(range(chunk)):
            pick = functools.partial(jax.tree.map, lambda a, j=j: a[j])
            d_new = bptt._add_to_h(spec, d_state, d_out_c[j])
            d_state, d_xps[j], _ = bptt._STEP_VJPS[spec.kind](spec, params, pick(saved_c),
                                                              pick(prev_c), pick(new_c), d_new)
        d_xp_c = jnp.concatenate(d_xps)  # [chunk * B, G*H]
        sums = (d_w_x + x_c @ d_xp_c, d_b + jnp.sum(d_xp_c, axis=0), d_w_h + h_c @ d_xp_c)
        return (d_state, sums), d_xp_c @ w_x.T

    zeros = (jnp.zeros_like(w_x), jnp.zeros_like(projection[1]), jnp.zeros_like(params[0]))
    scanned = (grouped(d_outputs), rows(xs), rows(bptt._hidden(spec, prevs)), grouped(prevs),
               grouped(saved), grouped(states))
    (d_state0, (d_w_x, d_b, d_w_h)), d_xs = jax.lax.scan(body, (d_final, zeros), scanned,
                                                         reverse=True, unroll=unroll)
    d_params = (d_w_h,) if spec.kind == "basic" else (d_w_h, None)
    return (d_w_x, d_b), d_params, d_xs.reshape(xs.shape), d_state0, None


def in_loop_recurrence(chunk=1, transposed=False):
    """``bptt._recurrence`` with the weight gradients summed inside the backward loop."""
    return recurrence_with(bptt._recurrence_fwd,
                           functools.partial(_in_loop_bwd, chunk=chunk, transposed=transposed))


def _coefficients_bwd(spec, unroll, residuals, cotangents):
    """``bptt._recurrence_bwd`` (LSTM without peepholes; full sequences) whose loop only
    multiplies: what each step's gate gradients are multiplied by (``tanh(c)`` and the gates'
    derivatives) is computed for all steps before the loop, in one element-wise pass."""
    projection, params, xs, state0, states, saved, valid = residuals
    assert spec.kind == "lstm" and params[1] is None and valid is None, "see docstring"
    d_outputs, d_final = cotangents
    prevs = jax.tree.map(lambda s0, s: jnp.concatenate([s0[None], s[:-1]]), state0, states)
    w_h, _ = params
    i, f, g, o = saved
    tanh_c = jnp.tanh(states.c)
    factors = (tanh_c * bptt._sigmoid_grad(o), o * (1.0 - tanh_c * tanh_c),
               g * bptt._sigmoid_grad(i), prevs.c * bptt._sigmoid_grad(f), i * (1.0 - g * g), f)

    def body(d_state, inputs):
        d_out_t, (k_o, k_c, k_i, k_f, k_g, f_t) = inputs
        d_h = d_state.h + d_out_t
        d_c = d_state.c + d_h * k_c
        d_z = bptt._join([d_c * k_i, d_c * k_f, d_c * k_g, d_h * k_o])
        return LSTMStateTuple(d_c * f_t, d_z @ w_h.T), d_z

    d_state0, d_xp = jax.lax.scan(body, d_final, (d_outputs, factors), reverse=True,
                                  unroll=unroll)
    d_projection, d_params = bptt._weight_grads(spec, params, xs, prevs, states, saved, d_xp,
                                                None)
    return d_projection, d_params, bptt._input_grad(projection, d_xp), d_state0, None


def coefficients_recurrence():
    """``bptt._recurrence`` with the backward loop's factors computed before it."""
    return recurrence_with(bptt._recurrence_fwd, _coefficients_bwd)


def _transposed_lstm_vjp(spec, params, gates, prev_t, new_t, d_new):
    """``bptt._lstm_vjp`` (no peepholes) given ``w_h.T`` (``[4H, H]``) in place of ``w_h``: its
    ``d_z @ w_h.T`` becomes ``d_z @ w_h_t`` (XLA drops the double transpose)."""
    w_h_t, _ = params
    return bptt._lstm_vjp(spec, (w_h_t.T, None), gates, prev_t, new_t, d_new)


def _transposed_weights_bwd(spec, unroll, residuals, cotangents):
    """``bptt._recurrence_bwd`` (LSTM without peepholes) whose loop multiplies by a copy of
    ``w_h.T`` made once before it, instead of by ``w_h`` read transposed in every step."""
    projection, (w_h, peepholes), *rest = residuals
    assert spec.kind == "lstm" and peepholes is None, "see docstring"
    w_h_t = jax.lax.optimization_barrier(w_h.T)
    with patched(bptt, _STEP_VJPS={**bptt._STEP_VJPS, "lstm": _transposed_lstm_vjp}):
        return bptt._recurrence_bwd(spec, unroll, (projection, (w_h_t, None), *rest), cotangents)


def transposed_weights_recurrence():
    """``bptt._recurrence`` whose backward loop reads a transposed copy of ``w_h``."""
    return recurrence_with(bptt._recurrence_fwd, _transposed_weights_bwd)


def no_weight_grads(spec, params, xs, prevs, states, saved, d_xp, extra):
    """Timing only, wrong gradients: ``bptt._weight_grads`` replaced by zeros (that still wait
    for the backward loop), to show what computing the weight gradients costs the step."""
    after_loop = 0.0 * d_xp[0, 0, 0]

    def zeros(a):
        return None if a is None else jnp.zeros_like(a) + after_loop

    w_x = jnp.zeros((xs.shape[-1], d_xp.shape[-1]), d_xp.dtype)
    return (zeros(w_x), zeros(d_xp[0, 0])), jax.tree.map(zeros, params)


def per_array_pmean(tree):
    return jax.lax.pmean(tree, parallel.AXIS)


def gathered_mean(tree):
    """The mean of ``tree`` over the devices from an all-gather of its flat array."""
    flat, unravel = ravel_pytree(tree)
    every = jax.lax.all_gather(flat, parallel.AXIS)  # [devices, N]
    return jax.lax.optimization_barrier(unravel(jnp.mean(every, axis=0)))


def tanh_sigmoid(x):
    return 0.5 * jnp.tanh(0.5 * x) + 0.5


@contextlib.contextmanager
def patched(target, **attrs):
    saved = {name: getattr(target, name) for name in attrs}
    for name, value in attrs.items():
        setattr(target, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(target, name, value)
