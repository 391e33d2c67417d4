"""Variants of the explicit BPTT's inner loops, timed side by side in one process.

Usage: .venv/bin/python benchmarks/ab_variants.py [--experiments join,gates,sigmoid,projection,
           batch-split,saved-states,weight-grads,in-loop,forward-matmuls,backward-factors,
           backward-weights,weight-grads-cost,all-reduce,unroll,fusion-emitters,bfloat16,
           matmul-dtype]
           [--cells basic,lstm,gru] [--devices 1] [--loop] [--long] [--rounds 15]

Each variant patches ``rnnkit.bptt`` (with a replacement from ``bptt_variants.py``) before its
book-workload train step (explicit BPTT) is traced; then all variants of an experiment are timed in interleaved rounds, so machine noise
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

import rnnkit as rk
import rnnkit.bptt as bptt
import rnnkit.parallel as parallel
import rnnkit.speed as speed
import rnnkit.unroll as unroll_module
from bptt_variants import (
    bf16_basic_step, bf16_basic_vjp, bf16_matmul, bf16_weight_grad, coefficients_recurrence,
    forward, gathered_mean, halves_fused_rnn, in_loop_recurrence, joint_forward,
    joint_weight_grads, no_weight_grads, one_tanh_lstm_step, one_tanh_lstm_vjp, padded_sum_join,
    patched, per_array_pmean, previous_states_recurrence, tanh_sigmoid,
    transposed_weights_recurrence, whole_projection_steps)
from common import blocking, book_batch, interleaved_median_ms, place_batch, rnnkit_train_step
from peer_models import rnnkit_fit_peer

_JIT = jax.jit


def jit_with_options(options):
    """``jax.jit`` that compiles with XLA ``options`` (None: the defaults) whatever its caller
    asks for: a variant patches ``jax.jit`` with it while its step is built and traced."""
    def jit(fun, **kwargs):
        return _JIT(fun, **{**kwargs, "compiler_options": options})

    return jit


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
