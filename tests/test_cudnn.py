"""The cuDNN LSTM path (``bptt="cudnn"``, and ``"auto"`` on a GPU), checked on the CPU.

cuDNN's kernel needs a GPU, so these tests run everything around it (the weight packing, the
layouts, the routing in ``dynamic_rnn``) with ``jax.experimental.rnn.lstm_ref`` in its place:
JAX's reference implementation of the same flat-weight LSTM.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn as jax_rnn

import rnnkit as rk
import rnnkit.loops
import rnnkit.unroll
from rnnkit.cudnn import cudnn_backend, cudnn_lstm

T, B, I, H = 6, 3, 4, 5


def reference_lstm(x, h_0, c_0, weights, seq_lengths, *, input_size, hidden_size, num_layers,
                   dropout, bidirectional):
    """``jax.experimental.rnn.lstm``'s signature over its reference implementation."""
    unpacked = jax_rnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers,
                                           bidirectional)
    return jax_rnn.lstm_ref(x, h_0, c_0, *unpacked, seq_lengths, input_size, hidden_size,
                            num_layers, dropout, bidirectional)


def _lstm(seed, input_size=I, **options):
    """An LSTM cell whose weights and biases are all random and non-zero."""
    cell = rk.LSTMCell(input_size, H, key=jax.random.key(seed), **options)
    b = 0.5 * jax.random.normal(jax.random.key(seed + 100), cell.b.shape, cell.b.dtype)
    return rk.LSTMCell.from_weights(cell.w_x, cell.w_h, b, forget_bias=cell.forget_bias,
                                    peepholes=cell.peepholes)


def _state(seed):
    c, h = jax.random.normal(jax.random.key(seed), (2, B, H))
    return rk.LSTMStateTuple(c=c, h=h)


def _loss(run, cell, xs, state):
    outputs, final = run(cell, xs, state)
    return jnp.sum(jnp.sin(outputs)) + jnp.sum(jnp.cos(final.c)) + jnp.sum(final.h ** 2)


def _autodiff(cell, xs, state):
    return rk.dynamic_rnn(cell, xs, initial_state=state, time_major=True, bptt="autodiff")


@pytest.mark.parametrize("forget_bias", [1.0, 0.0, 0.3])
def test_packed_weights_compute_the_cell(forget_bias):
    cell, state = _lstm(1, forget_bias=forget_bias), _state(2)
    xs = jax.random.normal(jax.random.key(3), (T, B, I))
    run = functools.partial(cudnn_lstm, lstm=reference_lstm)
    (outputs, final), expected = run(cell, xs, state), _autodiff(cell, xs, state)
    np.testing.assert_allclose(outputs, expected[0], rtol=1e-5, atol=1e-6)
    for leaf, expected_leaf in zip(final, expected[1], strict=True):
        np.testing.assert_allclose(leaf, expected_leaf, rtol=1e-5, atol=1e-6)
    grads = jax.grad(functools.partial(_loss, run), argnums=(0, 1, 2))(cell, xs, state)
    expected_grads = jax.grad(functools.partial(_loss, _autodiff), argnums=(0, 1, 2))(
        cell, xs, state)
    for leaf, expected_leaf in zip(jax.tree.leaves(grads), jax.tree.leaves(expected_grads),
                                   strict=True):
        np.testing.assert_allclose(leaf, expected_leaf, rtol=1e-4, atol=1e-5)


@pytest.fixture
def fake_gpu(monkeypatch):
    """``dynamic_rnn`` believes it runs on a GPU and calls the reference for cuDNN's kernel;
    returns the list of cells handed to it."""
    handed = []

    def lstm(cell, xs, state):
        handed.append(cell)
        return cudnn_lstm(cell, xs, state, lstm=reference_lstm)

    monkeypatch.setattr(rnnkit.loops, "cudnn_backend", lambda: True)
    monkeypatch.setattr(rnnkit.unroll, "cudnn_lstm", lstm)
    return handed


