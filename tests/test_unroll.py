"""static_rnn == dynamic_rnn == a Python loop, for outputs, final states and gradients.

Oracles are written here by hand: a loop that calls the cell step by step and applies TF1's
``sequence_length`` rule (zero output and a copied state past the length), and, independently,
a loop over each example cut to its own length.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnkit

B, T, I, H = 3, 4, 3, 4
LENGTHS = {"no_lengths": None, "lengths_0_full_2": np.array([0, T, 2], np.int32)}


def random_array(rng, *shape):
    return rng.normal(scale=0.5, size=shape).astype(np.float32)


def basic(rng, i=I, h=H):
    return rnnkit.BasicRNNCell.from_weights(random_array(rng, i, h), random_array(rng, h, h),
                                            random_array(rng, h))


def lstm(rng, peepholes=False, i=I, h=H):
    p = tuple(random_array(rng, h) for _ in range(3)) if peepholes else None
    return rnnkit.LSTMCell.from_weights(random_array(rng, i, 4 * h), random_array(rng, h, 4 * h),
                                        random_array(rng, 4 * h), forget_bias=0.7, peepholes=p)


def gru(rng, reset_after, i=I, h=H):
    return rnnkit.GRUCell.from_weights(random_array(rng, i, 3 * h), random_array(rng, h, 3 * h),
                                       random_array(rng, 3 * h),
                                       random_array(rng, 3 * h) if reset_after else None)


def projection(rng):
    wrapper = rnnkit.OutputProjectionWrapper(basic(rng), 2, key=jax.random.PRNGKey(0))
    return rnnkit.replace(wrapper, w=random_array(rng, H, 2), b=random_array(rng, 2))


CELLS = {
    "basic": basic,
    "lstm": lstm,
    "lstm_peepholes": functools.partial(lstm, peepholes=True),
    "gru_reset_after": functools.partial(gru, reset_after=True),
    "gru_reset_before": functools.partial(gru, reset_after=False),
    "multi_lstm_gru": lambda rng: rnnkit.MultiRNNCell([lstm(rng, h=5), gru(rng, False, i=5)]),
    "output_projection": projection,
}


def make_case(cell_name, seed=0):
    """A cell, inputs ``[B, T, I]`` and a non-zero initial state, all random."""
    rng = np.random.default_rng(seed)
    cell = CELLS[cell_name](rng)
    state = jax.tree.map(lambda z: random_array(rng, *z.shape), cell.zero_state(B))
    return cell, random_array(rng, B, T, I), state


def with_nan_padding(inputs, lengths):
    padding = np.arange(T)[None, :] >= np.asarray(lengths)[:, None]  # [B, T]
    return np.where(padding[..., None], np.nan, inputs).astype(np.float32)


# ---- the three unrolls, with one signature -------------------------------------------------------

def python_loop(cell, inputs, initial_state, lengths):
    state, outputs = initial_state, []
    for t in range(inputs.shape[1]):
        output, new_state = cell(inputs[:, t], state)
        if lengths is not None:
            valid = (t < lengths)[:, None]  # [B, 1]
            output = jnp.where(valid, output, 0.0)
            new_state = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new_state, state)
        outputs.append(output)
        state = new_state
    return jnp.stack(outputs, axis=1), state  # [B, T, O]


def static(cell, inputs, initial_state, lengths):
    steps = [inputs[:, t] for t in range(inputs.shape[1])]
    outputs, state = rnnkit.static_rnn(cell, steps, initial_state=initial_state,
                                       sequence_length=lengths)
    return jnp.stack(outputs, axis=1), state


def dynamic(cell, inputs, initial_state, lengths):
    return rnnkit.dynamic_rnn(cell, inputs, initial_state=initial_state, sequence_length=lengths)


UNROLLS = {"loop": python_loop, "static": static, "dynamic": dynamic}


def scalar_loss(outputs, state):
    """A loss that weighs every output and state unit differently."""
    return sum(jnp.sum(x * jnp.cos(jnp.arange(x.size)).reshape(x.shape))
               for x in jax.tree.leaves((outputs, state)))


def forward_and_grads(cell, inputs, initial_state, lengths, *, unroll):
    """``((outputs, final_state), grads)``, grads w.r.t. the cell, the inputs and the state."""
    def loss(cell, inputs, initial_state):
        outputs, state = UNROLLS[unroll](cell, inputs, initial_state, lengths)
        return scalar_loss(outputs, state), (outputs, state)

    (_, results), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
        cell, inputs, initial_state)
    return results, grads


# The Python-level unrolls run eagerly: their primitives compile once for all the tests. The scan
# is jitted, once per cell; XLA's optimisations are off because compiling dominates at these sizes.
_jitted_forward_and_grads = jax.jit(forward_and_grads, static_argnames="unroll",
                                    compiler_options={"xla_backend_optimization_level": 0})


def run(unroll, cell, inputs, initial_state, lengths):
    run_fn = _jitted_forward_and_grads if unroll == "dynamic" else forward_and_grads
    return run_fn(cell, inputs, initial_state, lengths, unroll=unroll)


def assert_trees_close(got, want, tol=1e-5):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=tol, atol=tol), got, want)


@pytest.mark.parametrize("lengths_name", LENGTHS)
@pytest.mark.parametrize("cell_name", CELLS)
def test_static_equals_dynamic_equals_python_loop(cell_name, lengths_name):
    cell, inputs, state = make_case(cell_name)
    lengths = LENGTHS[lengths_name]
    want = run("loop", cell, inputs, state, lengths)
    for unroll in ("static", "dynamic"):
        assert_trees_close(run(unroll, cell, inputs, state, lengths), want)
    (outputs, _), grads = want
    assert all(np.abs(g).sum() > 0 for g in jax.tree.leaves(grads[0]))  # every weight matters
    if lengths is not None:
        np.testing.assert_array_equal(outputs[0], 0.0)  # length 0: all zeros


@pytest.mark.parametrize("cell_name", CELLS)
def test_nan_in_the_padding_reaches_nothing(cell_name):
    cell, inputs, state = make_case(cell_name)
    lengths = LENGTHS["lengths_0_full_2"]
    want = run("loop", cell, inputs, state, lengths)
    for unroll in ("static", "dynamic"):  # same shapes as above: no new compilation
        got = run(unroll, cell, with_nan_padding(inputs, lengths), state, lengths)
        assert not any(np.isnan(x).any() for x in jax.tree.leaves(got)), unroll
        assert_trees_close(got, want)


@pytest.mark.parametrize("cell_name", ["lstm_peepholes", "multi_lstm_gru"])
def test_tf1_sequence_length_semantics_per_example(cell_name):
    """Example b acts as if its input were cut to its length; length 0 keeps the initial state."""
    cell, inputs, state = make_case(cell_name)
    lengths = LENGTHS["lengths_0_full_2"]
    outputs, final = rnnkit.dynamic_rnn(cell, inputs, sequence_length=lengths,
                                        initial_state=state)
    for b, length in enumerate(lengths):
        example_state = jax.tree.map(lambda s: s[b : b + 1], state)
        for t in range(length):
            output, example_state = cell(inputs[b : b + 1, t], example_state)
            np.testing.assert_allclose(outputs[b, t], output[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(outputs[b, length:], 0.0)
        assert_trees_close(jax.tree.map(lambda s: s[b : b + 1], final), example_state)
    assert_trees_close(jax.tree.map(lambda s: s[0], final), jax.tree.map(lambda s: s[0], state),
                       tol=0)


def test_time_major_is_the_same_computation():
    cell, inputs, state = make_case("lstm")
    lengths = LENGTHS["lengths_0_full_2"]
    x_tm = np.swapaxes(inputs, 0, 1)  # [T, B, I]
    out, final = rnnkit.dynamic_rnn(cell, inputs, sequence_length=lengths, initial_state=state)
    out_tm, final_tm = rnnkit.dynamic_rnn(cell, x_tm, sequence_length=lengths,
                                          initial_state=state, time_major=True)
    assert out_tm.shape == (T, B, H)
    assert_trees_close((jnp.swapaxes(out_tm, 0, 1), final_tm), (out, final), tol=1e-6)
    bi = rnnkit.bidirectional_dynamic_rnn(cell, cell, inputs, sequence_length=lengths)
    bi_tm = rnnkit.bidirectional_dynamic_rnn(cell, cell, x_tm, sequence_length=lengths,
                                             time_major=True)
    assert_trees_close((jax.tree.map(lambda o: jnp.swapaxes(o, 0, 1), bi_tm[0]), bi_tm[1]), bi,
                       tol=1e-6)


# ---- bidirectional_dynamic_rnn -------------------------------------------------------------------

@pytest.mark.parametrize("lengths_name", LENGTHS)
@pytest.mark.parametrize("cell_name", ["basic", "lstm_peepholes", "gru_reset_before"])
def test_bidirectional_forward_is_dynamic_and_backward_reads_each_sequence_reversed(
        cell_name, lengths_name):
    cell_fw, inputs, state_fw = make_case(cell_name, seed=0)
    cell_bw, _, state_bw = make_case(cell_name, seed=1)
    lengths = LENGTHS[lengths_name]
    per_example = np.full(B, T) if lengths is None else lengths
    (out_fw, out_bw), (final_fw, final_bw) = rnnkit.bidirectional_dynamic_rnn(
        cell_fw, cell_bw, with_nan_padding(inputs, per_example),
        sequence_length=lengths, initial_state_fw=state_fw, initial_state_bw=state_bw)
    assert_trees_close((out_fw, final_fw), rnnkit.dynamic_rnn(
        cell_fw, inputs, sequence_length=lengths, initial_state=state_fw))

    for b, length in enumerate(per_example):
        example_state = jax.tree.map(lambda s: s[b : b + 1], state_bw)
        for t in reversed(range(length)):  # last valid step first
            output, example_state = cell_bw(inputs[b : b + 1, t], example_state)
            np.testing.assert_allclose(out_bw[b, t], output[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out_bw[b, length:], 0.0)
        assert_trees_close(jax.tree.map(lambda s: s[b : b + 1], final_bw), example_state)


def test_reverse_sequence_reverses_within_each_length():
    xs = np.arange(T * 3, dtype=np.float32).reshape(T, 3)  # [T, B]: column b is b, b+3, ...
    got = rnnkit.reverse_sequence(xs, jnp.array([0, T, 2]))
    want = np.stack([xs[:, 0], xs[::-1, 1], np.r_[xs[1::-1, 2], xs[2:, 2]]], axis=1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(rnnkit.reverse_sequence(xs, None), xs[::-1])
    # lengths outside [0, T] act as their nearest bound, as everywhere in the unroll functions
    clipped = rnnkit.reverse_sequence(xs, jnp.array([-1, T + 4, 2]))
    np.testing.assert_array_equal(clipped, want)


# ---- gradients in float64 ------------------------------------------------------------------------

def test_check_grads_float64_with_sequence_length():
    """Numerical against analytic gradients, through a stack of LSTM (peepholes) and both GRUs."""
    rng = np.random.default_rng(6)
    stack = rnnkit.MultiRNNCell([lstm(rng, peepholes=True), gru(rng, True, i=H),
                                 gru(rng, False, i=H)])
    state = jax.tree.map(lambda z: random_array(rng, *z.shape), stack.zero_state(B))
    with jax.enable_x64(True):
        cell, inputs, state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64),
                                           (stack, random_array(rng, B, T, I), state))
        lengths = jnp.asarray(LENGTHS["lengths_0_full_2"])

        @jax.jit
        def loss(cell, inputs, state):
            outputs, final = rnnkit.dynamic_rnn(cell, inputs, sequence_length=lengths,
                                                initial_state=state)
            return scalar_loss(outputs, final)

        # Reverse mode only: dynamic_rnn's backward pass may be a custom_vjp (bptt.py), which
        # JAX cannot differentiate in forward mode.
        check_grads(loss, (cell, inputs, state), order=1, modes=("rev",), atol=1e-6, rtol=1e-6)
    assert jnp.zeros(1).dtype == jnp.float32  # x64 did not leak out of the context


# ---- dtypes, randomness and compilation ----------------------------------------------------------

def test_integer_inputs_are_fed_as_float32_like_the_book():
    """The book feeds integer NumPy batches into float32 placeholders; static_rnn accepts them."""
    cell, _, _ = make_case("basic")
    x = np.array([[[0, 1, 2], [9, 8, 7]], [[3, 4, 5], [0, 0, 0]]])  # int64, as in the book
    want = rnnkit.dynamic_rnn(cell, x.astype(np.float32))
    static_outputs, static_state = rnnkit.static_rnn(cell, [x[:, 0], x[:, 1]])
    assert_trees_close((jnp.stack(static_outputs, 1), static_state), want)
    assert_trees_close(rnnkit.dynamic_rnn(cell, x), want)


@pytest.mark.parametrize("state_keep_prob", [0.7, 1.0], ids=["autodiff", "explicit"])
def test_dropout_under_dynamic_rnn_depends_only_on_the_key(state_keep_prob):
    """With state dropout the scan runs on autodiff; without, the explicit BPTT applies the
    input and output masks to whole sequences: the same masks as static_rnn's steps."""
    rng = np.random.default_rng(3)
    cell = rnnkit.MultiRNNCell([
        rnnkit.DropoutWrapper(lstm(rng), input_keep_prob=0.7, state_keep_prob=state_keep_prob),
        rnnkit.DropoutWrapper(gru(rng, True, i=H), output_keep_prob=0.7,
                              variational_recurrent=True),
    ])
    inputs, lengths = random_array(rng, B, T, I), LENGTHS["lengths_0_full_2"]
    run = jax.jit(lambda key: rnnkit.dynamic_rnn(cell, inputs, sequence_length=lengths, key=key))
    first, again = run(jax.random.PRNGKey(0)), run(jax.random.PRNGKey(0))
    jax.tree.map(np.testing.assert_array_equal, first, again)
    assert not np.allclose(first[0], run(jax.random.PRNGKey(1))[0])
    steps = [inputs[:, t] for t in range(T)]
    static_outputs, static_state = rnnkit.static_rnn(cell, steps, sequence_length=lengths,
                                                     key=jax.random.PRNGKey(0))
    assert_trees_close((jnp.stack(static_outputs, 1), static_state), first)
    no_dropout, _ = rnnkit.static_rnn(cell, steps, sequence_length=lengths)
    assert not np.allclose(first[0], jnp.stack(no_dropout, 1))  # the key turns dropout on


