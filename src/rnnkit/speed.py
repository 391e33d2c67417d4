"""Which loop runs by default: the rules, and the measurements behind them.

Figures (median ms of one train step, this project's 2-core CPU machine; BENCHMARKS.md has the
commands, ``benchmarks/bptt_rules.py`` remeasures them):

=========================  ============  ==========  =============
workload (B, T, I, H)      cell          fused       autodiff
=========================  ============  ==========  =============
book (150, 28, 28, 150)    BasicRNNCell  4.4         6.2
book (150, 28, 28, 150)    LSTMCell      26.2        13.5
book (150, 28, 28, 150)    GRUCell       28.1        16.7
long (32, 1000, 32, 128)   BasicRNNCell  45.7        48.0
long (32, 1000, 32, 128)   LSTMCell      185.7       220.0
=========================  ============  ==========  =============

So the explicit BPTT is the default for the plain RNN everywhere, and for gated cells only at
small batches, where the per-step work is small and autodiff's extra per-step operations dominate.
Unroll factors 2 and 8 were no faster than 1 in the same runs.
"""

from typing import NamedTuple

# Gated cells run the explicit BPTT by default up to this batch size (measured at 32 and 150).
FUSED_GATED_MAX_BATCH = 64


class Workload(NamedTuple):
    """What the rules look at: the (bottom) cell's class name and the loop's shape."""

    cell: str
    num_steps: int
    batch_size: int
    input_size: int
    units: int


def prefer_fused(workload):
    """Whether the explicit BPTT beats autodiff of the scan for this workload."""
    return workload.cell == "BasicRNNCell" or workload.batch_size <= FUSED_GATED_MAX_BATCH


def default_unroll(workload):
    """Time steps per compiled loop iteration."""
    return 1
