"""Shared pieces of the benchmark scripts: timing, machine facts, the book's model and its steps.

Every rnnkit figure comes from the library's own public functions: ``rnnkit.steps``'s
``make_train_step`` (one jitted call a step) and ``make_steps`` (``fit``'s loop), or the
gradient of ``rnnkit.dynamic_rnn`` itself.
"""

import json
import os
import platform
import statistics
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnkit as rk
from rnnkit.model import SequenceClassifier, build_cell, top_hidden
from rnnkit.steps import STEPS_PER_CALL, TrainState, make_steps, make_train_step, place_data

CLASSES = 10
LR = 1e-3


def median_ms(fn, *, steps=30, rounds=2, warmup=3):
    """Median wall time of ``fn()`` in ms over ``rounds`` x ``steps`` calls (``fn`` must block)."""
    return interleaved_median_ms({"fn": fn}, steps=steps, rounds=rounds, warmup=warmup)["fn"]


def interleaved_median_ms(fns, *, steps=6, rounds=10, warmup=3):
    """Median ms per call of each ``fns[name]()``, measured in interleaved rounds.

    Each round times ``steps`` calls of every function in turn, so a slow spell of this shared
    machine falls on all of them alike rather than on whichever ran at that moment.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(steps):
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def machine():
    """A description of where the figures were taken."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }


def book_batch(batch_size, num_steps, input_size, seed=0):
    """A batch of the book's task: ``x [B, T, I]`` float32 in [0, 1), ``y [B]`` int32 labels."""
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, num_steps, input_size), dtype=np.float32)
    y = rng.integers(0, CLASSES, batch_size).astype(np.int32)
    return x, y


@rk.pytree.pytree_dataclass
class UserCell:
    """A built-in cell seen as a user's own split cell: the same maths, but not one of the cells
    that ``bptt.py`` knows, so ``bptt="explicit"`` runs the generic explicit BPTT on it."""

    inner: object

    output_size = property(lambda self: self.inner.output_size)
    state_size = property(lambda self: self.inner.state_size)
    input_size = property(lambda self: self.inner.input_size)

    def zero_state(self, batch_size, dtype=jnp.float32):
        return self.inner.zero_state(batch_size, dtype)

    def input_projection(self, x):
        return self.inner.input_projection(x)

    def recurrent_step(self, projected, state):
        return self.inner.recurrent_step(projected, state)

    def __call__(self, inputs, state):
        return self.inner(inputs, state)


def book_model(kind, input_size, units, *, user_cell=False):
    """The book's classifier (``rnnkit.model.SequenceClassifier``): a ``kind`` cell, then Dense(10)
    on its final state; ``user_cell`` wraps the cell in ``UserCell``. Weights from key 0."""
    k_cell, k_dense = jax.random.split(jax.random.key(0))
    cell = build_cell(kind, input_size, units, key=k_cell)
    if user_cell:
        cell = rk.pytree.build(UserCell, inner=cell)
    return SequenceClassifier(cell, rk.Dense(units, CLASSES, key=k_dense))


def train_state(model, optimizer):
    """A fresh ``rnnkit.steps.TrainState`` for ``model``."""
    zero = jnp.zeros((), jnp.int32)
    return TrainState(model, optimizer.init(model), jax.random.key(0), zero, zero)


def param_count(model):
    return sum(leaf.size for leaf in jax.tree.leaves(model))


def train_step_fn(kind, x, y, units, *, bptt="auto", devices=None):
    """``(call, step, state)``: ``call()`` runs one ``make_train_step`` step on ``x, y`` (split
    across ``devices`` when there are two or more) and returns its loss as a float."""
    optimizer = optax.adam(LR)
    step = make_train_step(optimizer, bptt=bptt, devices=devices)
    state = [train_state(book_model(kind, x.shape[-1], units), optimizer)]
    if devices is not None and len(devices) > 1:
        x, y = jax.device_put((x, y), rk.parallel.batch_sharding(devices))
    else:
        x, y = jax.device_put((x, y), devices[0] if devices else None)

    def call():
        state[0], (loss, _) = step(state[0], x, y)
        return float(loss)

    return call, step, state


def fit_loop_fn(kind, x, y, units, *, devices=None, steps_per_call=None):
    """``call()`` runs ``fit``'s training loop (``make_steps``): ``steps_per_call`` steps (default
    ``rnnkit.steps.STEPS_PER_CALL``), each on a permutation of ``x`` placed on ``devices`` as
    ``fit`` places its data. Returns ``(call, steps_per_call, state)``."""
    steps_per_call = steps_per_call or STEPS_PER_CALL
    optimizer = optax.adam(LR)
    devices = rk.parallel.batch_devices(len(x), devices)
    steps = make_steps(optimizer, devices=devices)
    data = place_data(_Data(x.reshape(len(x), -1), y), devices)
    rng = np.random.default_rng(0)
    index = np.stack([rng.permutation(len(x)) for _ in range(steps_per_call)])  # [k, B]
    state = [train_state(book_model(kind, x.shape[-1], units), optimizer)]
    sums, first_bad = jnp.zeros(2), jnp.asarray(-1, jnp.int32)

    def call():
        state[0], _, _, (loss, _) = steps(state[0], sums, first_bad, data, index)
        return float(loss)

    return call, steps_per_call, state


class _Data(NamedTuple):
    """What ``place_data`` reads of a ``DataSet``."""

    images: np.ndarray  # [N, T*I]
    labels: np.ndarray  # [N]


def grad_fn(kind, x, y, units, *, bptt="auto", unroll=None, user_cell=False, loop="dynamic"):
    """``(call, grad, model)``: ``call()`` runs ``grad = jit(value_and_grad(loss))`` once, where
    the loss is the book model's, unrolled by ``rk.dynamic_rnn(..., bptt=, unroll=)`` (or
    ``rk.static_rnn`` with ``loop="static"``): the unroll functions' own loops, without the
    optimizer."""
    model = book_model(kind, x.shape[-1], units, user_cell=user_cell)

    def loss(model, x, y):
        if loop == "static":
            _, state = rk.static_rnn(model.cell, [x[:, t] for t in range(x.shape[1])])
        else:
            _, state = rk.dynamic_rnn(model.cell, x, bptt=bptt, unroll=unroll)
        logits = model.dense(top_hidden(state))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grad = jax.jit(jax.value_and_grad(loss))
    x, y = jnp.asarray(x), jnp.asarray(y)
    return (lambda: jax.block_until_ready(grad(model, x, y))), grad, model


def write_json(path, payload):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)
