"""The generic explicit BPTT equals autodiff of a plain ``lax.scan`` over ``recurrent_step``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
from rnnkit.bptt_generic import generic_recurrence
from rnnkit.cells import gate_blocks
from rnnkit.pytree import build, pytree_dataclass, static_field

T, B, I, H = 5, 4, 3, 6
LENGTHS = np.array([5, 0, 2, 4], np.int32)


@pytree_dataclass
class MinimalGatedUnit:
    """Minimal gated unit, gates ``f, n``: ``f = sig(x_f + h w_f)``, ``h' = (1 - f) h + f n``,
    ``n = act(clip(x_n + (f h) w_n))``. ``clip`` is an int leaf: a constant, not a weight."""

    w_x: jax.Array  # [I, 2H]
    w_h: jax.Array  # [H, 2H]
    b: jax.Array  # [2H]
    clip: jax.Array  # int32 []
    activation: object = static_field()

    input_size = property(lambda self: self.w_x.shape[0])
    output_size = state_size = property(lambda self: self.w_h.shape[0])

    def zero_state(self, batch_size, dtype=jnp.float32):
        return jnp.zeros((batch_size, self.w_h.shape[0]), dtype)

    def input_projection(self, inputs):
        return inputs @ self.w_x + self.b

    def recurrent_step(self, projected, state):
        units = state.shape[-1]
        x_f, x_n = gate_blocks(projected, 2)
        f = jax.nn.sigmoid(x_f + state @ self.w_h[:, :units])
        z_n = jnp.clip(x_n + (f * state) @ self.w_h[:, units:], -self.clip, self.clip)
        n = self.activation(z_n)
        h = (1.0 - f) * state + f * n
        return h, h

    def __call__(self, inputs, state):
        return self.recurrent_step(self.input_projection(inputs), state)


@pytree_dataclass
class PlainLSTM:
    """An LSTM without peepholes, state ``(c, h)`` as a plain tuple, gate order ``i, f, g, o``."""

    w_x: jax.Array  # [I, 4H]
    w_h: jax.Array  # [H, 4H]
    b: jax.Array  # [4H]

    input_size = property(lambda self: self.w_x.shape[0])
    output_size = property(lambda self: self.w_h.shape[0])
    state_size = property(lambda self: (self.output_size, self.output_size))

    def zero_state(self, batch_size, dtype=jnp.float32):
        zeros = jnp.zeros((batch_size, self.w_h.shape[0]), dtype)
        return zeros, zeros

    def input_projection(self, inputs):
        return inputs @ self.w_x + self.b

    def recurrent_step(self, projected, state):
        c, h = state
        i, f, g, o = gate_blocks(projected + h @ self.w_h, 4)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return h, (c, h)

    def __call__(self, inputs, state):
        return self.recurrent_step(self.input_projection(inputs), state)


def _cell(name, dtype=np.float32, seed=0):
    """The cell called ``name`` with every float weight random (NumPy: no eager compilation)."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (0.5 * rng.standard_normal(shape)).astype(dtype)

    if name == "mgu":
        return build(MinimalGatedUnit, w_x=w(I, 2 * H), w_h=w(H, 2 * H), b=w(2 * H),
                     clip=np.array(2, np.int32), activation=jnp.tanh)
    if name == "plain-lstm":
        return build(PlainLSTM, w_x=w(I, 4 * H), w_h=w(H, 4 * H), b=w(4 * H))
    if name == "basic":  # softplus is no activation that bptt.py knows
        return rk.BasicRNNCell.from_weights(w(I, H), w(H, H), w(H), activation=jax.nn.softplus)
    if name == "lstm-peepholes":
        return rk.LSTMCell.from_weights(w(I, 4 * H), w(H, 4 * H), w(4 * H), forget_bias=0.5,
                                        peepholes=(w(H), w(H), w(H)))
    reset_after = name == "gru-reset-after"
    return rk.GRUCell.from_weights(w(I, 3 * H), w(H, 3 * H), w(3 * H),
                                   w(3 * H) if reset_after else None)


def _problem(name, dtype):
    """A random cell, projected inputs ``xp [T, B, P]`` and a random initial state."""
    cell = _cell(name, dtype)
    rng = np.random.default_rng(1)
    xp = rng.standard_normal((T, B, cell.w_x.shape[1])).astype(dtype)
    shapes = jax.eval_shape(lambda: cell.zero_state(B, dtype))
    state0 = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(dtype), shapes)
    return cell, xp, state0


def _scan_reference(cell, xp, state0, valid, *, unroll=1):
    """Autodiff oracle: a plain scan of the step, TF1 masking written out."""
    def body(prev, inputs):
        xp_t, valid_t = inputs
        output, new = cell.recurrent_step(xp_t, prev)
        if valid_t is not None:
            output = jnp.where(valid_t[:, None], output, 0.0)
            new = jax.tree.map(lambda n, o: jnp.where(valid_t[:, None], n, o), new, prev)
        return new, output

    final, outputs = jax.lax.scan(body, state0, (xp, valid))
    return outputs, final


def _loss(recurrence, cell, xp, state0, valid, unroll):
    outputs, final = recurrence(cell, xp, state0, valid, unroll=unroll)
    state_term = sum(jnp.sum(jnp.cos(s)) for s in jax.tree.leaves(final))
    return jnp.sum(jnp.sin(outputs) * jnp.arange(outputs.shape[-1])) + state_term, (outputs, final)


@functools.partial(jax.jit, static_argnames="unroll")
def _both(cell, xp, state0, valid, unroll=1):
    """(loss, outputs, final state) and gradients, generic BPTT then reference, in one program."""
    grad = jax.value_and_grad(_loss, argnums=(1, 2, 3), has_aux=True, allow_int=True)
    return [grad(f, cell, xp, state0, valid, unroll) for f in (generic_recurrence, _scan_reference)]


