"""Properties of ``static_rnn``, ``dynamic_rnn`` and ``bidirectional_dynamic_rnn`` over random
shapes, lengths, dtypes, cells and BPTT modes, against a plain NumPy loop of TF1's semantics.

The oracle is written here from the equations, in float64 NumPy, with no JAX in it: a loop over
time that zeroes the output and copies the state past each sequence's length; its gradients are
central differences. The padding of the inputs given to rnnkit is NaN, so equal and finite
outputs, states and gradients also show that the padding is never read. Each example compiles
one program (the unroll and its gradient); hypothesis draws small shapes so that the file runs in
well under a minute.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit as rk
from rnnkit.activations import activation_name

SINGLE_KINDS = ("basic_tanh", "basic_relu", "lstm", "lstm_peepholes", "gru_reset_after",
                "gru_reset_before")
KINDS = SINGLE_KINDS + ("multi",)
SETTINGS = settings(max_examples=25, deadline=None)
# tolerances against the float64 oracle: (outputs and states, gradients)
TOLERANCE = {"float32": (2e-5, 2e-3), "float64": (1e-12, 1e-6)}


# ---- the oracle: NumPy, float64 ------------------------------------------------------------------

def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def ref_step(cell, x, state):
    """One step of ``cell`` (its weights as float64 NumPy arrays) from its equations."""
    if isinstance(cell, rk.MultiRNNCell):
        states = []
        for layer, layer_state in zip(cell.cells, state, strict=True):
            x, layer_state = ref_step(layer, x, layer_state)
            states.append(layer_state)
        return x, tuple(states)
    if isinstance(cell, rk.BasicRNNCell):
        act = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0.0)}[
            activation_name(cell.activation)]
        h = act(x @ cell.w_x + state @ cell.w_h + cell.b)
        return h, h
    if isinstance(cell, rk.LSTMCell):  # gates i, f, g, o; TF1 peepholes
        c, h = state
        z_i, z_f, z_g, z_o = np.split(x @ cell.w_x + h @ cell.w_h + cell.b, 4, axis=-1)
        p_i, p_f, p_o = cell.peepholes if cell.use_peepholes else (0.0, 0.0, 0.0)
        c = sigmoid(z_f + cell.forget_bias + p_f * c) * c + sigmoid(z_i + p_i * c) * np.tanh(z_g)
        h = sigmoid(z_o + p_o * c) * np.tanh(c)
        return h, rk.LSTMStateTuple(c, h)
    x_r, x_z, x_n = np.split(x @ cell.w_x + cell.b, 3, axis=-1)  # GRU: gates r, z, n
    w_r, w_z, w_n = np.split(cell.w_h, 3, axis=-1)
    b_r, b_z, b_n = np.split(cell.b_h, 3) if cell.reset_after else (0.0, 0.0, 0.0)
    r, z = sigmoid(x_r + state @ w_r + b_r), sigmoid(x_z + state @ w_z + b_z)
    if cell.reset_after:
        n = np.tanh(x_n + r * (state @ w_n + b_n))
    else:
        n = np.tanh(x_n + (r * state) @ w_n)
    h = (1.0 - z) * n + z * state
    return h, h


def ref_unroll(cell, xs, state, lengths):
    """TF1's ``dynamic_rnn`` as a loop: ``xs [B, T, I]`` -> ``(outputs [B, T, O], state)``."""
    batch, steps = xs.shape[:2]
    lengths = np.full(batch, steps) if lengths is None else lengths
    outputs = []
    for t in range(steps):
        valid = (t < lengths)[:, None]  # [B, 1]
        output, new = ref_step(cell, np.where(valid, xs[:, t], 0.0), state)
        outputs.append(np.where(valid, output, 0.0))
        state = jax.tree.map(lambda n, o: np.where(valid, n, o), new, state)  # noqa: B023
    return np.stack(outputs, axis=1), state


