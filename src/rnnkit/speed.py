"""Which loop runs by default: the rules, and the measurements behind them.

Median ms of one train step (forward, backward, Adam) on this project's 2-core CPU machine;
``benchmarks/bptt_rules.py`` and ``benchmarks/peers.py`` remeasure them, BENCHMARKS.md records
the runs:

=========================  ============  ==========  =============
workload (B, T, I, H)      cell          fused       autodiff
=========================  ============  ==========  =============
book (150, 28, 28, 150)    BasicRNNCell  3.98        4.74
book (150, 28, 28, 150)    LSTMCell      12.88       14.21
book (150, 28, 28, 150)    GRUCell       11.73       12.38
long (32, 1000, 32, 128)   LSTMCell      144.2       210.6
=========================  ============  ==========  =============

So every built-in cell runs the explicit BPTT by default. Cells of users' own run on autodiff:
the generic explicit BPTT (``bptt_generic.py``) recomputes each step in its backward loop and
measured slower than autodiff for gated cells. Unroll factors 2 and 8 were no faster than 1.
"""

from typing import NamedTuple

BUILT_IN_CELLS = ("BasicRNNCell", "LSTMCell", "GRUCell")


class Workload(NamedTuple):
    """What the rules look at: the (bottom) cell's class name and the loop's shape."""

    cell: str
    num_steps: int
    batch_size: int
    input_size: int
    units: int


def prefer_fused(workload):
    """Whether the explicit BPTT beats autodiff of the scan for this workload."""
    return workload.cell in BUILT_IN_CELLS


def default_unroll(workload):
    """Time steps per compiled loop iteration."""
    return 1
