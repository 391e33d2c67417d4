"""Per-example masks of variable-length batches (TF1's ``sequence_length`` semantics)."""

import jax
import jax.numpy as jnp


def select(valid, new, old):
    """Per example: ``new`` where ``valid [B]``, else ``old`` (any pytree of ``[B, ...]``)."""
    def pick(n, o):
        return jnp.where(valid.reshape(valid.shape + (1,) * (n.ndim - 1)), n, o)
    return jax.tree.map(pick, new, old)


def zero_where_invalid(valid, tree):
    """``tree`` where ``valid [B]``, zeros elsewhere."""
    return select(valid, tree, jax.tree.map(jnp.zeros_like, tree))
