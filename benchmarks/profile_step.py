"""Where one rnnkit train step spends its time: a jax.profiler trace, summed per kernel.

Usage: .venv/bin/python benchmarks/profile_step.py [--cell lstm] [--steps 5] [--devices 1]
           [--loop]

Runs the book's workload (B=150, T=28, I=28, H=150) through the library's train step
(``rnnkit.steps.make_train_step``, default loop), traces ``--steps`` calls, and prints the time
per step of the kernels that run inside the time loops (28 calls or more per step, per device)
and of those that run once, with the largest. ``--devices 2`` profiles the step split across
two CPU devices (``rnnkit train``'s default on two cores); kernel times are then those of all
devices summed, and the time the devices spent in the all-reduce waiting for each other is
printed on its own line (it is part of the all-reduce's kernel time). ``--loop`` profiles
rnnkit's training loop instead (what ``rnnkit train`` runs: ``rnnkit.steps.make_steps``,
``STEPS_PER_CALL`` steps a call, as ``benchmarks/peers.py``'s "rnnkit-fit" column), ``--steps``
calls of it.
"""

import argparse
import collections
import glob
import gzip
import json
import tempfile

import jax
import numpy as np

import rnnkit as rk
from common import book_batch, fit_loop_fn, train_step_fn

# Events that are not kernels: the host's Python and dispatch, the runtime's loops and waits.
SKIP = ("$", "Thunk", "Pjit", "PjRt", "Python", "Threadpool", "SlinkyThreadPool", "while",
        "CommonPjRt", "AllocateOutput", "Wait", "end:", "InvokeRendezvous")
# The all-reduce's wait for the other devices: inside the all-reduce's own event.
WAIT = "Rendezvous"


def _events(trace_dir):
    """The complete ("X") events of the trace's perfetto file."""
    path = glob.glob(f"{trace_dir}/plugins/profile/*/perfetto_trace.json.gz")[0]
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") == "X"]


def kernel_times(events, steps):
    """{kernel name: (ms per step, calls per step)}."""
    total, calls = collections.Counter(), collections.Counter()
    for e in events:
        if not e["name"].startswith(SKIP):
            total[e["name"]] += e.get("dur", 0)
            calls[e["name"]] += 1
    return {n: (total[n] / steps / 1e3, calls[n] // steps) for n in total}


def waits_per_thread(events):
    """The all-reduce's waits (us) of each thread that waited: one list per thread."""
    waits = collections.defaultdict(list)
    for e in events:
        if e["name"] == WAIT:
            waits[(e["pid"], e["tid"])].append(e.get("dur", 0))
    return list(waits.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cell", default="lstm", choices=("basic", "lstm", "gru"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--loop", action="store_true",
                        help="profile rnnkit's training loop (make_steps), --steps calls of it")
    args = parser.parse_args(argv)
    if args.devices < 1 or rk.use_cpu_cores(args.devices) != args.devices:
        parser.error(f"--devices: JAX could not be given {args.devices} CPU devices")
    if args.steps < 1:
        parser.error(f"--steps: expected a positive number of calls, got {args.steps}")
    devices = jax.devices()[:args.devices]
    call, steps_per_call = (_training_loop if args.loop else _one_step)(args.cell, devices)
    for _ in range(3):  # compile and warm up outside the trace
        call()
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(args.steps):
                call()
        events = _events(trace_dir)
    times = kernel_times(events, args.steps * steps_per_call)
    wait = times.pop(WAIT, (0.0, 0))[0]
    per_device = 28 * len(devices)
    in_loop = sum(ms for ms, n in times.values() if n >= per_device)
    once = sum(ms for ms, n in times.values() if n < per_device)
    what = "training loop" if args.loop else "one call a step"
    print(f"{args.cell}, {len(devices)} device(s), {what}: kernels in the time loops "
          f"{in_loop:.2f} ms/step, the others {once:.2f} ms/step (kernels of all threads "
          f"summed)")
    if len(devices) > 1:
        print(f"  of the all-reduce, waiting for the other devices: {wait:.2f} ms/step "
              f"(all devices summed); per pool thread, the waits' median / 90th "
              f"percentile / largest:")
        for waits in waits_per_thread(events):
            median, p90, top = np.percentile(waits, [50, 90, 100])
            print(f"    {len(waits)} waits: {median:.0f} / {p90:.0f} / {top:.0f} us")
    for name, (ms, n) in sorted(times.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"  {ms:6.2f} ms  x{n:<3d} {name}")


def _one_step(cell, devices):
    """``(call, 1)``: one ``make_train_step`` step a call, on the batch split across ``devices``."""
    x, y = book_batch(150, 28, 28)
    return train_step_fn(cell, x, y, 150, devices=devices)[0], 1


def _training_loop(cell, devices):
    """``(call, steps a call)``: rnnkit's training loop on the batch, split across ``devices``
    as ``rnnkit train`` splits it (the default devices for the batch, at most ``devices``)."""
    x, y = book_batch(150, 28, 28)
    call, steps_per_call, _ = fit_loop_fn(cell, x, y, 150, devices=devices)
    return call, steps_per_call


if __name__ == "__main__":
    main()
