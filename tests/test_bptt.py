"""Explicit BPTT (``bptt="explicit"``) equals autodiff of the scan, for every built-in cell."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
from rnnkit import speed
from rnnkit.bptt import supports
from rnnkit.cells import LSTMStateTuple
from rnnkit.cudnn import cudnn_computes
from rnnkit.model import top_hidden

T, B, I, H = 5, 4, 3, 6
LENGTHS = np.array([5, 0, 2, 4], np.int32)


def _cells(key):
    ks = jax.random.split(key, 8)
    return {
        "basic-tanh": rk.BasicRNNCell(I, H, key=ks[0]),
        "basic-relu": rk.BasicRNNCell(I, H, activation="relu", key=ks[1]),
        "lstm": rk.LSTMCell(I, H, key=ks[2]),
        "lstm-peepholes": rk.LSTMCell(I, H, use_peepholes=True, forget_bias=0.5, key=ks[3]),
        "gru-reset-after": rk.GRUCell(I, H, key=ks[4]),
        "gru-reset-before": rk.GRUCell(I, H, reset_after=False, key=ks[5]),
        "multi": rk.MultiRNNCell([rk.LSTMCell(I, H, key=ks[6]), rk.GRUCell(H, 4, key=ks[7])]),
    }


CELL_NAMES = list(_cells(jax.random.key(0)))


def _randomised(cell, dtype, seed=1):
    """Every weight (biases and peepholes too) random and non-zero."""
    leaves, treedef = jax.tree.flatten(cell)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [0.5 * jax.random.normal(k, x.shape, dtype) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, leaves)


def _loss(cell, x, state0, lengths, bptt, time_major=False, terms=("outputs", "state")):
    """A loss of the outputs and of every part of the final state (``terms`` picks a part:
    "top-h" is the final state as the book's classifier reads it, ``top_hidden``)."""
    outputs, state = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=state0,
                                    bptt=bptt, time_major=time_major)
    parts = {"outputs": lambda: jnp.sum(jnp.sin(outputs) * jnp.arange(outputs.shape[-1])),
             "state": lambda: sum(jnp.sum(jnp.cos(s)) for s in jax.tree.leaves(state)),
             "top-h": lambda: jnp.sum(jnp.cos(top_hidden(state)))}
    return sum(parts[term]() for term in terms)


def _problem(name, dtype):
    cell = _randomised(_cells(jax.random.key(0))[name], dtype)
    x = jax.random.normal(jax.random.key(2), (B, T, I), dtype)
    state0 = jax.tree.map(lambda s: jax.random.normal(jax.random.key(3), s.shape, dtype),
                          cell.zero_state(B, dtype))
    return cell, x, state0


def _grads(name, dtype, lengths, bptt, terms=("outputs", "state")):
    cell, x, state0 = _problem(name, dtype)
    loss = functools.partial(_loss, bptt=bptt, terms=terms)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(cell, x, state0, lengths)


def _assert_explicit_equals_autodiff_float64(name, lengths, terms=("outputs", "state")):
    with jax.enable_x64(True):
        fused = _grads(name, jnp.float64, lengths, "explicit", terms)
        auto = _grads(name, jnp.float64, lengths, "autodiff", terms)
        for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(auto), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_explicit_equals_autodiff_float64(name, lengths):
    _assert_explicit_equals_autodiff_float64(name, lengths)


@pytest.mark.parametrize("terms", [("outputs",), ("state",), ("top-h",)])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_explicit_equals_autodiff_on_part_of_the_result(name, terms):
    """A loss of the outputs alone, or of the final state alone (sequence-to-vector): the
    explicit BPTT then gets a zero gradient for the part the loss does not read."""
    _assert_explicit_equals_autodiff_float64(name, LENGTHS, terms)


