"""Shared pieces of the benchmark scripts: timing, machine facts, rnnkit's train step."""

import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnkit as rk

CELLS = {"basic": rk.BasicRNNCell, "lstm": rk.LSTMCell, "gru": rk.GRUCell}


def median_ms(fn, *, steps=30, rounds=2, warmup=3):
    """Median wall time of ``fn()`` in ms over ``rounds`` x ``steps`` calls (``fn`` must block)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        for _ in range(steps):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def blocking(fn, *args):
    """``fn(*args)``, waiting until its arrays are computed (for timing jitted calls)."""
    return jax.block_until_ready(fn(*args))


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
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, num_steps, input_size), dtype=np.float32)
    y = rng.integers(0, 10, batch_size).astype(np.int32)
    return jnp.asarray(x), jnp.asarray(y)


@rk.pytree.pytree_dataclass
class UserCell:
    """A built-in cell seen as a user's own split cell: the same maths, but not one of the cells
    that ``bptt.py`` knows, so ``bptt="fused"`` runs the generic explicit BPTT on it."""

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


def rnnkit_train_step(kind, input_size, units, *, bptt="auto", unroll=None, classes=10, lr=1e-3,
                      user_cell=False, devices=None):
    """(params, opt_state, step) for cell -> dynamic_rnn -> Dense(final h) -> softmax xent.

    ``user_cell`` wraps the cell in ``UserCell`` (the loops a user's own cell gets). With two or
    more ``devices``, the step splits the batch across them as ``rnnkit train`` does
    (``rnnkit.parallel.data_parallel``); pass it ``x, y`` placed by ``place_batch``."""
    k_cell, k_dense = jax.random.split(jax.random.key(0))
    cell = CELLS[kind](input_size, units, key=k_cell)
    if user_cell:
        cell = rk.pytree.build(UserCell, inner=cell)
    params = (cell, rk.Dense(units, classes, key=k_dense))
    optimizer = optax.adam(lr)

    def loss_fn(params, x, y):
        logits = rnnkit_logits(params, x, bptt=bptt, unroll=unroll)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def grad_fn(params, x, y, key):  # key: data_parallel's signature; no randomness here
        return jax.value_and_grad(loss_fn)(params, x, y)

    if devices is not None and len(devices) > 1:
        grad_fn = rk.parallel.data_parallel(grad_fn, devices)

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = grad_fn(params, x, y, None)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return params, optimizer.init(params), step


def place_batch(x, y, devices):
    """``x, y`` on the device, or split across ``devices`` for a data-parallel step."""
    if devices is None or len(devices) < 2:
        return jnp.asarray(x), jnp.asarray(y)
    return jax.device_put((x, y), rk.parallel.batch_sharding(devices))


def rnnkit_logits(params, x, *, loop="dynamic", bptt="auto", unroll=None):
    """Logits ``[B, classes]`` of ``(cell, dense)`` on ``x [B, T, I]``: Dense(final hidden state).

    ``loop="static"`` unrolls with ``static_rnn`` (one graph node per step; ``bptt`` and
    ``unroll`` then do not apply), ``"dynamic"`` with ``dynamic_rnn``.
    """
    cell, dense = params
    if loop == "static":
        _, state = rk.static_rnn(cell, [x[:, t] for t in range(x.shape[1])])
    else:
        _, state = rk.dynamic_rnn(cell, x, bptt=bptt, unroll=unroll)
    h = state.h if isinstance(state, rk.LSTMStateTuple) else state
    return dense(h)


def time_rnnkit_train(kind, batch, units, **options):
    x, y = batch
    params, opt_state, step = rnnkit_train_step(kind, x.shape[-1], units, **options)
    state = [params, opt_state]

    def run():
        state[0], state[1], loss = step(state[0], state[1], x, y)
        loss.block_until_ready()

    return median_ms(run)


def write_json(path, payload):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)