def _assert_same(generic, reference, rtol, atol):
    assert jax.tree.structure(generic) == jax.tree.structure(reference)
    for a, b in zip(jax.tree.leaves(generic), jax.tree.leaves(reference), strict=True):
        if a.dtype == jax.dtypes.float0:  # the int leaf's cotangent
            assert b.dtype == jax.dtypes.float0
            continue
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _valid(lengths):
    return None if lengths is None else np.arange(T)[:, None] < lengths[None, :]


CELLS = ["mgu", "plain-lstm", "basic", "lstm-peepholes", "gru-reset-after", "gru-reset-before"]


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("name", CELLS)
def test_generic_equals_autodiff_float64(name, lengths):
    with jax.enable_x64(True):
        cell, xp, state0 = _problem(name, jnp.float64)
        generic, reference = _both(cell, xp, state0, _valid(lengths))
        _assert_same(generic, reference, rtol=1e-10, atol=1e-12)


def test_generic_equals_autodiff_float32_without_recompiling():
    valid = _valid(LENGTHS)
    cell, xp, state0 = _problem("plain-lstm", jnp.float32)
    _assert_same(*_both(cell, xp, state0, valid, unroll=2), rtol=1e-4, atol=1e-5)
    size = _both._cache_size()
    _both(_cell("plain-lstm", seed=5), -xp, state0, valid, unroll=2)
    assert _both._cache_size() == size


def test_backward_loop_carries_only_the_state():
    """The reverse scan's carry is the state's cotangent: no weight gradient sums in the loop."""
    cell, xp, state0 = _problem("lstm-peepholes", jnp.float32)
    jaxpr = jax.make_jaxpr(jax.grad(lambda c: jnp.sum(generic_recurrence(c, xp, state0, None)[0])))(
        cell)
    reverse = [e for e in jaxpr.eqns if e.primitive.name == "scan" and e.params["reverse"]]
    assert len(reverse) == 1 and reverse[0].params["num_carry"] == len(jax.tree.leaves(state0))


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_dynamic_rnn_takes_a_split_cell_to_the_generic_bptt_when_asked(lengths):
    """Through ``dynamic_rnn``, a user's split cell runs on autodiff by default ("auto": the
    generic explicit BPTT measured slower for gated cells) and on the generic explicit BPTT with
    ``bptt="explicit"``; both give the same outputs and gradients."""
    cell = _cell("mgu")
    x = np.random.default_rng(2).standard_normal((B, T, I)).astype(np.float32)
    lengths = None if lengths is None else jnp.asarray(lengths)

    def run(cell, x, bptt):
        return rk.dynamic_rnn(cell, x, sequence_length=lengths, bptt=bptt)

    def calls(bptt):
        eqns = jax.make_jaxpr(lambda x: run(cell, x, bptt))(x).jaxpr.eqns
        return {eqn.primitive.name for eqn in eqns}

    assert "custom_vjp_call" in calls("explicit")
    assert "custom_vjp_call" not in calls("auto")

    def loss(cell, x, bptt):
        outputs, state = run(cell, x, bptt)
        return jnp.sum(jnp.sin(outputs)) + jnp.sum(jnp.cos(state))

    grads = {bptt: jax.grad(loss, argnums=(0, 1), allow_int=True)(cell, x, bptt)
             for bptt in ("explicit", "auto")}
    np.testing.assert_allclose(run(cell, x, "explicit")[0], run(cell, x, "auto")[0], rtol=1e-5,
                               atol=1e-6)
    _assert_same(grads["explicit"], grads["auto"], rtol=1e-4, atol=1e-5)


def test_split_cells_satisfy_the_protocol():
    cells = [_cell(name) for name in CELLS]
    assert all(isinstance(c, rk.SplitCell) for c in cells)
    assert not isinstance(rk.MultiRNNCell(cells[:1]), rk.SplitCell)
    assert not isinstance(rk.DropoutWrapper(cells[0]), rk.SplitCell)


@pytest.mark.parametrize("inputs_dtype, cell_dtype, tol", [
    ("float16", "float32", 1e-5), ("float32", "bfloat16", 6e-2), ("bfloat16", "float16", 2e-2)])
def test_the_generic_bptt_computes_in_the_weights_dtype(inputs_dtype, cell_dtype, tol):
    """``dynamic_rnn`` casts the inputs to the weights' dtype, so a split cell of any floating
    dtype runs on the generic explicit BPTT (``bptt="explicit"``) as on autodiff."""
    cell = jax.tree.map(lambda w: w.astype(cell_dtype) if w.dtype.kind == "f" else w, _cell("mgu"))
    x = np.random.default_rng(2).standard_normal((B, T, I)).astype(inputs_dtype)

    def loss(cell, x, bptt):
        outputs, state = rk.dynamic_rnn(cell, x, sequence_length=LENGTHS, bptt=bptt)
        assert outputs.dtype == state.dtype == jnp.dtype(cell_dtype)
        return jnp.sum(jnp.sin(outputs.astype(jnp.float32))) + jnp.sum(jnp.cos(state)), outputs

    grads = {bptt: jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True, allow_int=True),
                           static_argnums=2)(cell, x, bptt) for bptt in ("explicit", "autodiff")}
    assert [a.dtype for a in jax.tree.leaves(grads["explicit"][1])] == [
        a.dtype for a in jax.tree.leaves(grads["autodiff"][1])]
    to64 = functools.partial(jax.tree.map, lambda a: np.asarray(a, np.float64)
                             if a.dtype != jax.dtypes.float0 else a)
    _assert_same(to64(grads["explicit"]), to64(grads["autodiff"]), rtol=tol, atol=tol)