def ref_reverse(xs, lengths):
    """Each sequence of ``xs [B, T, ...]`` reversed within its length."""
    out = xs.copy()
    for b, length in enumerate(np.full(len(xs), xs.shape[1]) if lengths is None else lengths):
        out[b, :length] = xs[b, :length][::-1]
    return out


def ref_run(unroll, cells, xs, states, lengths):
    states = [zero_state(c, len(xs)) if s is None else s for c, s in zip(cells, states)]
    if unroll != "bidirectional":
        return ref_unroll(cells[0], xs, states[0], lengths)
    out_fw, state_fw = ref_unroll(cells[0], xs, states[0], lengths)
    out_bw, state_bw = ref_unroll(cells[1], ref_reverse(xs, lengths), states[1], lengths)
    return (out_fw, ref_reverse(out_bw, lengths)), (state_fw, state_bw)


def zero_state(cell, batch_size):
    shapes = jax.eval_shape(lambda: cell.zero_state(batch_size))  # traced, not computed
    return jax.tree.map(lambda z: np.zeros(z.shape), shapes)


def loss_of(results, weights):
    """A loss that weighs every output and state unit differently (linear: no extra rounding)."""
    return sum(jnp.sum(r * w) if isinstance(r, jax.Array) else np.sum(r * w)
               for r, w in zip(jax.tree.leaves(results), jax.tree.leaves(weights), strict=True))


def central_differences(f, tree, eps=1e-6):
    """The gradient of the scalar ``f(tree)`` in float64 NumPy, one leaf element at a time."""
    leaves, treedef = jax.tree.flatten(tree)
    grads = []
    for i, leaf in enumerate(leaves):
        grad = np.zeros_like(leaf)
        for index in np.ndindex(leaf.shape):
            def shifted(delta):
                moved = leaf.copy()
                moved[index] += delta
                return f(jax.tree.unflatten(treedef, leaves[:i] + [moved] + leaves[i + 1:]))
            grad[index] = (shifted(eps) - shifted(-eps)) / (2 * eps)
        grads.append(grad)
    return jax.tree.unflatten(treedef, grads)


# ---- rnnkit, one compiled program per shape ------------------------------------------------------

def rk_run(unroll, cells, xs, states, lengths, bptt):
    if unroll == "static":
        outputs, state = rk.static_rnn(cells[0], [xs[:, t] for t in range(xs.shape[1])],
                                       initial_state=states[0], sequence_length=lengths)
        return jnp.stack(outputs, axis=1), state
    if unroll == "dynamic":
        return rk.dynamic_rnn(cells[0], xs, sequence_length=lengths, initial_state=states[0],
                              bptt=bptt)
    return rk.bidirectional_dynamic_rnn(*cells, xs, sequence_length=lengths,
                                        initial_state_fw=states[0], initial_state_bw=states[1],
                                        bptt=bptt)


@functools.partial(jax.jit, static_argnames=("unroll", "bptt"),
                   compiler_options={"xla_backend_optimization_level": 0})
def rk_results_and_grads(cells, xs, states, lengths, weights, *, unroll, bptt):
    """``(outputs, states)`` and the gradients of ``loss_of`` for the cells, inputs and states."""
    def loss(cells, xs, states):
        results = rk_run(unroll, cells, xs, states, lengths, bptt)
        return loss_of(results, weights), results

    (_, results), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        cells, xs, states)
    return results, grads


# ---- random problems -----------------------------------------------------------------------------

def make_cell(kind, input_size, units, rng):
    """A cell of ``kind`` whose weights (biases and peepholes too) are all random float64 NumPy
    arrays (made from weights: drawing them with JAX would compile an initializer per shape)."""
    def w(*shape):
        return 0.5 * rng.standard_normal(shape)

    gates = {"basic": 1, "lstm": 4, "gru": 3}[kind.split("_")[0]]
    w_x, w_h, b = w(input_size, gates * units), w(units, gates * units), w(gates * units)
    if kind.startswith("basic"):
        return rk.BasicRNNCell.from_weights(w_x, w_h, b, activation=kind.split("_")[1])
    if kind.startswith("lstm"):
        peepholes = (w(units), w(units), w(units)) if kind == "lstm_peepholes" else None
        return rk.LSTMCell.from_weights(w_x, w_h, b, forget_bias=0.7, peepholes=peepholes)
    return rk.GRUCell.from_weights(w_x, w_h, b, w(gates * units) if kind == "gru_reset_after"
                                   else None)


