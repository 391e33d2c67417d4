"""Which loop runs by default: the rules, and the measurements behind them.

Each rule below is backed by ``benchmarks/bptt_rules.py``; BENCHMARKS.md records the figures.
"""

from typing import NamedTuple


class Workload(NamedTuple):
    """What the rules look at: the (bottom) cell's class name and the loop's shape."""

    cell: str
    num_steps: int
    batch_size: int
    input_size: int
    units: int


def prefer_fused(workload):
    """Whether the explicit BPTT beats autodiff of the scan for this workload."""
    return True


def default_unroll(workload):
    """Time steps per compiled loop iteration."""
    return 1
