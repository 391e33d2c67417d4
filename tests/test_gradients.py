"""Gradient flow through time: ``state_gradients`` equals a direct autodiff of each step's
state and the closed form of a linear RNN; the classifier's norms compile once; ``rnnkit
gradients`` writes its files."""

import contextlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
from rnnkit.cells import LSTMStateTuple
from rnnkit.cli import main
from rnnkit.config import GradientFlowConfig
from rnnkit.gradients import classifier_gradient_norms, state_gradient_norms, state_gradients
from rnnkit.model import SequenceClassifier, scores

T, B, I, H = 6, 3, 2, 4
LENGTHS = np.array([6, 0, 3], np.int32)


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def _cells(key):
    ks = jax.random.split(key, 5)
    return {
        "basic": rk.BasicRNNCell(I, H, key=ks[0]),
        "lstm": rk.LSTMCell(I, H, key=ks[1]),
        "gru": rk.GRUCell(I, H, key=ks[2]),
        "multi": rk.MultiRNNCell([rk.LSTMCell(I, H, key=ks[3]), rk.GRUCell(H, 3, key=ks[4])]),
    }


def _problem(name):
    """A float64 cell with every weight random, inputs and an initial state."""
    cell = _cells(jax.random.key(0))[name]
    leaves, treedef = jax.tree.flatten(cell)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    cell = jax.tree.unflatten(treedef, [0.7 * jax.random.normal(k, x.shape, jnp.float64)
                                        for k, x in zip(keys, leaves)])
    x = jax.random.normal(jax.random.key(2), (B, T, I), jnp.float64)
    state0 = jax.tree.map(lambda s: 0.5 * jax.random.normal(jax.random.key(3), s.shape, s.dtype),
                          cell.zero_state(B, jnp.float64))
    return cell, x, state0


def _loss(outputs, final, first=0):
    """A loss of the outputs (each step weighted by its number; ``outputs`` may start at step
    ``first``) and of every leaf of the final state."""
    weights = first + 1 + jnp.arange(outputs.shape[1], dtype=outputs.dtype)
    return (jnp.sum(jnp.sin(outputs) * weights[None, :, None])
            + sum(jnp.sum(jnp.cos(s) * (i + 1)) for i, s in enumerate(jax.tree.leaves(final))))


def _direct(cell, x, state0, lengths):
    """``dL/ds_t`` by autodiff of the rest of the sequence run from ``s_t``, step by step:
    the state after the first ``t`` steps, then the loss of steps ``t+1..T`` from it (the
    inputs rolled so that step ``t+1`` comes first; what wraps around lies past the lengths)."""
    lengths = jnp.full(B, T) if lengths is None else jnp.asarray(lengths)

    @jax.jit
    def at(t):
        _, s_t = rk.dynamic_rnn(cell, x, sequence_length=jnp.minimum(lengths, t),
                                initial_state=state0, bptt="autodiff")

        def rest(s):
            outputs, final = rk.dynamic_rnn(cell, jnp.roll(x, -t, axis=1), initial_state=s,
                                            sequence_length=jnp.maximum(lengths - t, 0),
                                            bptt="autodiff")
            return _loss(outputs, final, first=t)

        here = t <= lengths  # past its length a sequence makes no state
        return jax.tree.map(lambda g: jnp.where(here.reshape(-1, *[1] * (g.ndim - 1)), g, 0.0),
                            jax.grad(rest)(s_t))

    grads = [at(t) for t in range(1, T + 1)]
    return jax.tree.map(lambda *g: jnp.stack(g), *grads)  # leaves [T, B, ...]


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("name", list(_cells(jax.random.key(0))))
def test_state_gradients_equal_autodiff_of_the_rest_of_the_sequence(name, lengths):
    with jax.enable_x64(True):
        cell, x, state0 = _problem(name)
        got = state_gradients(cell, _loss, x, sequence_length=lengths, initial_state=state0)
        want = _direct(cell, x, state0, lengths)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            assert g.shape == (T, *w.shape[1:]) and g.dtype == jnp.float64
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
        if lengths is not None:  # nothing flows from steps past a sequence's length
            assert all(float(jnp.abs(g[:, 1]).max()) == 0.0 for g in jax.tree.leaves(got))
        norms = state_gradient_norms(cell, _loss, x, sequence_length=lengths,
                                     initial_state=state0)
        for n, g in zip(jax.tree.leaves(norms), jax.tree.leaves(got)):
            np.testing.assert_allclose(n, np.sqrt((np.asarray(g) ** 2).sum(axis=(1, 2))))


