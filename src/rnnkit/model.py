"""The book's sequence classifier: an image read row by row by an RNN, then a dense layer.

What it computes, as in the book's MNIST example::

    X = images.reshape(-1, n_steps, n_inputs)        # [B, 28, 28]: one row of pixels per step
    outputs, states = dynamic_rnn(cell, X)
    logits = dense(top_hidden(states))              # [B, 10]

``top_hidden`` is the top layer's state: ``h`` of an ``LSTMStateTuple``, the last layer's state
of a ``MultiRNNCell``. With ``concat_states`` the dense layer reads ``all_hidden(states)``
instead, every layer's final state side by side (the book's deep RNN: ``tf.concat(axis=1,
values=states)``).
"""

import jax
import jax.numpy as jnp
import optax

from rnnkit.cells import BasicRNNCell, Dense, GRUCell, LSTMCell, LSTMStateTuple
from rnnkit.pytree import pytree_dataclass, set_fields, static_field
from rnnkit.unroll import dynamic_rnn
from rnnkit.wrappers import MultiRNNCell

N_STEPS, N_INPUTS, N_OUTPUTS = 28, 28, 10  # MNIST: 28 rows of 28 pixels, 10 classes


@pytree_dataclass
class SequenceClassifier:
    """Any cell unrolled with ``dynamic_rnn``, then ``Dense`` on the final state -> logits.

    The number of steps is ``images.shape[-1] // cell.input_size`` (28 for MNIST). The dense
    layer reads the top layer's hidden state, or with ``concat_states`` every layer's
    (``all_hidden``).
    """

    cell: object
    dense: Dense
    concat_states: bool = static_field(default=False)

    def __init__(self, cell, dense, *, concat_states=False):
        read = all_hidden if concat_states else top_hidden
        size = jax.eval_shape(lambda: read(cell.zero_state(1))).shape[-1]
        if dense.input_size != size:
            what = "every layer's hidden size summed" if concat_states else "its output_size"
            raise ValueError(f"dense: expected input_size == the cell's {what}, {size}, got "
                             f"{dense.input_size}")
        set_fields(self, cell=cell, dense=dense, concat_states=bool(concat_states))

    def __call__(self, images, *, key=None, bptt="auto"):
        """``images [B, T*I]`` (or ``[B, T, I]``) -> logits ``[B, classes]``.

        ``bptt`` is ``dynamic_rnn``'s: it changes how gradients are computed, not the model, so
        it is an argument of the call rather than a field (checkpoints do not depend on it).
        """
        n_inputs = self.cell.input_size
        if images.shape[-1] % n_inputs:
            raise ValueError(f"images: expected rows of a multiple of {n_inputs} pixels, "
                             f"got shape {images.shape}")
        x = images.reshape(images.shape[0], -1, n_inputs)  # [B, T, I]
        _, state = dynamic_rnn(self.cell, x, key=key, bptt=bptt)
        return self.readout(state)

    def readout(self, state):
        """The logits ``[B, classes]`` of the cell's final state."""
        features = all_hidden(state) if self.concat_states else top_hidden(state)  # [B, F]
        return self.dense(features)


def top_hidden(state):
    """The top layer's hidden state ``[B, H]`` of any cell's final state."""
    if isinstance(state, LSTMStateTuple):
        return state.h
    if isinstance(state, tuple):  # MultiRNNCell: one state per layer
        return top_hidden(state[-1])
    return state


def all_hidden(state):
    """Every layer's hidden state (``h`` of an LSTM), concatenated: ``[B, H_1 + ... + H_L]``."""
    if isinstance(state, tuple) and not isinstance(state, LSTMStateTuple):
        return jnp.concatenate([all_hidden(layer) for layer in state], axis=-1)
    return top_hidden(state)


def build_cell(kind, input_size, num_units, *, activation="tanh", key):
    """One layer: ``kind`` is "basic" (``BasicRNNCell``), "lstm" or "gru"."""
    if kind == "basic":
        return BasicRNNCell(input_size, num_units, activation=activation, key=key)
    if kind == "lstm":
        return LSTMCell(input_size, num_units, key=key)
    if kind == "gru":
        return GRUCell(input_size, num_units, key=key)
    raise ValueError(f"cell: expected one of basic, lstm, gru, got {kind!r}")


def build_model(config, *, key):
    """The classifier that ``config`` (a ``TrainConfig``) describes, weights drawn from ``key``."""
    *cell_keys, dense_key = jax.random.split(key, config.layers + 1)
    sizes = [N_INPUTS] + [config.units] * config.layers
    cells = [build_cell(config.cell, n_in, config.units, activation=config.activation, key=k)
             for n_in, k in zip(sizes, cell_keys)]
    cell = cells[0] if len(cells) == 1 else MultiRNNCell(cells)
    features = config.units * (config.layers if config.concat_states else 1)
    return SequenceClassifier(cell, Dense(features, N_OUTPUTS, key=dense_key),
                              concat_states=config.concat_states)


def per_example(model, images, labels, *, key=None, bptt="auto"):
    """Sparse softmax cross-entropy ``[B]`` and top-1 hits ``[B]`` (the book's ``in_top_k``)."""
    return scores(model(images, key=key, bptt=bptt), labels)


def scores(logits, labels):
    """``logits [B, classes]`` -> cross-entropy ``[B]`` and top-1 hits ``[B]`` (float 0/1)."""
    xentropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return xentropy, correct


def loss_and_accuracy(model, images, labels, *, key=None, bptt="auto"):
    """``(loss, accuracy)``: the batch means of ``per_example``; the loss is what Adam minimises."""
    xentropy, correct = per_example(model, images, labels, key=key, bptt=bptt)
    return jnp.mean(xentropy), jnp.mean(correct)
