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
  both loops compiled (the weight gradients after the loop left to XLA), against rnnkit's own
  step, whose loss and gradients it must match: on one device and split across two.
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
from ab_variants import patched, time_train_steps
from common import blocking, interleaved_median_ms

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
                          ("lstm_backward", library.LstmBackward)):
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


@jax.custom_vjp
def kernel_lstm(xp, w_h, h0, c0):
    """Every step's h [T, B, H] and the last c [B, H], through the compiled loops."""
    hs, cs, _ = kernel_forward(xp, w_h, h0, c0)
    return hs, cs[-1]


def _kernel_lstm_fwd(xp, w_h, h0, c0):
    hs, cs, gates = kernel_forward(xp, w_h, h0, c0)
    return (hs, cs[-1]), (gates, cs, hs, h0, c0, w_h)


def _kernel_lstm_bwd(residuals, cotangents):
    gates, cs, hs, h0, c0, w_h = residuals
    d_hs, d_c_last = cotangents
    d_gates, d_h0, d_c0 = kernel_backward(gates, cs, c0, w_h, d_hs, d_c_last)
    h_prev = jnp.concatenate([h0[None], hs[:-1]])  # [T, B, H]
    d_w_h = jnp.einsum("tbh,tbg->hg", h_prev, d_gates)  # one matmul over all T * B rows
    return d_gates, d_w_h, d_h0, d_c0


kernel_lstm.defvjp(_kernel_lstm_fwd, _kernel_lstm_bwd)


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


def kernel_logits(params, x, **_):
    """``common.rnnkit_logits`` for an LSTM cell, its time loops the compiled ones."""
    cell, dense = params
    xp = jnp.swapaxes(x, 0, 1) @ cell.w_x + cell.b  # [T, B, 4H]
    zeros = jnp.zeros((x.shape[0], cell.w_h.shape[0]), x.dtype)
    hs, _ = kernel_lstm(xp, cell.w_h, zeros, zeros)
    return dense(hs[-1])


def xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def check_gradients(x, y):
    """The kernel model's loss and gradients against rnnkit's (explicit BPTT), one device."""
    params, _, _ = common.rnnkit_train_step("lstm", 28, H)

    def loss(logits_fn):
        return jax.jit(jax.value_and_grad(lambda p: xent(logits_fn(p, x), y)))(params)

    (ours, d_ours), (theirs, d_theirs) = loss(kernel_logits), loss(common.rnnkit_logits)
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
    gap = check_gradients(x, y)
    # rnnkit's book-workload step (ab_variants' timing, one call a step), as it is and with the
    # compiled loops in place of its own
    variants = {"rnnkit": contextlib.nullcontext,
                "kernel": lambda: patched(common, rnnkit_logits=kernel_logits)}
    for devices in (jax.devices()[:1], jax.devices()[:2]):
        medians = time_train_steps("lstm", variants, args.rounds, devices)
        print(f"LSTM train step, B=150, {len(devices)} device(s): "
              f"rnnkit {medians['rnnkit']:6.2f} ms  kernel loops {medians['kernel']:6.2f} ms  "
              f"kernel / rnnkit "
              f"{medians['kernel'] / medians['rnnkit']:.2f}  (gradients within {gap:.1e} of the "
              f"largest)", flush=True)


if __name__ == "__main__":
    main()
