"""Bad input fails at the public boundary, with a message that names the argument, the expected
and the actual value; and what is deliberately not checked under ``jit``."""

import fractions
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


# ---- sizes of cells and layers, at construction --------------------------------------------------

SIZED = {
    "BasicRNNCell": lambda i, h: rnnkit.BasicRNNCell(i, h, key=KEY),
    "LSTMCell": lambda i, h: rnnkit.LSTMCell(i, h, key=KEY),
    "GRUCell": lambda i, h: rnnkit.GRUCell(i, h, key=KEY),
}


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True, None, np.float32(3)])
@pytest.mark.parametrize("which", ["input_size", "num_units"])
@pytest.mark.parametrize("cell", SIZED)
def test_cell_sizes_must_be_positive_ints(cell, which, bad):
    sizes = {"input_size": I, "num_units": H, which: bad}
    with raises(ValueError, which, "positive int", f"got {bad!r}"):
        SIZED[cell](sizes["input_size"], sizes["num_units"])


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", False])
@pytest.mark.parametrize("which", ["input_size", "output_size"])
def test_dense_sizes_must_be_positive_ints(which, bad):
    sizes = {"input_size": I, "output_size": 2, which: bad}
    with raises(ValueError, which, "positive int", f"got {bad!r}"):
        rnnkit.Dense(sizes["input_size"], sizes["output_size"], key=KEY)


@pytest.mark.parametrize("bad", [0, -1, 2.0])
def test_output_projection_size_must_be_a_positive_int(bad):
    with raises(ValueError, "output_size", "positive int", f"got {bad!r}"):
        rnnkit.OutputProjectionWrapper(LSTM, bad, key=KEY)


@pytest.mark.parametrize("size", [np.int64(3), np.int32(3)])
def test_numpy_integer_sizes_are_accepted(size):
    cell = rnnkit.GRUCell(size, size, key=KEY)
    assert (cell.input_size, cell.output_size) == (3, 3) and type(cell.input_size) is int


# ---- what an unroll accepts as inputs ------------------------------------------------------------

@pytest.mark.parametrize("unroll", ["static_rnn", "dynamic_rnn"])
def test_nested_lists_of_numbers_are_arrays(unroll):
    x = np.arange(B * T * I).reshape(B, T, I) / 10.0
    nested = x.tolist() if unroll == "dynamic_rnn" else [x[:, t].tolist() for t in range(T)]
    run = (lambda v: rnnkit.dynamic_rnn(LSTM, v)) if unroll == "dynamic_rnn" else (
        lambda v: (lambda o, s: (jnp.stack(o, 1), s))(*rnnkit.static_rnn(LSTM, v)))
    want = rnnkit.dynamic_rnn(LSTM, x.astype(np.float32))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), run(nested), want)


@pytest.mark.parametrize("bad, fragments", [
    ("abc", ("inputs", "numbers", "got str")),
    (np.array([[["a", "b", "c"]]]), ("inputs", "numbers", "<U1")),
    ([[[1.0, 2.0, 3.0]], [[1.0, 2.0]]], ("inputs", "ragged")),
    (np.ones((B, T, I), np.complex64), ("inputs", "real numbers", "complex64")),
    ([[[None, None, None]]], ("inputs", "numbers", "object")),
], ids=["str", "str_array", "ragged", "complex", "objects"])
@pytest.mark.parametrize("unroll", ["static_rnn", "dynamic_rnn", "bidirectional_dynamic_rnn"])
def test_inputs_that_are_not_arrays_of_numbers(unroll, bad, fragments):
    error = ValueError if "ragged" in fragments else TypeError
    if unroll == "static_rnn":
        fragments = ("inputs[0]",) + fragments[1:]
        bad = [bad if isinstance(bad, str) else (np.asarray(bad)[:, 0] if isinstance(
            bad, np.ndarray) else [row[0] for row in bad])]
        with raises(error, *fragments):
            rnnkit.static_rnn(LSTM, bad)
    else:
        with raises(error, *fragments):
            UNROLLS[unroll](bad)