TRACES = []


@jax.jit
def _jitted_dynamic_rnn(cell, inputs, lengths):
    TRACES.append(1)  # runs only while tracing
    return rnnkit.dynamic_rnn(cell, inputs, sequence_length=lengths)


def test_jitted_dynamic_rnn_compiles_once_for_the_same_shapes():
    (cell, inputs, _), (other_cell, other_inputs, _) = make_case("gru_reset_after", 0), make_case(
        "gru_reset_after", 1)
    TRACES.clear()
    first = _jitted_dynamic_rnn(cell, inputs, LENGTHS["lengths_0_full_2"])
    second = _jitted_dynamic_rnn(other_cell, other_inputs, np.array([1, 2, 3], np.int32))
    assert len(TRACES) == 1 and _jitted_dynamic_rnn._cache_size() == 1
    assert_trees_close(second, rnnkit.dynamic_rnn(other_cell, other_inputs,
                                                  sequence_length=np.array([1, 2, 3])))
    assert not np.allclose(first[0], second[0])


# ---- dtypes: an unroll computes in the weights' dtype --------------------------------------------

DTYPE_CELLS = [name for name in CELLS if name != "output_projection"]
# (inputs' dtype, weights' dtype), for every cell: weights of each floating dtype, inputs of
# another dtype (float16, bfloat16, float64) or the same; the result is in the weights' dtype.
DTYPE_CASES = {
    "f16_inputs_f32_cell": ("float16", "float32"),
    "bf16_inputs_bf16_cell": ("bfloat16", "bfloat16"),
    "f64_inputs_f16_cell": ("float64", "float16"),
    "bf16_inputs_f64_cell": ("bfloat16", "float64"),
}
# atol and rtol against the reference, by the dtype the unroll computes in
DTYPE_TOLERANCE = {"float16": 2e-2, "bfloat16": 6e-2, "float32": 1e-5, "float64": 1e-12}


