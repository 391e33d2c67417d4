"""The book's model in every framework the peers benchmark compares.

Model: RNN(kind, H) over ``x [B, T, I]`` -> Dense(10) on the final hidden state -> sparse softmax
cross-entropy, float32, Adam(1e-3). Each builder takes ``(kind, x, y, units)`` with NumPy
``x [B, T, I]`` float32 and ``y [B]`` int32 and returns a ``Peer`` bound to that batch. Every call
of a ``Peer`` blocks until its result is ready, so wall time around it is the step's time.

The peer frameworks are imported inside their builder: a run (or a memory child process)
loads only the peers it measures.
"""

import functools
import os
from typing import Callable, NamedTuple, Optional

import jax

import rnnkit as rk
from common import CLASSES, LR, fit_loop_fn, param_count, train_step_fn

GATES = {"basic": 1, "lstm": 4, "gru": 3}


class Peer(NamedTuple):
    """One framework's model, optimizer and batch."""

    params: int  # trainable parameters
    train_step: Callable[[], float]  # forward + backward + Adam update; returns the loss
    forward: Callable[[], object]  # logits [B, 10] of the batch (inference)
    compile: Optional[Callable[[], object]] = None  # compile the one-device step (JAX AOT)
    steps_per_call: int = 1  # train steps one call of train_step takes


def rnnkit_peer(kind, x, y, units, *, bptt="auto", split=True):
    """rnnkit: the library's train step, ``rnnkit.steps.make_train_step`` (one jitted call a step).

    With ``split``, the batch is split across as many of JAX's devices as divide it, as
    ``rnnkit train`` does (the benchmark gives JAX one CPU device per core); the forward pass
    (inference) runs on one device, as ``rnnkit.evaluate`` does.
    """
    devices = rk.parallel.batch_devices(len(x)) if split else jax.devices()[:1]
    train_step, step, state = train_step_fn(kind, x, y, units, bptt=bptt, devices=devices)
    one_device = len(devices) == 1  # the split step is not one jitted function to lower
    compile = (lambda: step.lower(state[0], x, y).compile()) if one_device else None
    return Peer(param_count(state[0].model), train_step, _forward(state, x), compile)


def _forward(state, x):
    """Logits of ``x`` by ``state[0].model`` (jitted, on one device), waited for."""
    logits = jax.jit(lambda model, x: model(x))
    x_one = jax.device_put(x, jax.devices()[0])
    return lambda: logits(jax.device_put(state[0].model, jax.devices()[0]),
                          x_one).block_until_ready()


def torch_peer(kind, x, y, units):
    """PyTorch: ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (batch_first) + ``nn.Linear``, eager mode."""
    import torch
    from torch import nn

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    layer = {"basic": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
    rnn, dense = layer(x.shape[-1], units, batch_first=True), nn.Linear(units, CLASSES)
    params = [*rnn.parameters(), *dense.parameters()]
    optimizer = torch.optim.Adam(params, lr=LR)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()

    def logits(inputs):
        _, state = rnn(inputs)
        h_n = state[0] if kind == "lstm" else state  # [layers, B, H]; LSTM's state is (h, c)
        return dense(h_n[-1])

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(logits(xt), yt)
        loss.backward()
        optimizer.step()
        return loss.item()

    def forward():
        with torch.inference_mode():
            return logits(xt)

    return Peer(sum(p.numel() for p in params), train_step, forward)


def keras_peer(kind, x, y, units, *, step="custom"):
    """Keras 3 on TensorFlow: SimpleRNN/LSTM/GRU + Dense in a ``Sequential``.

    ``step="custom"``: a ``tf.function(jit_compile=False)`` step with ``tf.GradientTape`` and
    ``optimizer.apply``; ``"train_on_batch"``: ``model.compile(jit_compile=False)`` +
    ``model.train_on_batch``, the same graph behind Keras's per-call bookkeeping.
    """
    os.environ["KERAS_BACKEND"] = "tensorflow"  # read once, at keras's first import
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"keras was imported earlier with backend {keras.backend.backend()!r}")
    keras.utils.set_random_seed(0)
    layer = {"basic": keras.layers.SimpleRNN, "lstm": keras.layers.LSTM, "gru": keras.layers.GRU}
    model = keras.Sequential([keras.Input(x.shape[1:]), layer[kind](units),
                              keras.layers.Dense(CLASSES)])
    xt, yt = tf.constant(x), tf.constant(y)
    predict = tf.function(lambda inputs: model(inputs, training=False), jit_compile=False)
    if step == "train_on_batch":
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(optimizer=keras.optimizers.Adam(LR), loss=loss, jit_compile=False)
        return Peer(model.count_params(), lambda: float(model.train_on_batch(xt, yt)),
                    lambda: predict(xt).numpy())
    optimizer = keras.optimizers.Adam(LR)
    optimizer.build(model.trainable_variables)  # its slots are variables: create them eagerly

    @tf.function(jit_compile=False)
    def train(inputs, labels):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return Peer(model.count_params(), lambda: float(train(xt, yt)), lambda: predict(xt).numpy())


