"""Two ways of joining gate blocks in the explicit BPTT, timed side by side in one process.

Usage: .venv/bin/python benchmarks/ab_variants.py [--cells lstm,gru] [--rounds 15]

``rnnkit.bptt._join`` builds ``[B, G*H]`` from ``G`` blocks ``[B, H]`` in every backward step.
Each variant is patched in before its train step is traced (the book's workload, explicit
BPTT), then the steps are timed in interleaved rounds, so machine noise falls on both alike.
"""

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp

import rnnkit.bptt as bptt
from common import book_batch, rnnkit_train_step


def concatenate_join(blocks):
    return blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=-1)


def padded_sum_join(blocks):
    """Each block zero-padded to ``[B, G*H]``, then summed."""
    if len(blocks) == 1:
        return blocks[0]
    units, count = blocks[0].shape[-1], len(blocks)
    padded = [jnp.pad(b, [(0, 0)] * (b.ndim - 1) + [(k * units, (count - 1 - k) * units)])
              for k, b in enumerate(blocks)]
    return functools.reduce(jnp.add, padded)


VARIANTS = {"concatenate": concatenate_join, "padded-sum": padded_sum_join}


def time_variants(kind, rounds, steps=6):
    x, y = book_batch(150, 28, 28)
    runs = {}
    for name, join in VARIANTS.items():
        bptt._join = join
        params, opt_state, step = rnnkit_train_step(kind, 28, 150, bptt="fused")
        jax.block_until_ready(step(params, opt_state, x, y))  # traced under this variant
        runs[name] = functools.partial(step, params, opt_state, x, y)
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(steps):
                start = time.perf_counter()
                jax.block_until_ready(run())
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    for kind in args.cells.split(","):
        medians = time_variants(kind, args.rounds)
        ratio = medians["padded-sum"] / medians["concatenate"]
        print(f"{kind:5s} " + "  ".join(f"{n} {ms:.2f} ms" for n, ms in medians.items())
              + f"  padded-sum / concatenate = {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
