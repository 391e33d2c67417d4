"""Speed settings that depend on measurements rather than on the maths.

- ``DEFAULT_UNROLL``: the time steps per compiled loop iteration when the caller gives none.
- ``loop_compiler_options``: the XLA compiler options ``make_steps`` compiles a training loop
  with: XLA:CPU's older fusion emitters for a model with a built-in LSTM layer on the explicit
  BPTT on CPU devices, else none.

Why each is what it is, with the figures: ``docs/design.md`` (sections "The unroll default" and
"The LSTM compiler-option rule"). Which loop runs a cell is ``rnnkit.loops.choose_loop``'s.
"""

import jax

from rnnkit.cells import builtin_kind

DEFAULT_UNROLL = 1

OLDER_FUSION_EMITTERS = {"xla_cpu_use_fusion_emitters": False}


def loop_compiler_options(model, devices, bptt):
    """The compiler options for ``model``'s training loop on ``devices`` (None: JAX's default
    device) with ``dynamic_rnn``'s ``bptt`` mode: ``OLDER_FUSION_EMITTERS`` for a model with a
    built-in LSTM layer, on the explicit BPTT ("auto" or "explicit"), on CPU devices; else {}."""
    platform = (devices[0] if devices else jax.devices()[0]).platform
    if platform != "cpu" or bptt not in ("auto", "explicit", "fused"):
        return {}

    def lstm(node):
        return builtin_kind(node) == "lstm"

    return OLDER_FUSION_EMITTERS if any(map(lstm, jax.tree.leaves(model, is_leaf=lstm))) else {}