def test_a_linear_rnn_follows_the_powers_of_its_recurrent_matrix():
    """``h_t = x_t W_x + h_{t-1} W`` and ``L = sum(h_T v)``: ``dL/dh_t = v (W^T)^(T-t)`` for
    every sequence, so with ``W = a Q`` (``Q`` orthogonal) the norms are
    ``sqrt(B) a^(T-t) ||v||``: they vanish for ``a < 1`` and explode for ``a > 1``."""
    steps = 30
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        q, _ = np.linalg.qr(rng.normal(size=(H, H)))
        v = rng.normal(size=H)
        x = rng.normal(size=(B, steps, I))
        for a in (0.8, 1.1):
            cell = rk.BasicRNNCell.from_weights(jnp.asarray(rng.normal(size=(I, H))),
                                                jnp.asarray(a * q), jnp.zeros(H),
                                                activation="identity")
            got = state_gradients(cell, lambda outputs, h: jnp.sum(h @ v), x)
            powers = [np.linalg.matrix_power(a * q.T, steps - t) for t in range(1, steps + 1)]
            np.testing.assert_allclose(got, np.stack([np.broadcast_to(v @ p, (B, H))
                                                      for p in powers]), rtol=1e-10)
            norms = state_gradient_norms(cell, lambda outputs, h: jnp.sum(h @ v), x)
            closed = np.sqrt(B) * a ** (steps - np.arange(1, steps + 1)) * np.linalg.norm(v)
            np.testing.assert_allclose(norms, closed, rtol=1e-10)


def test_classifier_norms_read_the_lstm_state_and_compile_once():
    k1, k2 = jax.random.split(jax.random.key(0))
    model = SequenceClassifier(rk.LSTMCell(I, H, key=k1), rk.Dense(H, 3, key=k2))
    x = jax.random.normal(jax.random.key(1), (B, T, I))
    labels = jnp.array([0, 2, 1])
    norms = classifier_gradient_norms(model, x, labels)
    assert isinstance(norms, LSTMStateTuple) and norms.h.shape == norms.c.shape == (T,)
    assert float(norms.c[-1]) == 0.0 and float(norms.h[-1]) > 0  # the dense layer reads h

    def loss(outputs, final):
        return jnp.mean(scores(model.readout(final), labels)[0])

    want = state_gradient_norms(model.cell, loss, x)
    for got, expected in zip(norms, want):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    compiled = classifier_gradient_norms._cache_size()
    classifier_gradient_norms(model, x + 1.0, labels)
    assert classifier_gradient_norms._cache_size() == compiled


def test_inputs_of_the_wrong_rank_are_one_clear_error():
    cell = rk.GRUCell(I, H, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"inputs: expected a rank-3 array \[B, T, I\]"):
        state_gradients(cell, lambda outputs, h: jnp.sum(h), np.zeros((B, I)))


def test_the_gradients_command_writes_the_norms_the_plot_and_the_accuracies(tmp_path):
    out = tmp_path / "flow"
    status, stdout, stderr = run("gradients", "--out", out, "--n-steps", 8, "--units", 4,
                                 "--train-steps", 3, "--batch-size", 4, "--eval-size", 16)
    assert status == 0, stderr
    lines = (out / "gradient_norms.csv").read_text().splitlines()
    assert lines[0] == "cell,phase,step,norm"
    rows = [line.split(",") for line in lines[1:]]
    assert {(cell, phase) for cell, phase, _, _ in rows} == {
        (cell, phase) for cell in ("basic", "lstm", "lstm-c", "gru")
        for phase in ("init", "trained")}
    assert [int(step) for _, _, step, _ in rows[:8]] == list(range(1, 9)) and len(rows) == 64
    assert all(float(norm) >= 0 for *_, norm in rows)
    accuracy = (out / "accuracy.csv").read_text().splitlines()
    assert accuracy[0] == "cell,accuracy,train_steps,seconds" and len(accuracy) == 4
    assert (out / "gradient_norms.png").stat().st_size > 10_000
    assert json.loads((out / "gradient_flow.json").read_text())["train_steps"] == 3
    assert stdout.count("% (chance 25%)") == 3 and str(out) in stdout


def test_the_default_task_needs_a_memory_of_at_least_100_steps():
    assert GradientFlowConfig().n_steps >= 100


@pytest.mark.parametrize("argv, needle", [
    (["--noise", "-1"], "--noise: expected a finite number >= 0, got -1.0"),
    (["--n-steps", "1"], "--n-steps: expected an integer >= 2, got 1"),
    (["--gate-bias", "nan"], "--gate-bias: expected a finite number, got nan"),
])
def test_bad_gradients_flags_are_one_line(tmp_path, argv, needle):
    status, stdout, stderr = run("gradients", "--out", tmp_path / "x", *argv)
    assert status == 2 and stderr.count("\n") == 1 and needle in stderr
    assert not (tmp_path / "x").exists()


def test_gradients_needs_out():
    status, _, stderr = run("gradients")
    assert status == 2 and "--out: expected the folder" in stderr and stderr.count("\n") == 1
