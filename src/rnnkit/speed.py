"""Which loop runs by default, and the measurements behind the rule.

Median ms of one train step (forward, backward, Adam) on this project's 2-core CPU machines,
machine A (AMD EPYC) and machine B (Intel Xeon), from ``benchmarks/peers.py`` (BENCHMARKS.md
has the commands and the full tables):

=========================  ============  ======================  ======================
workload (B, T, I, H)      cell          A: explicit / autodiff  B: explicit / autodiff
=========================  ============  ======================  ======================
book (150, 28, 28, 150)    BasicRNNCell  3.44 / 4.73             6.72 / 9.42
book (150, 28, 28, 150)    LSTMCell      13.00 / 14.47           25.63 / 30.58
book (150, 28, 28, 150)    GRUCell       12.87 / 12.90           25.50 / 28.32
long (32, 1000, 32, 128)   LSTMCell      160.2 / 222.4           223.7 / 375.5
=========================  ============  ======================  ======================

The explicit BPTT was as fast or faster at every shape measured, on both machines, so the rule
looks at the cell only: the explicit BPTT for the built-in cells; autodiff for cells of users'
own, since the generic explicit BPTT (``bptt_generic.py``) recomputes each step in its backward
loop and measured slower for gated cells.

Unrolling (``DEFAULT_UNROLL``, the time steps per loop iteration when the caller gives none) is 1
for every cell, shape and backend. On the CPU (machine C, ``benchmarks/bptt_rules.py --unrolls
1,2,4,8,1 --modes fused``, at the book's, a long (T=1000) and a small (B=32, T=50, H=32) shape),
factors 2, 4 and 8 were slower or within the spread for BasicRNN and LSTM at every shape and for
GRU at the long and small ones. GRU at the book's shape gained: 0.91-0.93x at 2 or 4 on one device,
0.94-1.00x in the split training loop that ``rnnkit train`` runs (``benchmarks/ab_variants.py
--experiments unroll``), too little and too shape-bound for a rule of its own. No GPU has been
available to measure unrolling there.

XLA:CPU's compiler options: ``make_steps`` (the training loop of ``fit`` and ``rnnkit train``)
compiles a model with an LSTM layer on CPU devices with XLA:CPU's older fusion emitters
(``loop_compiler_options``). In the book's LSTM training loop (machine C, AMD EPYC, 2 cores) they
took 0.82-0.96x the time of the default emitters split across two devices and 0.92-0.94x on one,
in interleaved runs (``benchmarks/ab_variants.py --experiments fusion-emitters --loop``); for
BasicRNN and GRU 0.98-1.05x, for the LSTM step called once a step (``make_train_step``)
1.01-1.05x, so those keep the default. On long sequences (``--long``: T=1000) the LSTM loop took
1.00-1.02x: the rule does not look at T, as the cost there is within the spread. In a profile of
the split LSTM loop with the default emitters, the kernel that joins the gradients into the
all-reduce's flat array took 11.9 ms a step summed over both pool threads, 0.55 ms with the older
ones; but averaging the gradients array by array, with no such kernel, was no faster, and one
device gains too, so that kernel alone does not explain it (BENCHMARKS.md, machine C).

On a GPU, ``"auto"`` hands LSTM layers that cuDNN computes exactly to cuDNN (``cudnn.py``)
before this rule applies. No GPU has been available to measure that choice.
"""

import jax

from rnnkit.cells import LSTMCell

# Cells whose default loop is the explicit BPTT (by class name: the rule is data, not code).
FUSED_BY_DEFAULT = frozenset({"BasicRNNCell", "LSTMCell", "GRUCell"})

# Time steps per compiled loop iteration when the caller gives none.
DEFAULT_UNROLL = 1


def prefer_fused(cell):
    """Whether the explicit BPTT is the default loop for ``cell`` (a fusable cell)."""
    return type(cell).__name__ in FUSED_BY_DEFAULT


# XLA:CPU's compiler options for the training loop of models with an LSTM layer.
OLDER_FUSION_EMITTERS = {"xla_cpu_use_fusion_emitters": False}


def loop_compiler_options(model, devices, bptt):
    """The compiler options ``make_steps`` compiles ``model``'s training loop with, on
    ``devices`` (None: JAX's default device): XLA:CPU's older fusion emitters for a model with an
    LSTM layer on the explicit BPTT (``bptt`` "auto" or "fused") on CPU devices, else none."""
    platform = (devices[0] if devices else jax.devices()[0]).platform
    if platform != "cpu" or bptt not in ("auto", "fused"):
        return {}

    def lstm(node):  # the built-in class itself: a subclass runs its own step, not bptt.py's
        return type(node) is LSTMCell

    return OLDER_FUSION_EMITTERS if any(map(lstm, jax.tree.leaves(model, is_leaf=lstm))) else {}
