"""Bad input fails at the public boundary, with a message that names the argument, the expected
and the actual value; and what is deliberately not checked under ``jit``."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit

KEY = jax.random.PRNGKey(0)
B, T, I, H = 2, 5, 3, 4
LSTM = rnnkit.LSTMCell(I, H, key=KEY)
GRU = rnnkit.GRUCell(I, H, key=KEY)
X = np.zeros((B, T, I), np.float32)


def steps(x):
    return [x[:, t] for t in range(x.shape[1])]


def raises(error, *fragments):
    """``pytest.raises`` whose message must contain every fragment (plain text, not regex)."""
    return pytest.raises(error, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


UNROLLS = {
    "static_rnn": lambda x, **kw: rnnkit.static_rnn(LSTM, steps(x), **kw),
    "dynamic_rnn": lambda x, **kw: rnnkit.dynamic_rnn(LSTM, x, **kw),
    "bidirectional_dynamic_rnn": lambda x, **kw: rnnkit.bidirectional_dynamic_rnn(
        LSTM, GRU, x, **{k.replace("initial_state", "initial_state_fw"): v for k, v in kw.items()}),
}


@pytest.mark.parametrize("unroll", UNROLLS)
def test_feature_size_differs_from_the_cells_input_size(unroll):
    with raises(ValueError, "inputs", "input_size", "expects 3", "got 4"):
        UNROLLS[unroll](np.zeros((B, T, I + 1), np.float32))


@pytest.mark.parametrize("unroll, shape, expected", [
    ("dynamic_rnn", (B, I), "rank-3"),
    ("bidirectional_dynamic_rnn", (B, T, I, 1), "rank-3"),
])
def test_wrong_rank(unroll, shape, expected):
    with raises(ValueError, "inputs", expected, f"got shape {shape}"):
        UNROLLS[unroll](np.zeros(shape, np.float32))


def test_wrong_rank_of_a_static_rnn_step():
    with raises(ValueError, "inputs[0]", "rank-2", f"got shape {(B, T, I)}"):
        rnnkit.static_rnn(LSTM, [X])


def test_static_rnn_steps_of_different_shapes():
    with raises(ValueError, "inputs[1]", f"expected shape {(B, I)}", f"got {(B + 1, I)}"):
        rnnkit.static_rnn(LSTM, [X[:, 0], np.zeros((B + 1, I), np.float32)])


@pytest.mark.parametrize("inputs", [[], X], ids=["empty_list", "array_not_list"])
def test_static_rnn_needs_a_non_empty_list(inputs):
    with raises(ValueError, "inputs", "non-empty list"):
        rnnkit.static_rnn(LSTM, inputs)


def test_dynamic_rnn_without_time_steps():
    with raises(ValueError, "inputs", "(2, 0, 3)"):
        rnnkit.dynamic_rnn(LSTM, np.zeros((B, 0, I), np.float32))


@pytest.mark.parametrize("unroll", UNROLLS)
def test_sequence_length_not_of_shape_batch(unroll):
    with raises(ValueError, "sequence_length", f"({B},)", f"got {(B, 1)}"):
        UNROLLS[unroll](X, sequence_length=np.full((B, 1), T))


def test_sequence_length_of_floats():
    with raises(TypeError, "sequence_length", "integer", "float32"):
        rnnkit.dynamic_rnn(LSTM, X, sequence_length=np.array([2.0, 5.0], np.float32))


@pytest.mark.parametrize("unroll", UNROLLS)
@pytest.mark.parametrize("bad", [-1, T + 1])
def test_concrete_lengths_outside_zero_to_t(unroll, bad):
    with raises(ValueError, "sequence_length", f"[0, T={T}]", f"got [{bad}]"):
        UNROLLS[unroll](X, sequence_length=[2, bad])


@pytest.mark.parametrize("unroll", UNROLLS)
def test_under_jit_lengths_are_not_checked_and_are_clipped_to_zero_and_t(unroll):
    """Traced lengths cannot be read: a length above T acts as T and one below 0 as 0."""
    x = np.asarray(jax.random.normal(KEY, (3, T, I)))
    jitted = jax.jit(lambda x, lengths: UNROLLS[unroll](x, sequence_length=lengths))
    got = jitted(x, jnp.array([T + 3, -2, 2]))
    want = UNROLLS[unroll](x, sequence_length=np.array([T, 0, 2]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, want)


def test_initial_state_of_the_wrong_structure():
    with raises(ValueError, "initial_state", "LSTMStateTuple", "got PyTreeDef(*)"):
        rnnkit.dynamic_rnn(LSTM, X, initial_state=jnp.zeros((B, H)))


def test_initial_state_of_the_wrong_shape():
    state = rnnkit.LSTMStateTuple(jnp.zeros((B, H)), jnp.zeros((B, H + 1)))
    with raises(ValueError, "initial_state", f"expected shape {(B, H)}", ".h",
                f"got {(B, H + 1)}"):
        rnnkit.dynamic_rnn(LSTM, X, initial_state=state)


def test_initial_state_for_another_batch_size():
    with raises(ValueError, "initial_state", f"expected shape {(B, H)}", f"got {(B + 1, H)}"):
        rnnkit.static_rnn(GRU, steps(X), initial_state=jnp.zeros((B + 1, H)))


def test_multi_rnn_cell_sizes_that_do_not_chain():
    with raises(ValueError, "cells", "layer 1", "size 5", "size 4", "chain"):
        rnnkit.MultiRNNCell([LSTM, rnnkit.GRUCell(5, H, key=KEY)])


def test_multi_rnn_cell_without_cells():
    with raises(ValueError, "cells", "at least one"):
        rnnkit.MultiRNNCell([])


@pytest.mark.parametrize("name", ["input_keep_prob", "output_keep_prob", "state_keep_prob"])
@pytest.mark.parametrize("value", [0, 0.0, 1.5, -0.1, True, "0.5"])
def test_keep_probability_outside_zero_one(name, value):
    with raises(ValueError, name, "(0, 1]", f"got {value!r}"):
        rnnkit.DropoutWrapper(LSTM, **{name: value})


@pytest.mark.parametrize("value", [1, 1.0, 0.5, np.float64(0.5), np.float32(0.5)])
def test_keep_probability_accepts_any_real_number_in_range(value):
    wrapper = rnnkit.DropoutWrapper(LSTM, output_keep_prob=value)
    assert wrapper.output_keep_prob == float(value)


def test_residual_wrapper_needs_equal_input_and_output_sizes():
    with raises(ValueError, "cell", "ResidualWrapper", "input_size == output_size", "3 != 4"):
        rnnkit.ResidualWrapper(LSTM)


@pytest.mark.parametrize("build", [
    lambda: rnnkit.BasicRNNCell(I, H, activation="tanhh", key=KEY),
    lambda: rnnkit.BasicRNNCell.from_weights(LSTM.w_x[:, :H], LSTM.w_h[:, :H], LSTM.b[:H],
                                             activation="tanhh"),
    lambda: rnnkit.Dense(I, H, activation="tanhh", key=KEY),
], ids=["BasicRNNCell", "from_weights", "Dense"])
def test_unknown_activation_name(build):
    with raises(ValueError, "activation", "'relu'", "'tanh'", "got 'tanhh'"):
        build()


def test_replace_an_unknown_field():
    with raises(TypeError, "LSTMCell", "w_y"):
        rnnkit.replace(LSTM, w_y=LSTM.w_h)
