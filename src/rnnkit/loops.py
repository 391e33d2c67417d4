"""Which time loop runs a cell: the one decision behind ``dynamic_rnn``'s ``bptt`` argument.

``choose_loop`` looks at the cell's layers (a ``MultiRNNCell``'s cells, through any
``DropoutWrapper``), the inputs' dtype, whether there are sequence lengths, whether dropout is
active, and the requested mode, and returns a loop per layer:

=======================  ==========================================================================
``Loop.CUDNN``           cuDNN's fused LSTM (``cudnn.py``): GPU, float32, built-in ``LSTMCell``
                         without peepholes, no lengths, no dropout
``Loop.EXPLICIT``        the explicit BPTT of a built-in cell (``bptt.py``)
``Loop.GENERIC``         the generic explicit BPTT of a split cell (``bptt_generic.py``)
``Loop.AUTODIFF``        ``jax.grad`` of one ``lax.scan`` over the whole cell (returned alone)
=======================  ==========================================================================

Modes: "auto" takes cuDNN where it applies, else the explicit BPTT when every layer is a
built-in cell, else autodiff (the generic explicit BPTT recomputes each step in its backward
loop: see ``docs/design.md``); "explicit" takes the explicit BPTT of every layer (built-in or
split) or refuses; "cudnn" takes cuDNN or refuses; "autodiff" always autodiff. "fused" is an
older name of "explicit" and still accepted.

Active dropout keeps the explicit BPTT when it sits outside the recurrence: ``DropoutWrapper``s
around the layers or the stack, with input and output dropout only; the unroll then applies
their masks to each layer's whole input and output sequences (``wrappers.sequence_dropout``).
State dropout (``state_keep_prob < 1``) acts inside the recurrence and runs on autodiff.
"""

import enum

import jax
import jax.numpy as jnp

from rnnkit import bptt
from rnnkit.cells import builtin_kind
from rnnkit.config import BPTT_ALIASES, BPTT_MODES
from rnnkit.cudnn import cudnn_backend, cudnn_computes
from rnnkit.protocols import SplitCell
from rnnkit.wrappers import DropoutWrapper, MultiRNNCell, has_dropout


class Loop(enum.Enum):
    CUDNN = "cudnn"
    EXPLICIT = "explicit"
    GENERIC = "generic"
    AUTODIFF = "autodiff"


def canonical_mode(mode):
    """``mode`` with its alias resolved ("fused" -> "explicit"); refuses unknown modes."""
    mode = BPTT_ALIASES.get(mode, mode) if isinstance(mode, str) else mode
    if mode not in BPTT_MODES:
        raise ValueError(f"bptt: expected one of {', '.join(BPTT_MODES)} (or the alias "
                         f"'fused' for 'explicit'), got {mode!r}")
    return mode


def layers(cell):
    """The layers the loop runs one after another: a ``MultiRNNCell``'s cells, else the cell
    itself; a ``DropoutWrapper`` is looked through (without a key it is the identity)."""
    cell = _unwrap(cell)
    return [_unwrap(c) for c in cell.cells] if isinstance(cell, MultiRNNCell) else [cell]


def choose_loop(cell, *, dtype, has_lengths=False, dropout=False, mode="auto", gpu=None):
    """The loop of each layer of ``cell``, as a tuple; ``(Loop.AUTODIFF,)`` for the whole cell.

    Args:
      dtype: the dtype the unroll computes in; has_lengths: a ``sequence_length`` was given;
        dropout: the ``DropoutWrapper``s in the cell get a key; mode: ``dynamic_rnn``'s ``bptt``.
      gpu: whether cuDNN's kernels are at hand; None asks the backend (``cudnn_backend``).
    Raises:
      ValueError: ``mode`` is unknown, or "cudnn"/"explicit" cannot run this cell.
    """
    mode = canonical_mode(mode)
    parts = layers(cell)
    gpu = cudnn_backend() if gpu is None else gpu
    if (mode in ("auto", "cudnn") and gpu and dtype == jnp.float32 and not has_lengths
            and not dropout and all(map(cudnn_computes, parts))):
        return (Loop.CUDNN,) * len(parts)
    if mode == "cudnn":
        raise ValueError(
            f"bptt: 'cudnn' needs a GPU backend with cuDNN (this one is "
            f"{jax.default_backend()!r}) and LSTMCell layers without peepholes, float32 weights "
            f"and inputs, no sequence_length and no active dropout; got {type(cell).__name__}"
            + (f" with {jnp.dtype(dtype).name} inputs" if dtype != jnp.float32 else "")
            + (" with sequence_length" if has_lengths else "")
            + (" with dropout" if dropout else ""))
    inside = dropout and not dropout_outside_recurrence(cell)
    explicit = None if inside else tuple(map(_explicit_loop, parts))
    if mode == "auto" and explicit and all(loop is Loop.EXPLICIT for loop in explicit):
        return explicit
    if mode == "explicit":
        if explicit is None or None in explicit:
            raise ValueError(
                "bptt: 'explicit' supports the built-in cells, split cells (rnnkit.protocols."
                "SplitCell: input_projection and recurrent_step) and MultiRNNCell stacks of "
                "them, with dropout on inputs and outputs only (a DropoutWrapper given a key "
                "with state_keep_prob < 1 needs autodiff); got "
                f"{type(cell).__name__}" + (" with state dropout" if inside else ""))
        return explicit
    return (Loop.AUTODIFF,)


def dropout_outside_recurrence(cell):
    """Whether every ``DropoutWrapper`` in ``cell`` drops only inputs and outputs and sits where
    ``layers`` looks through it (around the stack or a layer), so that its masks can be applied
    to whole sequences (``wrappers.sequence_dropout``) outside the layers' loops."""
    is_dropout = lambda node: isinstance(node, DropoutWrapper)  # noqa: E731
    wrappers = [n for n in jax.tree.leaves(cell, is_leaf=is_dropout) if is_dropout(n)]
    return (all(w.state_keep_prob >= 1.0 for w in wrappers)
            and not any(map(has_dropout, layers(cell))))


def _explicit_loop(layer):
    if builtin_kind(layer) is not None and bptt.supports(layer):
        return Loop.EXPLICIT
    return Loop.GENERIC if isinstance(layer, SplitCell) else None


def _unwrap(cell):
    while isinstance(cell, DropoutWrapper):
        cell = cell.cell
    return cell