def _weighted_sum(tree):
    """A float32 loss of every unit of ``tree``, each with its own weight."""
    return sum(jnp.sum(x.astype(jnp.float32) * jnp.cos(jnp.arange(x.size)).reshape(x.shape))
               for x in jax.tree.leaves(tree))


def _reversed_loop(cell, inputs, initial_state, lengths):
    """The backward direction's reference: the loop over each sequence reversed within its length
    (``reverse_sequence``, tested above), its outputs reversed back."""
    reverse = lambda x: jnp.swapaxes(rnnkit.reverse_sequence(  # noqa: E731
        jnp.swapaxes(x, 0, 1), lengths), 0, 1)
    outputs, state = python_loop(cell, reverse(inputs), initial_state, lengths)
    return reverse(outputs), state


def _dtype_runs(cell, inputs, state, lengths, compute):
    """``{name: (results, grads)}`` of every unroll and BPTT mode, given ``inputs`` and ``state``
    in their own dtype, and of the references: the loops in the ``compute`` dtype."""
    def reference(loop):
        return lambda cell, x, s: loop(cell, x.astype(compute),
                                       jax.tree.map(lambda a: a.astype(compute), s), lengths)

    def dynamic(bptt):
        return lambda cell, x, s: rnnkit.dynamic_rnn(cell, x, sequence_length=lengths,
                                                     initial_state=s, bptt=bptt)

    def bidirectional(bptt):
        return lambda cell, x, s: rnnkit.bidirectional_dynamic_rnn(
            cell, cell, x, sequence_length=lengths, initial_state_fw=s, initial_state_bw=s,
            bptt=bptt)

    runs = {"loop": reference(python_loop), "loop_reversed": reference(_reversed_loop),
            "static": lambda cell, x, s: static(cell, x, s, lengths),
            "explicit": dynamic("explicit"), "autodiff": dynamic("autodiff"),
            "bi_explicit": bidirectional("explicit"), "bi_autodiff": bidirectional("autodiff")}

    def value_and_grads(run):
        def loss(*args):
            results = run(*args)
            return _weighted_sum(results), results
        (_, results), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
            cell, inputs, state)
        return results, grads

    return {name: value_and_grads(run) for name, run in runs.items()}