@st.composite
def problems(draw, unroll):
    """``(cells, xs, states, lengths)``: float64 NumPy, one or two cells (bidirectional)."""
    batch, steps = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    input_size, units = draw(st.integers(1, 4)), draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cells = []
    for _ in range(2 if unroll == "bidirectional" else 1):
        kind = draw(st.sampled_from(KINDS))
        if kind == "multi":
            lower, upper = draw(st.lists(st.sampled_from(SINGLE_KINDS), min_size=2, max_size=2))
            cells.append(rk.MultiRNNCell([make_cell(lower, input_size, units, rng),
                                          make_cell(upper, units, units, rng)]))
        else:
            cells.append(make_cell(kind, input_size, units, rng))
    random_state = draw(st.booleans())
    states = tuple(jax.tree.map(lambda z: rng.standard_normal(z.shape), zero_state(c, batch))
                   if random_state else None for c in cells)
    lengths = draw(st.none() | st.lists(st.sampled_from([0, steps]) | st.integers(0, steps),
                                        min_size=batch, max_size=batch).map(np.array))
    return tuple(cells), rng.standard_normal((batch, steps, input_size)), states, lengths


def check_against_the_oracle(unroll, problem, dtype, bptt):
    cells, xs, states, lengths = problem
    results = ref_run(unroll, cells, xs, states, lengths)
    weights = jax.tree.map(lambda r: np.cos(np.arange(r.size)).reshape(r.shape), results)
    grads = central_differences(
        lambda args: loss_of(ref_run(unroll, *args, lengths), weights), (cells, xs, states))

    padding = np.arange(xs.shape[1])[None, :] >= (
        xs.shape[1] if lengths is None else lengths[:, None])  # [B, T]
    nan_padded = np.where(padding[..., None], np.nan, xs)
    with jax.enable_x64(dtype == "float64"):
        cast = functools.partial(jax.tree.map, lambda a: jnp.asarray(a, dtype))
        got = rk_results_and_grads(cast(cells), cast(nan_padded), cast(states),
                                   None if lengths is None else jnp.asarray(lengths, jnp.int32),
                                   cast(weights), unroll=unroll, bptt=bptt)
    values_tol, grads_tol = TOLERANCE[dtype]
    for part, want, tol in (("results", results, values_tol), ("gradients", grads, grads_tol)):
        got_part = got[0] if part == "results" else got[1]
        assert jax.tree.structure(got_part) == jax.tree.structure(want), part
        for a, b in zip(jax.tree.leaves(got_part), jax.tree.leaves(want), strict=True):
            assert a.dtype == jnp.dtype(dtype) and np.isfinite(a).all(), part
            np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=tol,
                                       atol=tol * max(1.0, np.abs(b).max(initial=0.0)),
                                       err_msg=part)


DTYPES = st.sampled_from(["float32", "float64"])
MODES = st.sampled_from(["auto", "explicit", "autodiff"])


@SETTINGS
@given(problem=problems("dynamic"), dtype=DTYPES, bptt=MODES)
def test_dynamic_rnn_is_the_oracle(problem, dtype, bptt):
    check_against_the_oracle("dynamic", problem, dtype, bptt)


@SETTINGS
@given(problem=problems("static"), dtype=DTYPES)
def test_static_rnn_is_the_oracle(problem, dtype):
    check_against_the_oracle("static", problem, dtype, "auto")


@SETTINGS
@given(problem=problems("bidirectional"), dtype=DTYPES, bptt=MODES)
def test_bidirectional_dynamic_rnn_is_the_oracle(problem, dtype, bptt):
    check_against_the_oracle("bidirectional", problem, dtype, bptt)
