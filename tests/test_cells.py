"""One step of every cell and wrapper against a float64 NumPy reference of its equations.

The references below are written from the equations (TF1 semantics, rnnkit's gate order), not
from rnnkit's code: LSTM ``i, f, g, o`` with ``forget_bias`` on ``f`` and TF1 peepholes (``i, f``
see ``c_prev``, ``o`` sees ``c_new``); GRU ``r, z, n`` with ``h' = (1 - z) n + z h``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit

B, I, H = 4, 3, 5  # batch, input features, units


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0.0)


def f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def random_array(rng, *shape):
    """Non-zero float32 weights of a size that keeps the gates away from saturation."""
    return rng.normal(scale=0.5, size=shape).astype(np.float32)


# ---- NumPy references: (cell, x [B, I], state) -> (output, new_state), all float64 ---------------

def ref_basic(cell, x, h, act):
    w_x, w_h, b = f64((cell.w_x, cell.w_h, cell.b))
    h = act(x @ w_x + h @ w_h + b)
    return h, h


def ref_lstm(cell, x, state):
    w_x, w_h, b = f64((cell.w_x, cell.w_h, cell.b))
    c, h = state
    z_i, z_f, z_g, z_o = np.split(x @ w_x + h @ w_h + b, 4, axis=-1)
    p_i, p_f, p_o = (0.0, 0.0, 0.0) if cell.peepholes is None else f64(cell.peepholes)
    c_new = (sigmoid(z_f + cell.forget_bias + p_f * c) * c
             + sigmoid(z_i + p_i * c) * np.tanh(z_g))
    h_new = sigmoid(z_o + p_o * c_new) * np.tanh(c_new)
    return h_new, rnnkit.LSTMStateTuple(c_new, h_new)


def ref_gru(cell, x, h):
    w_x, w_h, b = f64((cell.w_x, cell.w_h, cell.b))
    (wx_r, wx_z, wx_n), (wh_r, wh_z, wh_n) = np.split(w_x, 3, 1), np.split(w_h, 3, 1)
    b_r, b_z, b_n = np.split(b, 3)
    if cell.b_h is not None:  # reset_after: r multiplies the recurrent term with its own bias
        bh_r, bh_z, bh_n = np.split(f64(cell.b_h), 3)
        r = sigmoid(x @ wx_r + b_r + h @ wh_r + bh_r)
        z = sigmoid(x @ wx_z + b_z + h @ wh_z + bh_z)
        n = np.tanh(x @ wx_n + b_n + r * (h @ wh_n + bh_n))
    else:  # TF1/Cho: r multiplies h before the matmul
        r = sigmoid(x @ wx_r + b_r + h @ wh_r)
        z = sigmoid(x @ wx_z + b_z + h @ wh_z)
        n = np.tanh(x @ wx_n + b_n + (r * h) @ wh_n)
    h = (1.0 - z) * n + z * h
    return h, h


def ref_projection(cell, x, state):
    output, state = ref_step(cell.cell, x, state)
    return output @ f64(cell.w) + f64(cell.b), state


def ref_residual(cell, x, state):
    output, state = ref_step(cell.cell, x, state)
    return x + output, state


def ref_multi(cell, x, states):
    new_states = []
    for layer, state in zip(cell.cells, states, strict=True):
        x, state = ref_step(layer, x, state)
        new_states.append(state)
    return x, tuple(new_states)


def ref_step(cell, x, state):
    """Dispatch on the cell's type; BasicRNNCell's activation is read from its static field."""
    if isinstance(cell, rnnkit.BasicRNNCell):
        act = {jnp.tanh: np.tanh, jax.nn.relu: relu}[cell.activation]
        return ref_basic(cell, x, state, act)
    refs = {rnnkit.LSTMCell: ref_lstm, rnnkit.GRUCell: ref_gru,
            rnnkit.OutputProjectionWrapper: ref_projection,
            rnnkit.ResidualWrapper: ref_residual, rnnkit.MultiRNNCell: ref_multi}
    return refs[type(cell)](cell, x, state)


# ---- cells with random non-zero weights ----------------------------------------------------------

def basic(rng, activation="tanh", i=I, h=H):
    return rnnkit.BasicRNNCell.from_weights(
        random_array(rng, i, h), random_array(rng, h, h), random_array(rng, h),
        activation=activation)


def lstm(rng, peepholes=False, forget_bias=1.0, i=I, h=H):
    p = tuple(random_array(rng, h) for _ in range(3)) if peepholes else None
    return rnnkit.LSTMCell.from_weights(
        random_array(rng, i, 4 * h), random_array(rng, h, 4 * h), random_array(rng, 4 * h),
        forget_bias=forget_bias, peepholes=p)


def gru(rng, reset_after, i=I, h=H):
    b_h = random_array(rng, 3 * h) if reset_after else None
    return rnnkit.GRUCell.from_weights(
        random_array(rng, i, 3 * h), random_array(rng, h, 3 * h), random_array(rng, 3 * h), b_h)


def projection(rng, output_size=2):
    wrapper = rnnkit.OutputProjectionWrapper(gru(rng, True), output_size,
                                             key=jax.random.PRNGKey(0))
    return rnnkit.replace(wrapper, w=random_array(rng, H, output_size),
                          b=random_array(rng, output_size))


CELLS = {
    "basic_tanh": lambda rng: basic(rng),
    "basic_relu": lambda rng: basic(rng, "relu"),
    "lstm": lambda rng: lstm(rng),
    "lstm_peepholes": lambda rng: lstm(rng, peepholes=True),
    "lstm_forget_bias_0.3": lambda rng: lstm(rng, peepholes=True, forget_bias=0.3),
    "gru_reset_after": lambda rng: gru(rng, True),
    "gru_reset_before": lambda rng: gru(rng, False),
    "output_projection": projection,
    "residual": lambda rng: rnnkit.ResidualWrapper(lstm(rng, i=H)),
    "multi": lambda rng: rnnkit.MultiRNNCell([lstm(rng, peepholes=True, h=4),
                                              gru(rng, False, i=4), basic(rng, "relu", i=H)]),
}


def random_state(rng, cell, batch_size=B):
    return jax.tree.map(lambda z: random_array(rng, *z.shape), cell.zero_state(batch_size))


@pytest.mark.parametrize("name", CELLS)
def test_cell_step_matches_numpy_reference(name):
    rng = np.random.default_rng(0)
    cell = CELLS[name](rng)
    x = random_array(rng, B, cell.input_size)
    state = random_state(rng, cell)
    output, new_state = cell(x, state)
    want_output, want_state = ref_step(cell, f64(x), f64(state))
    np.testing.assert_allclose(output, want_output, rtol=1e-5, atol=1e-5)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                 new_state, want_state)


@pytest.mark.parametrize("activation", [None, "relu", "tanh"])
def test_dense_matches_numpy_reference(activation):
    rng = np.random.default_rng(1)
    dense = rnnkit.Dense(I, 2, activation=activation, key=jax.random.PRNGKey(0))
    dense = rnnkit.replace(dense, w=random_array(rng, I, 2), b=random_array(rng, 2))
    x = random_array(rng, B, I)
    y = x.astype(np.float64) @ f64(dense.w) + f64(dense.b)
    y = {None: y, "relu": relu(y), "tanh": np.tanh(y)}[activation]
    np.testing.assert_allclose(dense(x), y, rtol=1e-5, atol=1e-6)
    assert (dense.input_size, dense.output_size) == (I, 2)


# ---- the book's manual RNN (section 1.1) is BasicRNNCell under static_rnn and dynamic_rnn --------

X0_BATCH = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 0, 1]], np.float32)  # t = 0
X1_BATCH = np.array([[9, 8, 7], [0, 0, 0], [6, 5, 4], [3, 2, 1]], np.float32)  # t = 1


def test_book_manual_two_steps_equal_static_and_dynamic_rnn():
    rng = np.random.default_rng(42)
    # Small weights so that the book's large inputs do not saturate every tanh to +-1.
    wx, wy, b = (0.1 * rng.normal(size=s).astype(np.float32) for s in [(3, 5), (5, 5), (5,)])
    y0 = np.tanh(X0_BATCH @ wx.astype(np.float64) + b)
    y1 = np.tanh(y0 @ wy + X1_BATCH @ wx.astype(np.float64) + b)
    assert 0.1 < np.abs(y1).max() < 0.999  # the comparison is not between saturated values

    cell = rnnkit.BasicRNNCell.from_weights(wx, wy, b)
    (s0, s1), s_state = rnnkit.static_rnn(cell, [X0_BATCH, X1_BATCH])
    d_outputs, d_state = rnnkit.dynamic_rnn(cell, np.stack([X0_BATCH, X1_BATCH], axis=1))
    for got in (s0, d_outputs[:, 0]):
        np.testing.assert_allclose(got, y0, rtol=1e-5, atol=1e-6)
    for got in (s1, s_state, d_outputs[:, 1], d_state):
        np.testing.assert_allclose(got, y1, rtol=1e-5, atol=1e-6)


# ---- sizes come from the weights -----------------------------------------------------------------

@pytest.mark.parametrize("name, output_size, state_size", [
    ("basic_tanh", H, H),
    ("lstm_peepholes", H, rnnkit.LSTMStateTuple(H, H)),
    ("gru_reset_before", H, H),
    ("output_projection", 2, H),
    ("multi", H, (rnnkit.LSTMStateTuple(4, 4), H, H)),
])
def test_sizes_and_zero_state_follow_the_weights(name, output_size, state_size):
    cell = CELLS[name](np.random.default_rng(0))
    assert (cell.input_size, cell.output_size, cell.state_size) == (I, output_size, state_size)
    zeros = cell.zero_state(7)
    assert jax.tree.map(lambda z: z.shape, zeros) == jax.tree.map(lambda n: (7, n), state_size)
    assert all(z.dtype == jnp.float32 and not z.any() for z in jax.tree.leaves(zeros))
    assert jax.tree.leaves(cell.zero_state(2, jnp.bfloat16))[0].dtype == jnp.bfloat16


def test_constructed_cells_have_the_documented_shapes():
    key = jax.random.PRNGKey(0)
    lstm_cell = rnnkit.LSTMCell(I, H, use_peepholes=True, key=key)
    gru_cell = rnnkit.GRUCell(I, H, reset_after=False, key=key)
    shapes = (lstm_cell.w_x.shape, lstm_cell.w_h.shape, lstm_cell.b.shape)
    assert shapes == ((I, 4 * H), (H, 4 * H), (4 * H,))
    assert [p.shape for p in lstm_cell.peepholes] == [(H,)] * 3
    assert lstm_cell.forget_bias == 1.0 and lstm_cell.use_peepholes
    assert (gru_cell.w_x.shape, gru_cell.b_h, gru_cell.reset_after) == ((I, 3 * H), None, False)
    assert rnnkit.GRUCell(I, H, key=key).b_h.shape == (3 * H,)


# ---- wrappers: DropoutWrapper --------------------------------------------------------------------

def echo_cell(size):
    """A BasicRNNCell whose output is its input (identity activation, ``w_x = 1``, ``w_h = 0``)."""
    return rnnkit.BasicRNNCell.from_weights(np.eye(size, dtype=np.float32),
                                            np.zeros((size, size), np.float32),
                                            np.zeros(size, np.float32), activation="identity")


def assert_dropped(got, undropped, keep_prob):
    """Each unit is exactly 0 or ``undropped / keep_prob``; about ``keep_prob`` of them are kept."""
    got, undropped = np.asarray(got), np.asarray(undropped)
    kept = got != 0
    np.testing.assert_allclose(got[kept], undropped[kept] / keep_prob, rtol=1e-6)
    assert abs(kept.mean() - keep_prob) < 0.06, kept.mean()


def test_dropout_wrapper_without_key_is_the_identity():
    rng = np.random.default_rng(2)
    cell = lstm(rng)
    wrapped = rnnkit.DropoutWrapper(cell, input_keep_prob=0.5, output_keep_prob=0.5,
                                    state_keep_prob=0.5, variational_recurrent=True)
    x, state = random_array(rng, B, I), random_state(rng, cell)
    jax.tree.map(np.testing.assert_array_equal, wrapped(x, state), cell(x, state))
    xs = random_array(rng, B, 3, I)
    jax.tree.map(np.testing.assert_array_equal,
                 rnnkit.dynamic_rnn(wrapped, xs), rnnkit.dynamic_rnn(cell, xs))


def test_dropout_wrapper_input_output_and_state_masks():
    rng = np.random.default_rng(3)
    key = jax.random.PRNGKey(7)
    n = 40  # 40 x 40 units: enough to see the keep rate
    x = random_array(rng, n, n)

    echo = rnnkit.DropoutWrapper(echo_cell(n), input_keep_prob=0.75)
    output, _ = echo(x, echo.zero_state(n), key=key)
    assert_dropped(output, x, 0.75)

    cell = basic(rng, i=n, h=n)
    state = random_state(rng, cell, n)
    undropped, _ = cell(x, state)
    output, new_state = rnnkit.DropoutWrapper(cell, output_keep_prob=0.75)(x, state, key=key)
    assert_dropped(output, undropped, 0.75)
    np.testing.assert_array_equal(new_state, undropped)  # the state is not the output

    output, new_state = rnnkit.DropoutWrapper(cell, state_keep_prob=0.75)(x, state, key=key)
    np.testing.assert_array_equal(output, undropped)
    assert_dropped(new_state, undropped, 0.75)


@pytest.mark.parametrize("stacked", [False, True], ids=["lstm", "multi_rnn_cell_of_lstms"])
def test_state_dropout_never_drops_an_lstm_cell_state(stacked):
    """TF1's DropoutWrapper filters every LSTMStateTuple in the state: ``c`` kept, ``h`` dropped."""
    rng = np.random.default_rng(4)
    n = 40
    cell = lstm(rng, i=n, h=n)
    if stacked:
        cell = rnnkit.MultiRNNCell([cell, lstm(rng, i=n, h=n)])
    x, state = random_array(rng, n, n), random_state(rng, cell, n)
    _, undropped = cell(x, state)
    _, dropped = rnnkit.DropoutWrapper(cell, state_keep_prob=0.75)(
        x, state, key=jax.random.PRNGKey(0))
    if not stacked:
        dropped, undropped = [dropped], [undropped]
    for got, want in zip(dropped, undropped, strict=True):
        np.testing.assert_array_equal(got.c, want.c)
        assert_dropped(got.h, want.h, 0.75)