@pytest.mark.parametrize("name", ["lstm-peepholes", "gru-reset-after", "multi"])
def test_explicit_equals_autodiff_float32(name):
    fused = _grads(name, jnp.float32, LENGTHS, "explicit")
    auto = _grads(name, jnp.float32, LENGTHS, "autodiff")
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(auto), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_bidirectional_explicit_equals_autodiff():
    cells = _cells(jax.random.key(0))
    fw, bw = _randomised(cells["lstm"], jnp.float32), _randomised(cells["gru-reset-after"],
                                                                 jnp.float32, seed=4)
    x = jax.random.normal(jax.random.key(2), (B, T, I))

    def loss(cells, bptt):
        (out_fw, out_bw), states = rk.bidirectional_dynamic_rnn(*cells, x, sequence_length=LENGTHS,
                                                                bptt=bptt)
        return jnp.sum(jnp.sin(out_fw)) + jnp.sum(out_bw ** 2) + sum(
            jnp.sum(s) for s in jax.tree.leaves(states))

    fused = jax.grad(loss)((fw, bw), "explicit")
    auto = jax.grad(loss)((fw, bw), "autodiff")
    for a, b in zip(jax.tree.leaves(fused), jax.tree.leaves(auto), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _loop_of(cell, x, **kwargs):
    """Which loop ``dynamic_rnn`` traces: "explicit" (the custom VJP) or "autodiff" (a plain scan)."""
    jaxpr = jax.make_jaxpr(lambda x: rk.dynamic_rnn(cell, x, **kwargs)[0])(x)
    names = {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}
    return "explicit" if "custom_vjp_call" in names else "autodiff"


def _reverse_scans(jaxpr):
    """The reverse scans in ``jaxpr`` and in the jaxprs nested in its equations."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan" and eqn.params["reverse"]:
            found.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's jaxpr
                if hasattr(sub, "eqns"):
                    found += _reverse_scans(sub)
    return found


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("name", CELL_NAMES)
def test_backward_loop_carries_only_the_state(name, lengths):
    """Each layer's backward loop carries its state's cotangent and nothing else: the weight
    gradients are summed after the loop, not in it."""
    cell, x, state0 = _problem(name, jnp.float32)
    lengths = None if lengths is None else jnp.asarray(lengths)
    grad = jax.grad(lambda c: _loss(c, x, state0, lengths, "explicit"))
    reverse = _reverse_scans(jax.make_jaxpr(grad)(cell).jaxpr)
    layers = cell.cells if isinstance(cell, rk.MultiRNNCell) else [cell]
    expected = sorted(len(jax.tree.leaves(layer.zero_state(B))) for layer in layers)
    assert sorted(e.params["num_carry"] for e in reverse) == expected


@pytest.mark.parametrize("name", CELL_NAMES)
def test_auto_runs_the_explicit_bptt_for_built_in_cells(name):
    cell = _cells(jax.random.key(0))[name]
    x = jnp.ones((B, T, I))
    assert _loop_of(cell, x) == "explicit"
    assert _loop_of(cell, x, key=jax.random.key(1)) == "explicit"  # no dropout: the key is unused
    assert _loop_of(cell, x, bptt="autodiff") == "autodiff"


def test_state_dropout_runs_on_autodiff_and_input_and_output_dropout_do_not():
    lstm = rk.LSTMCell(I, H, key=jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (B, T, I))
    key = jax.random.key(2)
    for kept in (dict(input_keep_prob=0.5), dict(output_keep_prob=0.5),
                 dict(input_keep_prob=0.5, output_keep_prob=0.7, variational_recurrent=True)):
        cell = rk.DropoutWrapper(lstm, **kept)
        assert _loop_of(cell, x, key=key) == "explicit", kept
    cell = rk.DropoutWrapper(lstm, input_keep_prob=0.5, state_keep_prob=0.5)
    assert _loop_of(cell, x) == "explicit"  # without a key the wrapper is the identity
    assert _loop_of(cell, x, key=key) == "autodiff"
    plain, _ = rk.dynamic_rnn(lstm, x, bptt="autodiff")
    fused, _ = rk.dynamic_rnn(cell, x, bptt="explicit")
    np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)
    wanted = "bptt: 'explicit' supports .* got DropoutWrapper with state dropout"
    with pytest.raises(ValueError, match=wanted):
        rk.dynamic_rnn(cell, x, bptt="explicit", key=key)
    dropped, _ = rk.dynamic_rnn(cell, x, key=key)
    assert not np.allclose(dropped, plain)


def _dropout_cells(key):
    """Dropout outside the recurrence: on one layer, on each layer of a stack (the book's deep
    RNN: ``MultiRNNCell([DropoutWrapper(cell, input_keep_prob=p) ...])``), around a stack."""
    ks = jax.random.split(key, 6)
    book = [rk.BasicRNNCell(n, H, activation="relu", key=k) for n, k in zip((I, H, H), ks)]
    return {
        "input": rk.DropoutWrapper(rk.LSTMCell(I, H, key=ks[3]), input_keep_prob=0.5),
        "input-output-variational": rk.DropoutWrapper(
            rk.GRUCell(I, H, key=ks[4]), input_keep_prob=0.6, output_keep_prob=0.7,
            variational_recurrent=True),
        "book-deep-rnn": rk.MultiRNNCell([rk.DropoutWrapper(c, input_keep_prob=0.5)
                                          for c in book]),
        "around-a-stack": rk.DropoutWrapper(rk.MultiRNNCell([
            rk.DropoutWrapper(rk.LSTMCell(I, H, use_peepholes=True, key=ks[5]),
                              output_keep_prob=0.6),
            rk.GRUCell(H, 4, reset_after=False, key=ks[0])]), input_keep_prob=0.8,
            output_keep_prob=0.5, variational_recurrent=True),
    }


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("name", list(_dropout_cells(jax.random.key(0))))
def test_dropout_on_the_explicit_bptt_equals_autodiff_float64(name, lengths):
    """The same key draws the same masks on both paths: outputs, final states and gradients
    agree to float64 rounding, and differ from the same model without dropout."""
    with jax.enable_x64(True):
        cell = _randomised(_dropout_cells(jax.random.key(0))[name], jnp.float64)
        x = jax.random.normal(jax.random.key(2), (B, T, I), jnp.float64)
        key = jax.random.key(7)
        assert _loop_of(cell, x, key=key) == "explicit"

        @functools.partial(jax.jit, static_argnames="bptt")
        def run(cell, x, key, bptt):
            def loss(cell, x):
                outputs, state = rk.dynamic_rnn(cell, x, sequence_length=lengths, key=key,
                                                bptt=bptt)
                return jnp.sum(jnp.sin(outputs) * jnp.arange(outputs.shape[-1])) + sum(
                    jnp.sum(jnp.cos(s)) for s in jax.tree.leaves(state)), (outputs, state)
            return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(cell, x)

        explicit, autodiff = run(cell, x, key, "explicit"), run(cell, x, key, "autodiff")
        for a, b in zip(jax.tree.leaves(explicit), jax.tree.leaves(autodiff), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        (_, (undropped, _)), _ = run(cell, x, None, "explicit")
        assert not np.allclose(explicit[0][1][0], undropped)


def test_bidirectional_dropout_on_the_explicit_bptt_equals_autodiff():
    cells = _dropout_cells(jax.random.key(0))
    fw, bw = cells["input"], cells["book-deep-rnn"]
    x = jax.random.normal(jax.random.key(2), (B, T, I))

    def loss(cells, bptt):
        (out_fw, out_bw), states = rk.bidirectional_dynamic_rnn(
            *cells, x, sequence_length=LENGTHS, key=jax.random.key(5), bptt=bptt)
        return jnp.sum(jnp.sin(out_fw)) + jnp.sum(out_bw ** 2) + sum(
            jnp.sum(s) for s in jax.tree.leaves(states))

    explicit = jax.value_and_grad(loss)((fw, bw), "explicit")
    autodiff = jax.value_and_grad(loss)((fw, bw), "autodiff")
    for a, b in zip(jax.tree.leaves(explicit), jax.tree.leaves(autodiff), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_user_cell_without_split_runs_on_autodiff():
    class Doubler:
        input_size, output_size, state_size = I, I, I

        def zero_state(self, batch_size, dtype=jnp.float32):
            return jnp.zeros((batch_size, I), dtype)

        def __call__(self, inputs, state):
            return 2 * inputs + state, state + inputs

    x = jnp.ones((B, T, I))
    outputs, state = rk.dynamic_rnn(Doubler(), x)
    np.testing.assert_allclose(outputs[:, -1], 2 + (T - 1))
    np.testing.assert_allclose(state, T)
    assert not supports(Doubler())
    assert _loop_of(Doubler(), x) == "autodiff"
    with pytest.raises(ValueError, match="got Doubler"):
        rk.dynamic_rnn(Doubler(), x, bptt="explicit")


@rk.pytree.pytree_dataclass
class DoubledLSTM(rk.LSTMCell):
    """A user's variant of the built-in LSTM: its own step (twice the LSTM's ``h``)."""

    def recurrent_step(self, projected, state):
        h, new = super().recurrent_step(projected, state)
        return 2.0 * h, LSTMStateTuple(new.c, 2.0 * h)


def test_a_subclass_of_a_built_in_cell_runs_its_own_step():
    """The built-in explicit BPTT computes the built-in classes' steps only: a subclass that
    overrides ``recurrent_step`` runs on autodiff by default and on the generic explicit BPTT
    with ``bptt="explicit"``, both with its own step."""
    base = _randomised(rk.LSTMCell(I, H, key=jax.random.key(0)), jnp.float32)
    cell = DoubledLSTM.from_weights(base.w_x, base.w_h, base.b)
    x = jax.random.normal(jax.random.key(2), (B, T, I))
    assert not supports(cell) and supports(base)
    assert not cudnn_computes(cell) and cudnn_computes(base)
    assert speed.loop_compiler_options([cell], None, "auto") == {}  # the LSTM rule: bptt.py's
    assert speed.loop_compiler_options([base], None, "auto") == speed.OLDER_FUSION_EMITTERS
    assert _loop_of(cell, x) == "autodiff"

    def loss(cell, x, bptt):
        outputs, state = rk.dynamic_rnn(cell, x, sequence_length=LENGTHS, bptt=bptt)
        return jnp.sum(jnp.sin(outputs)) + sum(jnp.sum(jnp.cos(s)) for s in jax.tree.leaves(state))

    reference = jax.value_and_grad(loss, argnums=(0, 1))(cell, x, "autodiff")
    for bptt in ("auto", "explicit"):
        got = jax.value_and_grad(loss, argnums=(0, 1))(cell, x, bptt)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(reference), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert not np.isclose(loss(base, x, "explicit"), reference[0], rtol=1e-3)


@pytest.mark.parametrize("bad", [dict(bptt="fast"), dict(unroll=0), dict(unroll=2.0)])
def test_bad_bptt_and_unroll(bad):
    cell = rk.BasicRNNCell(I, H, key=jax.random.key(0))
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        rk.dynamic_rnn(cell, jnp.ones((B, T, I)), **bad)


def test_unroll_factor_does_not_change_results():
    cell, x, state0 = _problem("lstm", jnp.float32)
    results = [jax.grad(lambda c: jnp.sum(rk.dynamic_rnn(c, x, unroll=u, bptt=m)[0]))(cell)
               for u in (1, 3) for m in ("explicit", "autodiff")]
    for other in results[1:]:
        for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(other), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
