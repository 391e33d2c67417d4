"""Probe: the LSTM forward time loop as one compiled call (XLA FFI) against XLA's own loop.

Usage: .venv-bench/bin/python benchmarks/ffi_probe.py [--rounds 10]

Not part of rnnkit: a measurement of what a hand-written loop kernel could give on a CPU
(BENCHMARKS.md, "What is left"). It compiles ``benchmarks/ffi_lstm_forward.cc`` with the C++
compiler of the ``ziglang`` wheel against jaxlib's FFI headers and the BLAS of the
``scipy-openblas32`` wheel (both in the ``bench`` extra: no system compiler is needed), registers
it with ``jax.ffi``, checks that it computes what a ``lax.scan`` of the same step computes, and
times both on the book's LSTM shapes (T=28, H=150; forward only, from the projected inputs:
per step ``h @ w_h`` and the gate math, saving h, c and the gates): on one device at B=75 and
B=150, and split across two CPU devices (75 rows each), as ``rnnkit train`` splits the book's
batch on two cores. The kernel runs each call on one thread; XLA's loop uses its intra-op pool.
"""

import argparse
import ctypes
import functools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

from common import interleaved_median_ms

HERE = pathlib.Path(__file__).parent
SOURCE = HERE / "ffi_lstm_forward.cc"
LIBRARY = HERE / "results" / "ffi" / "liblstm_forward.so"
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
    jax.ffi.register_ffi_target("lstm_forward", jax.ffi.pycapsule(library.LstmForward),
                                platform="cpu")


def kernel_forward(xp, w_h, h0, c0):
    """hs, cs [T, B, H] and gates [T, B, 4H] from the compiled loop."""
    t, b, _ = xp.shape
    states = jax.ShapeDtypeStruct((t, b, H), jnp.float32)
    gates = jax.ShapeDtypeStruct(xp.shape, jnp.float32)
    return jax.ffi.ffi_call("lstm_forward", (states, states, gates))(
        xp, w_h, h0, c0, forget_bias=np.float32(FORGET_BIAS))


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
        runs = {label: functools.partial(lambda f: jax.block_until_ready(f(*args_)), fn)
                for label, fn in (("kernel", kernel), ("scan", scan))}
        medians = interleaved_median_ms(runs, rounds=args.rounds)
        print(f"{name:28s} kernel {medians['kernel']:6.2f} ms  XLA scan {medians['scan']:6.2f} ms"
              f"  kernel / scan {medians['kernel'] / medians['scan']:.2f}  (max |diff| {gap:.1e})",
              flush=True)


if __name__ == "__main__":
    main()
