"""Probe: the LSTM time loops as compiled calls (XLA FFI) against XLA's own loops.

Usage: .venv-bench/bin/python benchmarks/ffi_probe.py [--rounds 10]

Not part of rnnkit: a measurement of what hand-written loop kernels could give on a CPU
(BENCHMARKS.md, machine C). It compiles ``benchmarks/ffi_lstm.cc`` (the forward and the
backward time loop of an LSTM) with the C++ compiler of the ``ziglang`` wheel against jaxlib's
FFI headers and the BLAS of the ``scipy-openblas32`` wheel (both in the ``bench`` extra: no
system compiler is needed), and registers it with ``jax.ffi``. Each call runs on one thread.

It then times, on the book's LSTM shapes (T=28, H=150):

- the forward loop alone, from the projected inputs (per step ``h @ w_h`` and the gate math,
  saving h, c and the gates), against a ``lax.scan`` of the same step that it must match: on one
  device at B=75 and B=150, and split across two CPU devices (75 rows each), as ``rnnkit train``
  splits the book's batch on two cores;
- the whole train step (forward, backward, Adam, one call a step) of the book's LSTM model with
  both loops compiled, against rnnkit's own step, whose loss and gradients it must match: on one
  device and split across two. Around the compiled loops runs rnnkit's own code for the input
  projection and, after the backward loop, the weight gradients (``kernel_lstm``); or the
  backward call computes the weight gradients itself, one ``sgemm`` each on its thread
  (``kernel_lstm_weights``);
- rnnkit's training loop (``make_steps``, as ``rnnkit train`` runs it, split across two
  devices) with its ``fused_rnn`` swapped for both of these.
"""

import argparse
import contextlib
import ctypes
import functools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec

import common
from ab_variants import time_train_steps
from bptt_variants import patched
from common import blocking, interleaved_median_ms
import rnnkit as rk
import rnnkit.unroll
from rnnkit import bptt

HERE = pathlib.Path(__file__).parent
SOURCE = HERE / "ffi_lstm.cc"
LIBRARY = HERE / "results" / "ffi" / "liblstm.so"
T, H, FORGET_BIAS = 28, 150, 1.0


def build():
    """Compile the kernel (again when its source is newer) and register it with jax.ffi."""
    import scipy_openblas32 as openblas

    if not LIBRARY.exists() or LIBRARY.stat().st_mtime < SOURCE.stat().st_mtime:
        LIBRARY.parent.mkdir(parents=True, exist_ok=True)
        partial = LIBRARY.with_suffix(".so.partial")
        subprocess.run([sys.executable, "-m", "ziglang", "c++", "-shared", "-fPIC", "-O3",
                        "-std=c++17", "-march=native", "-fopenmp-simd",
                        f"-I{jax.ffi.include_dir()}",
                        f"-I{openblas.get_include_dir()}", str(SOURCE),
                        f"-L{openblas.get_lib_dir()}", f"-l{openblas.get_library()}",
                        f"-Wl,-rpath,{openblas.get_lib_dir()}", "-o", str(partial)], check=True)
        os.replace(partial, LIBRARY)
    library = ctypes.cdll.LoadLibrary(str(LIBRARY))
    for name, handler in (("lstm_forward", library.LstmForward),
                          ("lstm_backward", library.LstmBackward),
                          ("lstm_backward_weights", library.LstmBackwardWeights)):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(handler), platform="cpu")


def kernel_forward(xp, w_h, h0, c0):
    """hs, cs [T, B, H] and gates [T, B, 4H] from the compiled loop."""
    t, b, _ = xp.shape
    states = jax.ShapeDtypeStruct((t, b, H), jnp.float32)
    gates = jax.ShapeDtypeStruct(xp.shape, jnp.float32)
    return jax.ffi.ffi_call("lstm_forward", (states, states, gates))(
        xp, w_h, h0, c0, forget_bias=np.float32(FORGET_BIAS))


def kernel_backward(gates, cs, c0, w_h, d_hs, d_c_last):
    """d_gates [T, B, 4H] (before the activations), d_h0, d_c0 from the compiled backward loop."""
    state = jax.ShapeDtypeStruct(c0.shape, jnp.float32)
    return jax.ffi.ffi_call("lstm_backward", (jax.ShapeDtypeStruct(gates.shape, jnp.float32),
                                              state, state))(gates, cs, c0, w_h, d_hs, d_c_last)


def kernel_backward_weights(gates, cs, c0, w_h, d_hs, d_c_last, hs, h0, xs):
    """``kernel_backward``'s outputs and the weight gradients d_w_h, d_w_x, d_b, all from one
    compiled call (its loop, then one sgemm per weight over all T * B rows)."""
    out = [jax.ShapeDtypeStruct(shape, jnp.float32)
           for shape in (gates.shape, c0.shape, c0.shape, w_h.shape,
                         (xs.shape[-1], gates.shape[-1]), gates.shape[-1:])]
    return jax.ffi.ffi_call("lstm_backward_weights", tuple(out))(
        gates, cs, c0, w_h, d_hs, d_c_last, hs, h0, xs)


