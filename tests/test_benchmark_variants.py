"""The explicit-BPTT variants (``benchmarks/bptt_variants.py``) that ``benchmarks/ab_variants.py``
times against the library's own compute the same gradients (float64): a timing comparison
between them is a fair one."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
import rnnkit.bptt as bptt

sys.path.insert(0, str(pathlib.Path(__file__).parents[1] / "benchmarks"))
import ab_variants  # noqa: E402  (scripts of the benchmarks folder, not a package)
import bptt_variants  # noqa: E402

T, B, I, H = 12, 3, 4, 5

VARIANTS = {  # name: (the bptt function it replaces, its replacement)
    "in-loop": ("_recurrence", bptt_variants.in_loop_recurrence()),
    "in-loop-transposed": ("_recurrence", bptt_variants.in_loop_recurrence(transposed=True)),
    "chunks-of-4": ("_recurrence", bptt_variants.in_loop_recurrence(4, True)),
    "chunks-of-3": ("_recurrence", bptt_variants.in_loop_recurrence(3, True)),
    "chunks-of-3-untransposed": ("_recurrence", bptt_variants.in_loop_recurrence(3)),
    "joint-forward": ("_forward", bptt_variants.joint_forward),
    "joint-weight-grads": ("_weight_grads", bptt_variants.joint_weight_grads(False)),
    "joint-weight-grads-and-bias": ("_weight_grads", bptt_variants.joint_weight_grads(True)),
}


def _value_and_grads(cell, xs):
    def loss(cell, xs):
        outputs, final = rk.dynamic_rnn(cell, xs, bptt="fused")
        return jnp.sum(jnp.sin(outputs)) + sum(jnp.sum(jnp.cos(s)) for s in
                                               jax.tree.leaves(final))
    return jax.value_and_grad(loss, argnums=(0, 1))(cell, xs)


LSTM_VARIANTS = {"backward-factors": ("_recurrence", bptt_variants.coefficients_recurrence()),
                 "backward-weights-transposed": ("_recurrence",
                                                 bptt_variants.transposed_weights_recurrence())}
CASES = [(kind, variant) for kind in ("basic", "lstm") for variant in VARIANTS] + [
    ("lstm", variant) for variant in LSTM_VARIANTS]


@pytest.mark.parametrize(("kind", "variant"), CASES)
def test_variant_computes_the_library_gradients(kind, variant):
    name, replacement = {**VARIANTS, **LSTM_VARIANTS}[variant]
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return replacement(*args, **kwargs)

    with jax.enable_x64(True):
        make = rk.BasicRNNCell if kind == "basic" else rk.LSTMCell
        cell = jax.tree.map(lambda w: w.astype(jnp.float64) + 0.1,  # non-zero biases too
                            make(I, H, key=jax.random.key(0)))
        xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float64)
        expected = _value_and_grads(cell, xs)
        with bptt_variants.patched(bptt, **{name: counted}):
            got = _value_and_grads(cell, xs)
    assert calls, f"the variant's {name} was not called"
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_chunks_must_divide_the_steps():
    with bptt_variants.patched(bptt, _recurrence=bptt_variants.in_loop_recurrence(5, True)):
        cell = rk.BasicRNNCell(I, H, key=jax.random.key(0))
        with pytest.raises(AssertionError, match="T=12 is not a multiple of chunk=5"):
            _value_and_grads(cell, jnp.ones((B, T, I)))


@pytest.mark.parametrize("options", [None, {"xla_cpu_use_fusion_emitters": False}])
def test_jit_with_options_compiles_with_its_options_whatever_the_caller_asks(options):
    """The fusion-emitters experiment's jit: the same numbers, and a bad option reaches XLA."""
    def f(x):
        return jnp.tanh(x) * 2.0 + jnp.sum(x)

    x = jnp.linspace(-2.0, 2.0, 7)
    jit = ab_variants.jit_with_options(options)
    np.testing.assert_allclose(jit(f, compiler_options={"no_such_option": 1})(x), f(x),
                               rtol=1e-6)
    with pytest.raises(Exception, match="no_such_option"):
        ab_variants.jit_with_options({"no_such_option": 1})(f)(x)
