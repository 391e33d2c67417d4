"""Variants of the explicit BPTT's inner loops, timed side by side in one process.

Usage: .venv/bin/python benchmarks/ab_variants.py [--experiments join,gates,sigmoid,projection,
           batch-split,saved-states,weight-grads,in-loop,forward-matmuls,backward-factors,
           backward-weights,weight-grads-cost,all-reduce,unroll,fusion-emitters,bfloat16,
           matmul-dtype]
           [--cells basic,lstm,gru] [--devices 1] [--loop] [--long] [--rounds 15]

Each variant patches ``rnnkit.bptt`` before its book-workload train step (explicit BPTT) is
traced; then all variants of an experiment are timed in interleaved rounds, so machine noise
falls on them alike. The first variant of each experiment is the code as it is.

  join          gate gradients joined by a concatenate, or by a sum of zero-padded blocks
  gates         LSTM gates as four kernels (i, f, g, o), or all four by one tanh over [B, 4H]
  sigmoid       sigmoid as 1 / (1 + exp(-x)), or as tanh(x / 2) / 2 + 1 / 2
  projection    x_t w_x + b inside the loop, or for all steps before it
  batch-split   one recurrence over the batch, or two independent ones over its halves
  saved-states  the forward loop saves each step's new state (the weight gradients read a
                shifted copy of them, the previous states), or its previous state (read as
                they are; the backward loop reads each new state from the step after)
  weight-grads  the weight gradients after the loop as one matmul for w_x and one for w_h, or
                as one over ``[x, h]`` (and with a column of ones for the bias)
  in-loop       BasicRNN, LSTM: the weight gradients after the loop, or summed inside the
                backward loop step by step (from x and h_prev as they are, or from copies
                transposed before the loop), or chunk by chunk (4 or 7 steps, one matmul over
                the chunk's rows)
  forward-matmuls  BasicRNN, LSTM: the forward step's two matmuls (x_t w_x, h w_h), or one over
                ``[x_t, h]``
  backward-factors  LSTM: the backward loop computes each step's gate-gradient factors (tanh(c),
                the gates' derivatives) from the saved gates, or reads them computed for all
                steps before the loop in one element-wise pass (the loop then only multiplies)
  backward-weights  LSTM: the backward loop's ``d_z @ w_h.T`` as it is (``w_h`` read transposed
                in every step), or from a transposed copy of ``w_h`` made once before the loop
  weight-grads-cost  timing only: the weight gradients computed, or replaced by zeros (wrong
                gradients), to show what computing them costs the step
  all-reduce    (with --devices 2 or more) the split step's gradients averaged as one flat
                array, or as one operand of the all-reduce per array, or gathered from every
                device (all-gather) and summed on each
  unroll        time steps per iteration of the compiled loops when the caller gives none
                (``rnnkit.speed.DEFAULT_UNROLL``): 1 (the default), 2 or 4
  fusion-emitters  XLA:CPU's default fusion emitters, or its older ones (every jitted function
                compiled with ``compiler_options={"xla_cpu_use_fusion_emitters": False}``),
                whatever ``rnnkit.speed.loop_compiler_options`` would pick
  bfloat16      BasicRNN: every matmul in float32; the loops' matmuls in bfloat16 (float32
                sums); those and the weight gradients' matmuls in bfloat16
  matmul-dtype  not a train step: a scan of 56 recurrent matmuls, float32 against bfloat16 and
                against three bfloat16 matmuls that keep about 16 bits (bfloat16x3)

--cells picks among each experiment's own cells; --devices 2 times the step split across two CPU
devices, as ``rnnkit train`` runs it on two cores; --loop times rnnkit's training loop
(``rnnkit.steps.make_steps``, 32 steps a call, as ``rnnkit train`` and ``peers.py``'s
"rnnkit-fit" run it; the time of a step is the call's divided by 32) instead of one call a step;
--long times the long-sequence workload (B=32, T=1000, I=32, H=128, peers.py's (b)) instead of
the book's (B=150, T=28, I=28, H=150).
"""

import argparse
import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import rnnkit as rk
import rnnkit.bptt as bptt
import rnnkit.parallel as parallel
import rnnkit.speed as speed
import rnnkit.unroll as unroll_module
from common import blocking, book_batch, interleaved_median_ms, place_batch, rnnkit_train_step
from peer_models import rnnkit_fit_peer
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


_JIT = jax.jit


def jit_with_options(options):
    """``jax.jit`` that compiles with XLA ``options`` (None: the defaults) whatever its caller
    asks for: a variant patches ``jax.jit`` with it while its step is built and traced."""
    def jit(fun, **kwargs):
        return _JIT(fun, **{**kwargs, "compiler_options": options})

    return jit


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