def _outputs_and_state(cell, x, bptt, bidirectional=False, **options):
    if bidirectional:
        return rk.bidirectional_dynamic_rnn(cell, cell, x, bptt=bptt, **options)
    return rk.dynamic_rnn(cell, x, bptt=bptt, **options)


@pytest.mark.parametrize("bptt", ["auto", "cudnn"])
@pytest.mark.parametrize("shape", ["one", "stack", "bidirectional"])
def test_on_a_gpu_plain_lstm_layers_run_on_cudnn(fake_gpu, bptt, shape):
    cell = _lstm(1)
    if shape == "stack":
        cell = rk.MultiRNNCell([cell, _lstm(2, input_size=H)])
    x = jax.random.normal(jax.random.key(3), (B, T, I))
    got = _outputs_and_state(cell, x, bptt, bidirectional=shape == "bidirectional")
    expected = _outputs_and_state(cell, x, "autodiff", bidirectional=shape == "bidirectional")
    assert len(fake_gpu) == {"one": 1, "stack": 2, "bidirectional": 2}[shape]
    for leaf, expected_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(leaf, expected_leaf, rtol=1e-5, atol=1e-6)


def test_on_a_gpu_inputs_of_another_dtype_are_cast_and_run_on_cudnn(fake_gpu):
    """An unroll computes in the weights' dtype: float64 inputs to a float32 LSTM are cast to
    float32 and so go to cuDNN."""
    with jax.enable_x64(True):
        cell = _lstm(1)
        x = jax.random.normal(jax.random.key(3), (B, T, I), jnp.float64)
        got = rk.dynamic_rnn(cell, x, bptt="auto")
        expected = rk.dynamic_rnn(cell, x.astype(jnp.float32), bptt="autodiff")
    assert len(fake_gpu) == 1 and got[0].dtype == jnp.float32
    for leaf, expected_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(leaf, expected_leaf, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["peepholes", "sequence_length", "float64", "gru"])
def test_on_a_gpu_what_cudnn_cannot_compute_falls_back(fake_gpu, case):
    with jax.enable_x64(case.startswith("float64")):
        cell = {"peepholes": _lstm(1, use_peepholes=True),
                "gru": rk.GRUCell(I, H, key=jax.random.key(1))}.get(case, _lstm(1))
        if case == "float64":
            cell = jax.tree.map(lambda w: jnp.asarray(w, jnp.float64), cell)
        x = jax.random.normal(jax.random.key(3), (B, T, I), cell.w_x.dtype)
        lengths = np.array([6, 2, 0], np.int32) if case == "sequence_length" else None
        got = rk.dynamic_rnn(cell, x, sequence_length=lengths, bptt="auto")
        expected = rk.dynamic_rnn(cell, x, sequence_length=lengths, bptt="autodiff")
        with pytest.raises(ValueError, match="bptt: 'cudnn' needs"):
            rk.dynamic_rnn(cell, x, sequence_length=lengths, bptt="cudnn")
    assert fake_gpu == []
    for leaf, expected_leaf in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(leaf, expected_leaf, rtol=1e-5, atol=1e-6)


def test_without_a_gpu_cudnn_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(rnnkit.loops, "cudnn_backend", lambda: False)
    x = jnp.zeros((B, T, I))
    backend = f"needs a GPU backend with cuDNN \\(this one is '{jax.default_backend()}'\\)"
    with pytest.raises(ValueError, match=f"bptt: 'cudnn' {backend}") as error:
        rk.dynamic_rnn(_lstm(1), x, bptt="cudnn")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("backend, kernels, expected", [
    ("gpu", True, True), ("gpu", False, False), ("cpu", True, False), ("cpu", False, False)])
def test_cudnn_needs_a_gpu_backend_and_jaxlibs_kernels(monkeypatch, backend, kernels, expected):
    gpu_rnn = types.SimpleNamespace(**({"compute_rnn_workspace_reserve_space_sizes": len}
                                       if kernels else {}))
    monkeypatch.setattr(jax_rnn, "gpu_rnn", gpu_rnn)
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert cudnn_backend() is expected
    with jax.default_device("cpu"):  # a default device on the CPU wins over the backend
        assert cudnn_backend() is False