@pytest.mark.parametrize("variational", [True, False])
@pytest.mark.parametrize("where", ["input", "output"])
def test_variational_masks_repeat_over_time_and_others_do_not(variational, where):
    n, steps = 16, 4
    wrapped = rnnkit.DropoutWrapper(echo_cell(n), **{f"{where}_keep_prob": 0.5},
                                    variational_recurrent=variational)
    outputs, _ = rnnkit.dynamic_rnn(wrapped, np.ones((n, steps, n), np.float32),
                                    key=jax.random.PRNGKey(3))
    masks = np.asarray(outputs) != 0  # [B, T, n]
    assert set(np.unique(outputs)) == {0.0, 2.0}
    same_every_step = all((masks[:, t] == masks[:, 0]).all() for t in range(steps))
    assert same_every_step == variational


# ---- cells are pytrees: jit compiles once per shape, grad takes the cell -------------------------

TRACES = []


@jax.jit
def _step_loss(cell, x, state):
    TRACES.append(type(cell).__name__)  # runs only while tracing
    output, new_state = cell(x, state)
    return jnp.sum(output) + sum(jnp.sum(s) for s in jax.tree.leaves(new_state))


def test_jitted_cell_function_compiles_once_for_the_same_shapes():
    rng = np.random.default_rng(5)
    first, second = lstm(rng, peepholes=True), lstm(rng, peepholes=True)  # same shapes
    x, state = random_array(rng, B, I), random_state(rng, first)
    TRACES.clear()
    a = _step_loss(first, x, state)
    b = _step_loss(second, x + 1.0, state)
    assert TRACES == ["LSTMCell"] and _step_loss._cache_size() == 1
    assert a != b  # the second call saw the new weights, not a stale constant
    grads = jax.grad(_step_loss)(first, x, state)
    assert type(grads) is rnnkit.LSTMCell and len(grads.peepholes) == 3
    assert all(np.abs(g).sum() > 0 for g in jax.tree.leaves(grads))
