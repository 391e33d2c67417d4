"""Where one rnnkit train step spends its time: a jax.profiler trace, summed per kernel.

Usage: .venv/bin/python benchmarks/profile_step.py [--cell lstm] [--steps 5] [--devices 1]

Runs the book's workload (B=150, T=28, I=28, H=150) train step (``common.rnnkit_train_step``,
default loop), traces ``--steps`` calls, and prints the time per step of the kernels that run
inside the time loops (28 calls or more per step, per device) and of those that run once, with
the largest. ``--devices 2`` profiles the step split across two CPU devices (``rnnkit train``'s
default on two cores); kernel times are then those of all devices summed.
"""

import argparse
import collections
import glob
import gzip
import json
import tempfile

import jax

import rnnkit as rk
from common import book_batch, place_batch, rnnkit_train_step

SKIP = ("$", "Thunk", "Pjit", "PjRt", "Python", "Threadpool", "SlinkyThreadPool", "while")


def kernel_times(trace_dir, steps):
    """{kernel name: (ms per step, calls per step)} from the trace's perfetto file."""
    path = glob.glob(f"{trace_dir}/plugins/profile/*/perfetto_trace.json.gz")[0]
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    total, calls = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") == "X" and not e["name"].startswith(SKIP):
            total[e["name"]] += e.get("dur", 0)
            calls[e["name"]] += 1
    return {n: (total[n] / steps / 1e3, calls[n] // steps) for n in total}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cell", default="lstm", choices=("basic", "lstm", "gru"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args(argv)
    if args.devices < 1 or rk.use_cpu_cores(args.devices) != args.devices:
        parser.error(f"--devices: JAX could not be given {args.devices} CPU devices")
    devices = jax.devices()[:args.devices]
    x, y = place_batch(*book_batch(150, 28, 28), devices)
    params, opt_state, step = rnnkit_train_step(args.cell, 28, 150, devices=devices)
    for _ in range(3):  # compile and warm up outside the trace
        params, opt_state, loss = step(params, opt_state, x, y)
    loss.block_until_ready()
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(args.steps):
                params, opt_state, loss = step(params, opt_state, x, y)
                loss.block_until_ready()
        times = kernel_times(trace_dir, args.steps)
    per_device = 28 * len(devices)
    in_loop = sum(ms for ms, n in times.values() if n >= per_device)
    once = sum(ms for ms, n in times.values() if n < per_device)
    print(f"{args.cell}, {len(devices)} device(s): kernels in the time loops {in_loop:.2f} "
          f"ms/step, the others {once:.2f} ms/step (kernels of all threads summed)")
    for name, (ms, n) in sorted(times.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"  {ms:6.2f} ms  x{n:<3d} {name}")


if __name__ == "__main__":
    main()