def _kernel_lstm(xs, w_x, b, w_h):
    """Every step's h [T, B, H] and the last c [B, H] from time-major inputs ``xs [T, B, I]``
    (zero initial state), through the compiled loops."""
    hs, cs, _ = kernel_forward(*_projected(xs, w_x, b, w_h))
    return hs, cs[-1]


def _projected(xs, w_x, b, w_h):
    t, batch, _ = xs.shape
    xp = (bptt._rows(xs) @ w_x + b).reshape(t, batch, -1)  # [T, B, 4H]
    zeros = jnp.zeros((batch, w_h.shape[0]), xs.dtype)
    return xp, w_h, zeros, zeros


def _kernel_lstm_fwd(xs, w_x, b, w_h):
    xp, w_h, h0, c0 = _projected(xs, w_x, b, w_h)
    hs, cs, gates = kernel_forward(xp, w_h, h0, c0)
    return (hs, cs[-1]), (xs, w_x, gates, cs, hs, h0, c0, w_h)


def _kernel_lstm_bwd(residuals, cotangents):
    xs, w_x, gates, cs, hs, h0, c0, w_h = residuals
    d_hs, d_c_last = cotangents
    d_gates, _, _ = kernel_backward(gates, cs, c0, w_h, d_hs, d_c_last)
    h_prev = jnp.concatenate([h0[None], hs[:-1]])  # [T, B, H]
    d_w_x, d_b = bptt._projection_grads(xs, d_gates)
    return (bptt._input_grad((w_x, None), d_gates), d_w_x, d_b,
            bptt._weight_grad(h_prev, d_gates))


def _kernel_lstm_bwd_weights(residuals, cotangents):
    xs, w_x, gates, cs, hs, h0, c0, w_h = residuals
    d_hs, d_c_last = cotangents
    d_gates, _, _, d_w_h, d_w_x, d_b = kernel_backward_weights(gates, cs, c0, w_h, d_hs,
                                                               d_c_last, hs, h0, xs)
    return bptt._input_grad((w_x, None), d_gates), d_w_x, d_b, d_w_h


# Around the compiled loops, ``kernel_lstm`` runs rnnkit's explicit BPTT's own code: the input
# projection before the loop as one matmul, the weight and input gradients after the backward
# loop (``rnnkit.bptt``'s helpers, so that XLA lays them out as it does there).
# ``kernel_lstm_weights`` computes the weight gradients in the backward loop's call instead.
kernel_lstm = jax.custom_vjp(_kernel_lstm)
kernel_lstm.defvjp(_kernel_lstm_fwd, _kernel_lstm_bwd)
kernel_lstm_weights = jax.custom_vjp(_kernel_lstm)
kernel_lstm_weights.defvjp(_kernel_lstm_fwd, _kernel_lstm_bwd_weights)


def scan_forward(xp, w_h, h0, c0):
    """The same from a lax.scan, as XLA compiles it."""
    def step(carry, xp_t):
        h, c = carry
        i, f, g, o = jnp.split(xp_t + h @ w_h, 4, axis=-1)
        i, f, g, o = (jax.nn.sigmoid(i), jax.nn.sigmoid(f + FORGET_BIAS), jnp.tanh(g),
                      jax.nn.sigmoid(o))
        c = f * c + i * g
        h = o * jnp.tanh(c)
        return (h, c), (h, c, jnp.concatenate([i, f, g, o], axis=-1))

    return jax.lax.scan(step, (h0, c0), xp)[1]


def split(forward, devices):
    """``forward`` on equal slices of the batch, one per device."""
    rows = PartitionSpec(None, "batch")
    return jax.shard_map(forward, mesh=Mesh(np.array(devices), ("batch",)),
                         in_specs=(rows, PartitionSpec(), PartitionSpec("batch"),
                                   PartitionSpec("batch")),
                         out_specs=(rows, rows, rows), check_vma=False)


def inputs(batch):
    k_x, k_w = jax.random.split(jax.random.key(0))
    xp = 0.5 * jax.random.normal(k_x, (T, batch, 4 * H))
    w_h = jax.random.normal(k_w, (H, 4 * H)) / np.sqrt(H)
    return xp, w_h, jnp.zeros((batch, H)), jnp.zeros((batch, H))


def kernel_logits(params, x, *, lstm=kernel_lstm, **_):
    """``common.rnnkit_logits`` for an LSTM cell, its time loops the compiled ones."""
    cell, dense = params
    hs, _ = lstm(jnp.swapaxes(x, 0, 1), cell.w_x, cell.b, cell.w_h)  # as dynamic_rnn does
    return dense(hs[-1])