def _as_is():
    return contextlib.nullcontext()


EXPERIMENTS = {
    "join": ("gru,lstm", {
        "concatenate": _as_is,
        "padded-sum": lambda: patched(bptt, _join=padded_sum_join)}),
    "gates": ("lstm", {
        "four-kernels": lambda: patched(bptt, _forward=forward(False),
                                        _STEPS=whole_projection_steps()),
        "one-tanh": lambda: patched(bptt, _forward=forward(False),
                                    _STEPS={**bptt._STEPS, "lstm": one_tanh_lstm_step},
                                    _STEP_VJPS={**bptt._STEP_VJPS, "lstm": one_tanh_lstm_vjp})}),
    "sigmoid": ("lstm,gru", {
        "exp": _as_is,
        "tanh": lambda: patched(jax.nn, sigmoid=tanh_sigmoid)}),
    "projection": ("basic,lstm,gru", {
        "in-loop": _as_is,
        "before-loop": lambda: patched(bptt, _forward=forward(True),
                                       _STEPS=whole_projection_steps())}),
    "batch-split": ("basic,lstm,gru", {
        "one-loop": _as_is,
        "two-halves": lambda: patched(unroll_module, fused_rnn=halves_fused_rnn)}),
    "bfloat16": ("basic", {
        "float32": _as_is,
        "bf16-loops": lambda: patched(bptt, _STEPS={**bptt._STEPS, "basic": bf16_basic_step},
                                      _STEP_VJPS={**bptt._STEP_VJPS, "basic": bf16_basic_vjp}),
        "bf16-loops-and-weights": lambda: patched(
            bptt, _STEPS={**bptt._STEPS, "basic": bf16_basic_step},
            _STEP_VJPS={**bptt._STEP_VJPS, "basic": bf16_basic_vjp},
            _weight_grad=bf16_weight_grad)}),
    "saved-states": ("basic,lstm,gru", {
        "new": _as_is,
        "previous": lambda: patched(bptt, _recurrence=previous_states_recurrence())}),
    "weight-grads": ("basic,lstm", {
        "two-matmuls": _as_is,
        "joint": lambda: patched(bptt, _weight_grads=joint_weight_grads(False)),
        "joint-and-bias": lambda: patched(bptt, _weight_grads=joint_weight_grads(True))}),
    "in-loop": ("basic,lstm", {
        "after-loop": _as_is,
        "in-loop": lambda: patched(bptt, _recurrence=in_loop_recurrence()),
        "in-loop-transposed": lambda: patched(
            bptt, _recurrence=in_loop_recurrence(transposed=True)),
        "chunks-of-4": lambda: patched(bptt, _recurrence=in_loop_recurrence(4, True)),
        "chunks-of-7": lambda: patched(bptt, _recurrence=in_loop_recurrence(7, True))}),
    "forward-matmuls": ("basic,lstm", {
        "two": _as_is,
        "joint": lambda: patched(bptt, _forward=joint_forward)}),
    "backward-factors": ("lstm", {
        "in-loop": _as_is,
        "before-loop": lambda: patched(bptt, _recurrence=coefficients_recurrence())}),
    "backward-weights": ("lstm", {
        "w_h": _as_is,
        "w_h-transposed": lambda: patched(bptt, _recurrence=transposed_weights_recurrence())}),
    "weight-grads-cost": ("basic,lstm,gru", {
        "computed": _as_is,
        "zeros-timing-only": lambda: patched(bptt, _weight_grads=no_weight_grads)}),
    "all-reduce": ("basic,lstm,gru", {
        "one-array": _as_is,
        "per-array": lambda: patched(parallel, _mean_across_devices=per_array_pmean),
        "all-gather": lambda: patched(parallel, _mean_across_devices=gathered_mean)}),
    "unroll": ("basic,lstm,gru", {
        "1": _as_is,
        "2": lambda: patched(speed, DEFAULT_UNROLL=2),
        "4": lambda: patched(speed, DEFAULT_UNROLL=4)}),
    "fusion-emitters": ("basic,lstm,gru", {
        "default": lambda: patched(jax, jit=jit_with_options(None)),
        "older": lambda: patched(jax, jit=jit_with_options(speed.OLDER_FUSION_EMITTERS))}),
}


BOOK, LONG = (150, 28, 28, 150), (32, 1000, 32, 128)  # (B, T, I, H)