# ---- the initial state's dtype -------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
@pytest.mark.parametrize("unroll", UNROLLS)
def test_initial_state_of_integers(unroll, dtype):
    state = jax.tree.map(lambda z: np.zeros(z.shape, dtype), LSTM.zero_state(B))
    with raises(TypeError, "initial_state", "floating", "float32", np.dtype(dtype).name, ".c"):
        UNROLLS[unroll](X, initial_state=state)


@pytest.mark.parametrize("unroll", UNROLLS)
def test_initial_state_of_another_float_dtype_is_cast_to_the_weights_dtype(unroll):
    state = jax.tree.map(lambda z: np.full(z.shape, 0.5), LSTM.zero_state(B))
    x = np.asarray(jax.random.normal(KEY, (B, T, I)))
    got = UNROLLS[unroll](x, initial_state=jax.tree.map(lambda s: s.astype(np.float16), state))
    want = UNROLLS[unroll](x, initial_state=jax.tree.map(lambda s: s.astype(np.float32), state))
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(got))
    jax.tree.map(np.testing.assert_array_equal, got, want)


# ---- cells of mixed dtypes -----------------------------------------------------------------------

@pytest.mark.parametrize("unroll", UNROLLS)
def test_cells_with_weights_of_two_dtypes_are_refused(unroll):
    mixed = rnnkit.replace(LSTM, w_h=LSTM.w_h.astype(jnp.bfloat16))
    run = {"static_rnn": lambda: rnnkit.static_rnn(mixed, steps(X)),
           "dynamic_rnn": lambda: rnnkit.dynamic_rnn(mixed, X),
           "bidirectional_dynamic_rnn": lambda: rnnkit.bidirectional_dynamic_rnn(GRU, mixed, X)}
    name = "cell_bw" if unroll == "bidirectional_dynamic_rnn" else "cell"
    with raises(ValueError, f"{name}:", "one floating dtype", "float32", ".w_x", "bfloat16",
                ".w_h", "astype"):
        run[unroll]()


def test_a_stack_of_layers_of_two_dtypes_is_refused():
    stack = rnnkit.MultiRNNCell([LSTM, jax.tree.map(lambda w: w.astype(jnp.float16),
                                                   rnnkit.GRUCell(H, H, key=KEY))])
    with raises(ValueError, "cell:", "float32", ".cells[0].w_x", "float16", ".cells[1].w_x"):
        rnnkit.dynamic_rnn(stack, X)


# ---- bidirectional: which cell -------------------------------------------------------------------

@pytest.mark.parametrize("which", ["cell_fw", "cell_bw"])
def test_bidirectional_names_the_cell_whose_input_size_differs(which):
    other = rnnkit.GRUCell(I + 2, H, key=KEY)
    cells = (other, GRU) if which == "cell_fw" else (GRU, other)
    with raises(ValueError, "inputs", which, f"expects {I + 2}", "input_size", f"got {I}"):
        rnnkit.bidirectional_dynamic_rnn(*cells, X)


# ---- keep probabilities: any concrete real number ------------------------------------------------

@pytest.mark.parametrize("value", [jnp.float32(0.5), jnp.array(0.5), np.array(0.5), jnp.int32(1),
                                   np.float16(0.25), jnp.bfloat16(0.5), fractions.Fraction(1, 2)])
def test_keep_probability_accepts_concrete_scalars_of_any_numeric_type(value):
    wrapper = rnnkit.DropoutWrapper(LSTM, input_keep_prob=value)
    assert wrapper.input_keep_prob == float(value) and type(wrapper.input_keep_prob) is float


@pytest.mark.parametrize("value", [np.bool_(True), jnp.array(True), jnp.float32(1.5),
                                   np.array(0.0), np.array([0.5]), np.float32(np.nan), None])
def test_keep_probability_refuses_bools_arrays_and_values_out_of_range(value):
    with raises(ValueError, "input_keep_prob", "(0, 1]", f"got {value!r}"):
        rnnkit.DropoutWrapper(LSTM, input_keep_prob=value)


def test_keep_probability_must_be_concrete():
    make = jax.jit(lambda p: rnnkit.DropoutWrapper(LSTM, output_keep_prob=p).cell.w_x)
    with raises(ValueError, "output_keep_prob", "concrete", "(0, 1]", "traced"):
        make(0.5)