def kernel_fused_rnn(cell, xs, state0, valid, *, unroll=1, lstm=kernel_lstm):
    """``rnnkit.bptt.fused_rnn`` for what the book's LSTM model passes it (no peepholes, no
    ``sequence_length``, a zero initial state), its time loops the compiled ones: patched into
    ``rnnkit.unroll`` to time rnnkit's own training loop on them."""
    if not isinstance(cell, rk.LSTMCell) or cell.use_peepholes or valid is not None:
        raise NotImplementedError("the probe's loops are a plain LSTM's, without masks")
    if cell.forget_bias != FORGET_BIAS:
        raise NotImplementedError(f"the probe's kernel is built for forget_bias={FORGET_BIAS}")
    hs, c_last = lstm(xs, cell.w_x, cell.b, cell.w_h)
    return hs, rk.LSTMStateTuple(c_last, hs[-1])


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def check_gradients(x, y, lstm):
    """The loss and gradients of the model on ``lstm`` (``kernel_lstm`` or
    ``kernel_lstm_weights``) against rnnkit's (explicit BPTT), one device."""
    params, _, _ = common.rnnkit_train_step("lstm", 28, H)

    def loss(logits_fn):
        return jax.jit(jax.value_and_grad(lambda p: xent(logits_fn(p, x), y)))(params)

    (ours, d_ours), (theirs, d_theirs) = (
        loss(functools.partial(kernel_logits, lstm=lstm)), loss(common.rnnkit_logits))
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(d_theirs))
    gap = max(float(jnp.max(jnp.abs(a - b)))
              for a, b in zip(jax.tree.leaves(d_ours), jax.tree.leaves(d_theirs)))
    if abs(float(ours) - float(theirs)) > 1e-5 or gap > 1e-4 * scale:
        raise SystemExit(f"train step: the kernel's loss or gradients differ from rnnkit's "
                         f"(loss {float(ours)} against {float(theirs)}, gradients by {gap:.2e})")
    return gap / scale


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    jax.config.update("jax_num_cpu_devices", 2)
    build()
    cases = {"1 device, B=75": (75, None), "1 device, B=150": (150, None),
             "2 devices, B=150 (75 each)": (150, jax.devices()[:2])}
    for name, (batch, devices) in cases.items():
        args_ = inputs(batch)
        kernel, scan = kernel_forward, scan_forward
        if devices is not None:
            kernel, scan = split(kernel, devices), split(scan, devices)
        kernel, scan = jax.jit(kernel), jax.jit(scan)
        gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(kernel(*args_), scan(*args_)))
        if gap > 1e-5:
            raise SystemExit(f"{name}: the kernel differs from the scan by {gap:.2e}")
        runs = {"kernel": functools.partial(blocking, kernel, *args_),
                "scan": functools.partial(blocking, scan, *args_)}
        medians = interleaved_median_ms(runs, rounds=args.rounds)
        print(f"{name:28s} kernel {medians['kernel']:6.2f} ms  XLA scan {medians['scan']:6.2f} ms"
              f"  kernel / scan {medians['kernel'] / medians['scan']:.2f}  (max |diff| {gap:.1e})",
              flush=True)
    x, y = common.book_batch(150, T, 28)
    gaps = [check_gradients(x, y, lstm) for lstm in (kernel_lstm, kernel_lstm_weights)]
    note = f"(gradients within {max(gaps):.1e} of the largest)"
    # rnnkit's book-workload step (ab_variants' timing, one call a step), as it is and with the
    # compiled loops in place of its own; then rnnkit's training loop (what `rnnkit train` runs),
    # its fused_rnn swapped for the kernel's
    one_call = {"rnnkit": contextlib.nullcontext,
                "kernel": lambda: patched(common, rnnkit_logits=kernel_logits),
                "kernel+weights": lambda: patched(common, rnnkit_logits=functools.partial(
                    kernel_logits, lstm=kernel_lstm_weights))}
    for devices in (jax.devices()[:1], jax.devices()[:2]):
        medians = time_train_steps("lstm", one_call, args.rounds, devices)
        _print_steps(f"LSTM train step, B=150, {len(devices)} device(s)", medians, note)
    loop = {"rnnkit": contextlib.nullcontext,
            "kernel": lambda: patched(rnnkit.unroll, fused_rnn=kernel_fused_rnn),
            "kernel+weights": lambda: patched(rnnkit.unroll, fused_rnn=functools.partial(
                kernel_fused_rnn, lstm=kernel_lstm_weights))}
    medians = time_train_steps("lstm", loop, args.rounds, jax.devices()[:2], loop=True)
    _print_steps("LSTM training loop, B=150, 2 devices (ms a step)", medians, "")


def _print_steps(name, medians, note):
    ours = medians["rnnkit"]
    print(f"{name}: rnnkit {ours:6.2f} ms  kernel loops {medians['kernel']:6.2f} ms "
          f"({medians['kernel'] / ours:.2f}x)  with the weight gradients in the call "
          f"{medians['kernel+weights']:6.2f} ms ({medians['kernel+weights'] / ours:.2f}x)  {note}",
          flush=True)


if __name__ == "__main__":
    main()