@pytest.mark.parametrize("case", DTYPE_CASES)
@pytest.mark.parametrize("cell_name", DTYPE_CELLS)
def test_every_unroll_computes_in_the_weights_dtype(cell_name, case):
    inputs_dtype, weights_dtype = DTYPE_CASES[case]
    with jax.enable_x64("float64" in (inputs_dtype, weights_dtype)):
        cell, inputs, state = make_case(cell_name)
        cell = jax.tree.map(lambda w: jnp.asarray(w, weights_dtype), cell)
        inputs, state = jax.tree.map(lambda a: jnp.asarray(a, inputs_dtype),
                                     (inputs[:, :3], state))  # 3 steps: compiling dominates
        lengths = np.array([0, 3, 2], np.int32)
        runs = jax.jit(_dtype_runs, static_argnums=4, compiler_options={
            "xla_backend_optimization_level": 0})(cell, inputs, state, lengths, weights_dtype)
        # both directions read the same cell and state: the loss's gradient is the two loops'
        (out_fw, state_fw), grads_fw = runs.pop("loop")
        (out_bw, state_bw), grads_bw = runs.pop("loop_reversed")
        want = ((out_fw, state_fw), grads_fw)
        want_bi = (((out_fw, out_bw), (state_fw, state_bw)),
                   jax.tree.map(jnp.add, grads_fw, grads_bw))

        def assert_close(a, b, name):  # within the rounding of the computation and of a's dtype
            tol = max(DTYPE_TOLERANCE[weights_dtype], DTYPE_TOLERANCE[jnp.dtype(a.dtype).name])
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                                       rtol=tol, atol=tol, err_msg=name)

        for name, (results, grads) in runs.items():
            assert {a.dtype for a in jax.tree.leaves(results)} == {jnp.dtype(weights_dtype)}, name
            assert [a.dtype for a in jax.tree.leaves(grads)] == [
                a.dtype for a in jax.tree.leaves((cell, inputs, state))], name
            jax.tree.map(functools.partial(assert_close, name=name), (results, grads),
                         want_bi if name.startswith("bi_") else want)
