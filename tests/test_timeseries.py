"""The chapter's time series: data as the book draws it, both projections against a NumPy loop,
generation against re-running the model, truncated BPTT against one pass and a Python loop.

Models are small (8-16 units) so that compiling stays cheap; the book's 100-unit training run is
not repeated here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnkit
from rnnkit import stateful, timeseries
from rnnkit.generate import _generate, generate
from rnnkit.loops import Loop, choose_loop
from rnnkit.timeseries import SequenceRegressor, build_regressor, mse

KEY = jax.random.key(7)
TOL = dict(rtol=1e-5, atol=1e-5)


def tree_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


# ---- data -------------------------------------------------------------------------------------

class FixedDraw:
    """An rng whose draws are all ``u``: the start the notebook's printed instance had."""

    def __init__(self, u):
        self.u = u

    def random(self, shape):
        return np.full(shape, self.u)


def test_next_batch_reproduces_the_notebooks_printed_instance():
    t0 = 2.6116385076  # solved from the printout: X[0], y[0] and X[-1], y[-1] below
    X, y = timeseries.next_batch(FixedDraw(t0 / (30 - 20 * 0.1)), 1, 20)
    assert X.shape == y.shape == (1, 20, 1) and X.dtype == y.dtype == np.float32
    np.testing.assert_allclose([X[0, 0, 0], y[0, 0, 0]], [1.38452097, 2.05081182], atol=1e-6)
    np.testing.assert_allclose([X[0, -1, 0], y[0, -1, 0]], [-2.54795941, -3.28097239], atol=1e-6)


def test_next_batch_is_the_books_formula_on_a_generator():
    X, y = timeseries.next_batch(np.random.default_rng(3), 5, 7)
    t0 = np.random.default_rng(3).random((5, 1)) * (30 - 7 * 0.1)
    ts = t0 + np.arange(8) * 0.1
    ys = ts * np.sin(ts) / 3 + 2 * np.sin(5 * ts)
    np.testing.assert_array_equal(X[..., 0], ys[:, :-1].astype(np.float32))
    np.testing.assert_array_equal(y[..., 0], ys[:, 1:].astype(np.float32))
    held_out = timeseries.windows(3, 5, 7)
    np.testing.assert_array_equal(held_out[0], X)
    assert not np.array_equal(timeseries.windows(4, 5, 7)[0], X)


@pytest.mark.parametrize("call, message", [
    (lambda: timeseries.next_batch(np.random.default_rng(0), 2, 301), "at most 300, got 301"),
    (lambda: timeseries.next_batch(np.random.default_rng(0), 0, 20), "batch_size: expected a"),
    (lambda: build_regressor(projection="dense", key=KEY), "projection: expected one of"),
    (lambda: build_regressor(keep_prob=0.0, key=KEY), "keep_prob: expected a number in"),
    (lambda: build_regressor(layers=0, key=KEY), "layers: expected a positive int"),
    (lambda: timeseries.mean_squared_error(jnp.zeros((2, 3, 1)), jnp.zeros((2, 3))),
     r"targets: expected the predictions' shape \(2, 3, 1\), got \(2, 3\)"),
    (lambda: stateful.chunks(np.zeros((2, 10, 1)), 11),
     "chunk: expected at most the sequence length L=10, got T=11"),
    (lambda: stateful.chunks(np.zeros((2, 10, 1)), 0), "chunk: expected a positive int"),
])
def test_errors_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---- the model: both projections --------------------------------------------------------------

def numpy_regressor(cell, w, b, x):
    """The book's model as a NumPy loop: ``h = relu(x w_x + h w_h + b_h)``, ``y = h w + b``."""
    w_x, w_h, b_h = (np.asarray(a, np.float64) for a in (cell.w_x, cell.w_h, cell.b))
    h, ys = np.zeros((x.shape[0], w_h.shape[0])), []
    for t in range(x.shape[1]):
        h = np.maximum(x[:, t] @ w_x + h @ w_h + b_h, 0.0)
        ys.append(h @ np.asarray(w) + np.asarray(b))
    return np.stack(ys, axis=1), h


