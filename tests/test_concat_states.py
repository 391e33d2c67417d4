"""The chapter's deeper MNIST models: with ``concat_states`` the dense layer reads every layer's
final hidden state side by side (the book's ``tf.concat(axis=1, values=states)``); off by
default; a run with it resumes to the same metrics."""

import jax
import numpy as np
import pytest

import rnnkit as rk
from rnnkit import dynamic_rnn
from rnnkit.cli import build_parser
from rnnkit.model import SequenceClassifier, all_hidden, build_model, top_hidden
from support import TINY, metric_values, quiet_fit


@pytest.mark.parametrize("cell, activation", [("basic", "relu"), ("lstm", "tanh"),
                                              ("gru", "tanh")])
def test_the_dense_layer_reads_every_layers_last_hidden_state(cell, activation):
    config = TINY.replace(cell=cell, activation=activation, layers=3, concat_states=True)
    model = build_model(config, key=jax.random.key(1))
    assert model.concat_states and model.dense.input_size == 3 * TINY.units
    images = jax.random.uniform(jax.random.key(2), (3, 784))
    x, lasts = images.reshape(3, 28, 28), []
    for layer in model.cell.cells:  # one layer after another: its outputs feed the next
        x, _ = dynamic_rnn(layer, x)
        lasts.append(x[:, -1])
    expected = np.concatenate(lasts, axis=1) @ model.dense.w + model.dense.b  # [B, 10]
    np.testing.assert_allclose(model(images), expected, rtol=1e-5, atol=1e-6)
    _, state = dynamic_rnn(model.cell, images.reshape(3, 28, 28))
    np.testing.assert_allclose(all_hidden(state)[:, -TINY.units:], top_hidden(state))


def test_it_is_off_by_default_and_one_layer_reads_the_same_either_way():
    assert not build_model(TINY, key=jax.random.key(0)).concat_states
    assert build_parser().parse_args(["train", "--concat-states"]).concat_states is True
    images = jax.random.uniform(jax.random.key(2), (3, 784))
    plain = build_model(TINY, key=jax.random.key(0))
    concat = build_model(TINY.replace(concat_states=True), key=jax.random.key(0))
    np.testing.assert_array_equal(plain(images), concat(images))


def test_a_dense_layer_of_another_size_is_refused():
    keys = jax.random.split(jax.random.key(0), 3)
    cell = rk.MultiRNNCell([rk.LSTMCell(28, 8, key=keys[0]), rk.LSTMCell(8, 8, key=keys[1])])
    with pytest.raises(ValueError, match="every layer's hidden size summed, 16, got 8"):
        SequenceClassifier(cell, rk.Dense(8, 10, key=keys[2]), concat_states=True)
    with pytest.raises(ValueError, match="its output_size, 8, got 16"):
        SequenceClassifier(cell, rk.Dense(16, 10, key=keys[2]))


def test_a_run_with_concatenated_states_resumes_to_the_same_metrics(tmp_path):
    config = TINY.replace(layers=2, activation="relu", concat_states=True, epochs=3)
    quiet_fit(config, tmp_path / "straight")
    quiet_fit(config.replace(epochs=1), tmp_path / "resumed")
    quiet_fit(config, tmp_path / "resumed", resume=True)
    assert metric_values(tmp_path / "straight") == metric_values(tmp_path / "resumed")
