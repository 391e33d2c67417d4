"""Page faults and system time per train step: rnnkit one call per step against its training loop.

Usage: .venv-bench/bin/python benchmarks/page_faults.py [--workload long] [--calls 10]

Runs the "rnnkit" and "rnnkit-fit" peers of ``peers.py`` (``peer_models.py``) on the book's
workload (B=150, T=28, I=28, H=150) or the long one (B=32, T=1000, I=32, H=128), LSTM, and
prints per train step: wall ms, minor page faults and the process's user and system CPU ms
(``getrusage``). The fault counts match fresh memory for the step's temporaries in every call
of a compiled step; the training loop's call takes 32 steps in one call's buffers.
"""

import argparse
import resource
import time

import rnnkit as rk
from peer_models import BUILDERS, book_batch_np

WORKLOADS = {"book": (150, 28, 28, 150), "long": (32, 1000, 32, 128)}


def per_step(peer, calls):
    """``(wall ms, minor faults, user ms, system ms)`` per train step over ``calls`` calls."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(calls):
        peer.train_step()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
    steps = calls * peer.steps_per_call
    return (wall / steps * 1e3, (after.ru_minflt - before.ru_minflt) / steps,
            (after.ru_utime - before.ru_utime) / steps * 1e3,
            (after.ru_stime - before.ru_stime) / steps * 1e3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="long", choices=WORKLOADS)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    rk.use_cpu_cores()  # as peers.py and rnnkit train do
    batch_size, num_steps, input_size, units = WORKLOADS[args.workload]
    x, y = book_batch_np(batch_size, num_steps, input_size)
    print(f"LSTM, (B, T, I, H) = {WORKLOADS[args.workload]}, per train step:")
    for name in ("rnnkit", "rnnkit-fit"):
        peer = BUILDERS[name]("lstm", x, y, units)
        for _ in range(2):  # compile and warm up
            peer.train_step()
        wall, faults, user, system = per_step(peer, args.calls)
        print(f"  {name:10s} {wall:8.1f} ms  {faults:8.0f} minor faults  user {user:7.1f} ms  "
              f"system {system:6.1f} ms", flush=True)


if __name__ == "__main__":
    main()