def test_wrapper_and_reshape_compute_the_same_function_on_the_explicit_bptt():
    X, y = timeseries.windows(0, 4, 12)
    reshape = build_regressor(units=16, key=KEY)
    wrapper = SequenceRegressor(rnnkit.replace(
        rnnkit.OutputProjectionWrapper(reshape.cell, 1, key=jax.random.key(99)),
        w=reshape.dense.w, b=reshape.dense.b))  # the reshape model's weights, in a wrapper
    assert (reshape.projection, wrapper.projection) == ("reshape", "wrapper")
    expected, h = numpy_regressor(reshape.cell, reshape.dense.w, reshape.dense.b, X)
    for model in (reshape, wrapper):
        predictions, state = model(X)
        np.testing.assert_allclose(predictions, expected, **TOL)
        np.testing.assert_allclose(state, h, **TOL)
        jaxpr = str(jax.make_jaxpr(lambda m: mse(m, X, y))(model))
        assert "custom_vjp_call" in jaxpr  # the explicit BPTT's custom_vjp
    # The book's wrapper unrolled whole (on autodiff) computes the same values and gradients.
    book, _ = rnnkit.dynamic_rnn(wrapper.cell, X, bptt="autodiff")
    np.testing.assert_allclose(book, expected, **TOL)
    grads = [jax.grad(mse)(m, X, y) for m in (reshape, wrapper)]
    book_grads = jax.grad(lambda c: timeseries.mean_squared_error(
        rnnkit.dynamic_rnn(c, X, bptt="autodiff")[0], y))(wrapper.cell)
    tree_close(grads[0].cell, grads[1].cell.cell)
    tree_close((grads[0].dense.w, grads[0].dense.b), (grads[1].cell.w, grads[1].cell.b))
    tree_close(grads[1].cell, book_grads, rtol=1e-4, atol=1e-5)


def test_the_loop_each_model_runs_on():
    f32 = jnp.float32
    wrapper = build_regressor(units=8, projection="wrapper", key=KEY)
    deep = build_regressor(units=8, layers=3, activation="tanh", keep_prob=0.5, key=KEY)
    assert choose_loop(wrapper.rnn, dtype=f32, gpu=False) == (Loop.EXPLICIT,)
    # The OutputProjectionWrapper unrolled whole is not a split cell: autodiff, or refused.
    assert choose_loop(wrapper.cell, dtype=f32, gpu=False) == (Loop.AUTODIFF,)
    with pytest.raises(ValueError, match="bptt: 'explicit' supports"):
        choose_loop(wrapper.cell, dtype=f32, mode="explicit", gpu=False)
    # Dropout is active only with a key (training); input dropout keeps the explicit BPTT.
    assert choose_loop(deep.rnn, dtype=f32, gpu=False) == (Loop.EXPLICIT,) * 3
    assert choose_loop(deep.rnn, dtype=f32, dropout=True, gpu=False) == (Loop.EXPLICIT,) * 3


def test_build_regressor_deep_dropout_acts_only_with_a_key():
    X, _ = timeseries.windows(1, 3, 6)
    deep = build_regressor(units=8, layers=3, activation="tanh", keep_prob=0.5, key=KEY)
    bare = build_regressor(units=8, layers=3, activation="tanh", key=KEY)
    layers = deep.rnn.cells
    assert [type(c).__name__ for c in layers] == ["DropoutWrapper"] * 3
    assert [c.input_keep_prob for c in layers] == [0.5] * 3
    np.testing.assert_array_equal(deep(X)[0], bare(X)[0])
    assert not np.allclose(deep(X, key=jax.random.key(1))[0], bare(X)[0])


# ---- generation -------------------------------------------------------------------------------

@pytest.mark.parametrize("projection", ["reshape", "wrapper"])
def test_generate_carries_the_state_as_rerunning_the_whole_history(projection):
    model = build_regressor(units=16, projection=projection, key=KEY)
    seed = timeseries.windows(2, 2, 10)[0]  # [2, 10, 1]
    history = jnp.asarray(seed)
    for _ in range(6):  # the O(n^2) oracle: the model from a zero state on all values so far
        last = model(history)[0][:, -1:]  # [B, 1, 1]
        history = jnp.concatenate([history, last], axis=1)
    generated = generate(model, seed, 6)
    assert generated.shape == (2, 16)
    np.testing.assert_allclose(generated, history[..., 0], **TOL)
    np.testing.assert_allclose(generate(model, seed[1, :, 0], 6), history[1, :, 0], **TOL)


def test_generate_with_a_window_is_the_books_loop():
    model = build_regressor(units=16, key=KEY)
    n_steps, sequence = 5, [0.5] * 5
    for _ in range(7):  # the book's loop, verbatim but for the session
        X_batch = np.array(sequence[-n_steps:], np.float32).reshape(1, n_steps, 1)
        y_pred = model(X_batch)[0]
        sequence.append(float(y_pred[0, -1, 0]))
    generated = generate(model, [0.5] * 5, 7, window=n_steps)
    np.testing.assert_allclose(generated, sequence, **TOL)
    compiled = _generate._cache_size()
    generate(model, [0.25] * 5, 7, window=n_steps)
    assert _generate._cache_size() == compiled  # a new seed of the same shape: no recompilation