def flax_peer(kind, x, y, units):
    """Flax NNX: ``nnx.RNN`` of SimpleCell/OptimizedLSTMCell/GRUCell + ``nnx.Linear``.

    The ``nnx.jit`` steps go through ``nnx.cached_partial``, Flax's documented way to skip
    re-walking the module graph on every call.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    cells = {"basic": nnx.SimpleCell, "lstm": nnx.OptimizedLSTMCell, "gru": nnx.GRUCell}
    rngs = nnx.Rngs(0)

    class Model(nnx.Module):
        def __init__(self):
            self.rnn = nnx.RNN(cells[kind](x.shape[-1], units, rngs=rngs))
            self.dense = nnx.Linear(units, CLASSES, rngs=rngs)

        def __call__(self, inputs):
            return self.dense(self.rnn(inputs)[:, -1])  # the last output is the final h

    model = Model()
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

    @nnx.jit
    def train(model, optimizer, inputs, labels):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(inputs), labels).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    train_cached = nnx.cached_partial(train, model, optimizer)
    predict = nnx.cached_partial(nnx.jit(lambda model, inputs: model(inputs)), model)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    count = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return Peer(count, lambda: float(train_cached(xj, yj)),
                lambda: predict(xj).block_until_ready())


def rnnkit_fit_peer(kind, x, y, units, *, devices=None):
    """rnnkit's own training loop, as ``rnnkit.fit`` (``rnnkit train``) runs it:
    ``rnnkit.steps.make_steps``, ``STEPS_PER_CALL`` steps per jitted call split across the
    default devices, each step gathering its batch (a permutation of ``x``) from the data on the
    devices. One call of ``train_step`` is that many steps (``steps_per_call``)."""
    train_step, steps_per_call, state = fit_loop_fn(kind, x, y, units, devices=devices)
    return Peer(param_count(state[0].model), train_step, _forward(state, x),
                steps_per_call=steps_per_call)


BUILDERS = {
    "rnnkit": rnnkit_peer,
    "rnnkit-fit": rnnkit_fit_peer,
    "rnnkit-explicit": functools.partial(rnnkit_peer, bptt="explicit"),
    "rnnkit-autodiff": functools.partial(rnnkit_peer, bptt="autodiff"),
    "rnnkit-1dev": functools.partial(rnnkit_peer, split=False),
    "torch": torch_peer,
    "keras": keras_peer,
    "keras-tob": functools.partial(keras_peer, step="train_on_batch"),
    "flax": flax_peer,
}
DEFAULT_FRAMEWORKS = ("rnnkit", "rnnkit-fit", "rnnkit-explicit", "rnnkit-autodiff",
                      "rnnkit-1dev", "torch", "keras", "flax")


def rnnkit_params(kind, input_size, units):
    """Parameters of rnnkit's model: ``w_x [I, G*H]``, ``w_h [H, G*H]``, ``b [G*H]`` (and the GRU's
    ``b_h [G*H]``), then Dense ``[H, 10]`` + ``[10]``."""
    gated = GATES[kind] * units
    biases = 2 * gated if kind == "gru" else gated
    return (input_size + units) * gated + biases + (units + 1) * CLASSES


def param_offset(framework, kind, units):
    """``params(framework) - params(rnnkit)`` that the frameworks' bias layouts explain.

    PyTorch's RNN and LSTM keep two biases that are only ever added (``b_ih + b_hh``), so they have
    one redundant ``[G*H]`` more; its GRU (like rnnkit's and Keras's, reset_after) needs both.
    Flax's GRUCell has no recurrent bias (``n = tanh(x w_in + b_in + r * (h w_hn))``): ``3H`` fewer.
    """
    if framework == "torch" and kind != "gru":
        return GATES[kind] * units
    if framework == "flax" and kind == "gru":
        return -3 * units
    return 0
