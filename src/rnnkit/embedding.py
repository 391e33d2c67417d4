"""An embedding layer: a trainable vector per id, looked up in a table."""

import jax
import jax.numpy as jnp

from rnnkit.checks import check_size
from rnnkit.pytree import pytree_dataclass, set_fields


@pytree_dataclass
class Embedding:
    """``ids [...] -> table[ids]  [..., E]``; ``table [V, E]`` starts uniform in [-1, 1), as the
    book's ``tf.random_uniform([vocabulary_size, embedding_size], -1.0, 1.0)``.

    Args:
      vocab_size: ``V``; embedding_size: ``E``; key: PRNG key for the table.
    """

    table: jax.Array

    def __init__(self, vocab_size, embedding_size, *, key):
        shape = (check_size("vocab_size", vocab_size), check_size("embedding_size", embedding_size))
        set_fields(self, table=jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0))

    vocab_size = property(lambda self: self.table.shape[0])
    embedding_size = property(lambda self: self.table.shape[1])

    def __call__(self, ids):
        return self.table[ids]  # [..., E]