def time_train_steps(kind, variants, rounds, devices, loop=False, shape=BOOK):
    """Median ms per train step of each variant: one call a step, or (``loop``) rnnkit's
    training loop, ``STEPS_PER_CALL`` steps a call; on the book's workload or ``shape``."""
    batch, steps, inputs, units = shape
    x, y = book_batch(batch, steps, inputs)
    runs, per_call = {}, 1
    for name, patch in variants.items():
        with patch():
            if loop:
                peer = rnnkit_fit_peer(kind, np.asarray(x), np.asarray(y), units,
                                       devices=devices)
                peer.train_step()  # traced under the patch
                runs[name], per_call = peer.train_step, peer.steps_per_call
                continue
            params, opt_state, step = rnnkit_train_step(kind, inputs, units, bptt="fused",
                                                        devices=devices)
            placed = place_batch(x, y, devices)
            jax.block_until_ready(step(params, opt_state, *placed))  # traced under the patch
        runs[name] = functools.partial(blocking, step, params, opt_state, *placed)
    calls = (2 if loop else 6) if shape == BOOK else 1
    medians = interleaved_median_ms(runs, rounds=rounds, steps=calls)
    return {name: ms / per_call for name, ms in medians.items()}


def bf16x3_matmul(a, b):
    """``a @ b`` to about 16 bits: each operand split into bfloat16 high and low parts, three
    bfloat16 matmuls with float32 sums (``hi hi + lo hi + hi lo``; ``lo lo`` is dropped)."""
    def split(x):
        high = x.astype(jnp.bfloat16)
        return high, (x - high.astype(x.dtype)).astype(jnp.bfloat16)

    (a_hi, a_lo), (b_hi, b_lo) = split(a), split(b)
    return sum(jnp.dot(x, y, preferred_element_type=jnp.float32)
               for x, y in ((a_hi, b_hi), (a_lo, b_hi), (a_hi, b_lo)))


MATMULS = {
    "float32": jnp.dot,
    "bfloat16": bf16_matmul,
    "bfloat16x3": bf16x3_matmul,
}


def time_matmul_dtypes(rounds, batch=150, units=150, steps=56):
    """A scan of ``steps`` dependent ``h = tanh(h @ w)[:, :H]`` for ``w [H, G*H]``."""
    h0 = jnp.full((batch, units), 0.1)
    runs = {}
    for count in (1, 4):
        w = 0.05 * jax.random.normal(jax.random.key(0), (units, count * units))
        for name, matmul in MATMULS.items():
            def body(h, _, w=w, matmul=matmul):
                return jnp.tanh(matmul(h, w)[:, :units]), None
            chain = jax.jit(lambda h, body=body: jax.lax.scan(body, h, None, length=steps)[0])
            runs[f"[{units},{count * units}] {name}"] = functools.partial(blocking, chain, h0)
    return interleaved_median_ms(runs, rounds=rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments",
                        default="join,gates,sigmoid,projection,batch-split,saved-states,bfloat16,"
                                "matmul-dtype")
    parser.add_argument("--cells", default=None, help="default: each experiment's own")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--loop", action="store_true",
                        help="time rnnkit's training loop (make_steps), not one call a step")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--long", action="store_true",
                        help="the long-sequence workload (B=32, T=1000, I=32, H=128), one call "
                             "a round, instead of the book's")
    args = parser.parse_args()
    if args.devices < 1 or rk.use_cpu_cores(args.devices) != args.devices:
        parser.error(f"--devices: JAX could not be given {args.devices} CPU devices")
    if "all-reduce" in args.experiments.split(",") and args.devices < 2:
        parser.error("--experiments all-reduce: needs --devices 2 or more (one device has no "
                     "all-reduce)")
    devices = jax.devices()[:args.devices]
    for experiment in args.experiments.split(","):
        if experiment == "matmul-dtype":
            medians = time_matmul_dtypes(args.rounds)
            print(f"{experiment:12s} " + "  ".join(f"{n}: {ms:.2f} ms" for n, ms in
                                                   medians.items()), flush=True)
            continue
        kinds, variants = EXPERIMENTS[experiment]
        own = kinds.split(",")  # an experiment's patches touch only its own cells
        for kind in [k for k in (args.cells or kinds).split(",") if k in own]:
            medians = time_train_steps(kind, variants, args.rounds, devices, args.loop,
                                       LONG if args.long else BOOK)
            first = next(iter(medians.values()))
            print(f"{experiment:12s} {kind:5s} " + "  ".join(
                f"{n} {ms:.2f} ms ({ms / first:.2f}x)" for n, ms in medians.items()),
                flush=True)


if __name__ == "__main__":
    main()