def test_generate_refuses_bad_arguments():
    model = build_regressor(units=4, key=KEY)
    with pytest.raises(ValueError, match=r"seed: expected \[T0\], \[B, T0\] or \[B, T0, 1\]"):
        generate(model, np.zeros((2, 3, 2)), 1)
    with pytest.raises(ValueError, match=r"window: expected None or an int in \[1, 3\]"):
        generate(model, np.zeros(3), 1, window=4)
    with pytest.raises(ValueError, match="steps: expected an int >= 0, got -1"):
        generate(model, np.zeros(3), -1)
    np.testing.assert_array_equal(generate(model, np.ones(3), 0), np.ones(3))


# ---- stateful truncated BPTT ------------------------------------------------------------------

def test_chunks_cut_consecutive_pieces():
    x = np.arange(2 * 11 * 1).reshape(2, 11, 1)
    cut = stateful.chunks(x, 3)
    assert cut.shape == (3, 2, 3, 1)  # the last 11 % 3 = 2 steps are left out
    for k, b, t in np.ndindex(3, 2, 3):
        assert cut[k, b, t, 0] == x[b, 3 * k + t, 0]


LONG = timeseries.windows(5, 3, 60)  # the book's series, long contiguous sequences [3, 60, 1]


def deep_gru(key):
    k1, k2 = jax.random.split(key)
    cells = [rnnkit.GRUCell(1, 8, key=k1), rnnkit.GRUCell(8, 8, key=k2)]
    return SequenceRegressor(rnnkit.OutputProjectionWrapper(rnnkit.MultiRNNCell(cells), 1,
                                                            key=key))


@pytest.mark.parametrize("make", [lambda k: build_regressor(units=8, key=k), deep_gru],
                         ids=["basic_reshape", "gru_stack_wrapper"])
def test_chunked_run_equals_one_pass_and_reset_starts_anew(make):
    model, (X, _) = make(KEY), LONG
    outputs, state = stateful.chunked_rnn(model, X, 15)
    whole, whole_state = model(X)
    np.testing.assert_allclose(outputs, whole, **TOL)
    tree_close(state, whole_state)
    reset = np.zeros((3, 4), bool)
    reset[1, 2] = True  # sequence 1 starts anew at chunk 2 (step 30)
    outputs, _ = stateful.chunked_rnn(model, X, 15, reset=reset)
    np.testing.assert_allclose(outputs[::2], whole[::2], **TOL)  # sequences 0 and 2
    np.testing.assert_allclose(outputs[1, 30:], model(X[1:2, 30:])[0][0], **TOL)


def test_no_gradient_crosses_a_chunk_boundary():
    model, (X, y) = build_regressor(units=8, key=KEY), LONG
    state0 = jnp.ones((3, 8))

    def chunk_loss(x, state, k):
        return stateful.chunk_losses(model, x, y, 15, initial_state=state)[0][k]

    d_x, d_state = jax.grad(chunk_loss, argnums=(0, 1))(jnp.asarray(X), state0, 2)
    assert np.all(d_x[:, :30] == 0) and np.all(d_x[:, 45:] == 0)
    assert np.any(d_x[:, 30:45] != 0)
    assert np.all(d_state == 0)
    # Without the truncation, the same steps' loss does reach the previous chunk.
    d_full = jax.grad(lambda x: mse(model, x[:, :45], y[:, :45]))(jnp.asarray(X))
    assert np.any(d_full[:, 15:30] != 0)


def test_truncated_bptt_step_is_a_python_loop_of_updates():
    model, (X, y) = build_regressor(units=8, key=KEY), LONG
    optimizer = optax.adam(0.01)
    step = stateful.make_truncated_bptt_step(optimizer, 20)
    new_model, _, losses, state = step(model, optimizer.init(model), X, y)

    @jax.jit
    def reference_update(model, opt_state, state, x_k, y_k):  # one chunk, as written by hand
        def loss(m):
            predictions, new_state = m(x_k, initial_state=jax.lax.stop_gradient(state))
            return timeseries.mean_squared_error(predictions, y_k), new_state

        (value, state), grads = jax.value_and_grad(loss, has_aux=True)(model)
        updates, opt_state = optimizer.update(grads, opt_state, model)
        return optax.apply_updates(model, updates), opt_state, state, value

    ref_model, opt_state, ref_losses = model, optimizer.init(model), []
    ref_state = model.zero_state(3)
    for k in range(3):  # one update per chunk, the state carried without its gradient
        ref_model, opt_state, ref_state, value = reference_update(
            ref_model, opt_state, ref_state, X[:, 20 * k: 20 * (k + 1)], y[:, 20 * k: 20 * (k + 1)])
        ref_losses.append(value)
    np.testing.assert_allclose(losses, ref_losses, **TOL)
    tree_close(new_model, ref_model, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(state, ref_state, rtol=1e-4, atol=1e-5)
    compiled = step._cache_size()
    step(new_model, opt_state, X, y)
    assert step._cache_size() == compiled  # a second call does not recompile
