"""The train step: one (``make_train_step``), ``k`` in one jitted call (``make_steps``), and an
epoch of them (``train_epoch``), on one device or split across several (``rnnkit.parallel``).

A train step, for ``state`` a ``TrainState`` and ``loss(model, *batch, key, bptt) -> (loss,
aux)`` (a task's loss; by default the classifier's, whose ``aux`` is its accuracy)::

    key, step_key = split(state.key)
    (loss, aux), grads = value_and_grad(loss, has_aux=True)(state.model, *batch)
    state = state with the model Adam-updated, key, step + 1
    return state, (loss, *aux)
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from rnnkit import speed
from rnnkit.model import loss_and_accuracy
from rnnkit.parallel import AXIS, batch_sharding, bounded_queue, data_parallel, put
from rnnkit.progress import step_bar

# Train steps per jitted call in fit: the host dispatches once per STEPS_PER_CALL steps.
STEPS_PER_CALL = 32


class TrainState(NamedTuple):
    """Everything a run needs to continue: model, Adam's state, PRNG key, epochs and steps done."""

    model: object
    opt_state: object
    key: jax.Array  # a typed PRNG key, split once per step
    epoch: jax.Array  # int32, epochs completed
    step: jax.Array  # int32, steps completed
    carry: object = None  # the RNN state carried from step to step (stateful training), or None


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; ``epoch`` and ``step`` say where."""

    def __init__(self, epoch, step, checkpoint=None):
        super().__init__(epoch, step)
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint

    def __str__(self):
        kept = (f"the last good checkpoint is {self.checkpoint}" if self.checkpoint
                else "no checkpoint was written")
        return (f"training diverged: the loss is NaN or infinite at step {self.step} "
                f"(epoch {self.epoch}); {kept}. Try a lower --lr")


def classifier_loss(model, images, labels, *, key=None, bptt="auto"):
    """The book's classifier's loss for a step: ``(cross-entropy, (accuracy,))``."""
    loss, accuracy = loss_and_accuracy(model, images, labels, key=key, bptt=bptt)
    return loss, (accuracy,)


def _step(optimizer, bptt, devices, loss):
    """The train step, not jitted: ``step(state, *batch) -> (state, (loss, *aux))``, splitting
    the batch across ``devices`` when there are two or more.

    A state that carries an RNN state (``state.carry``, stateful training) passes it to the
    loss as ``carry=``, which then returns ``(loss, (aux, new_carry))``; such a step runs on
    one device (the carried states belong to the batch's sequences, not to a device's slice).
    """
    grad_fn = jax.value_and_grad(loss, has_aux=True)

    def grads(model, *batch_and_key):
        *batch, key = batch_and_key
        return grad_fn(model, *batch, key=key, bptt=bptt)

    if _splits(devices):
        grads = data_parallel(grads, devices)

    def step(state, *batch):
        key, step_key = jax.random.split(state.key)
        carry = state.carry
        if carry is None:
            (value, aux), g = grads(state.model, *batch, step_key)
        elif _splits(devices):
            raise ValueError("devices: a stateful train step (state.carry) runs on one device, "
                             f"got {len(devices)}")
        else:
            (value, (aux, carry)), g = grad_fn(state.model, *batch, key=step_key, bptt=bptt,
                                               carry=carry)
        updates, opt_state = optimizer.update(g, state.opt_state, state.model)
        model = optax.apply_updates(state.model, updates)
        new = state._replace(model=model, opt_state=opt_state, key=key, step=state.step + 1,
                             carry=carry)
        return new, (value, *aux)

    return step


def _splits(devices):
    return devices is not None and len(devices) > 1


def make_train_step(optimizer, *, bptt="auto", devices=None, loss=classifier_loss):
    """A jitted ``train_step(state, *batch) -> (state, (loss, *aux))``: for the classifier,
    ``train_step(state, images [B, D], labels [B]) -> (state, (loss, accuracy))``.

    ``bptt`` is ``dynamic_rnn``'s: "auto", "explicit", "autodiff" or "cudnn"; ``loss`` a task's
    (``rnnkit.tasks``). With two or more ``devices``, each step splits the batch across them
    (``rnnkit.parallel.data_parallel``); ``B`` must then be a multiple of their number, and a
    call waits for the step before last (``rnnkit.parallel.bounded_queue``).
    """
    train_step = jax.jit(_step(optimizer, bptt, devices, loss))
    if not _splits(devices):
        return train_step
    sharding = batch_sharding(devices)
    return bounded_queue(lambda state, *batch: train_step(
        state, *(_placed(array, sharding) for array in batch)))


def _placed(array, sharding):
    """``array`` split across the devices: as it is when it already is (``device_put`` of a
    placed array costs host time in every call), else copied there."""
    if isinstance(array, jax.Array) and array.sharding == sharding:
        return array
    return put(array, sharding)


def make_steps(optimizer, *, bptt="auto", devices=None, loss=classifier_loss):
    """What ``fit`` runs: ``steps(state, sums, first_bad, arrays, index [k, B])`` takes ``k``
    train steps, step ``i`` on the rows ``index[i]`` of each of ``arrays`` (the data, ``[N,
    ...]`` each: for the classifier ``(images, labels)``), in one jitted call (one dispatch for
    ``k`` steps: the host stays out of the cores' way).

    Returns ``(state, sums + the steps' (loss, *aux), first_bad or the first step whose loss is
    not finite, the last step's (loss, *aux))``. ``arrays`` should already be on the devices
    (``place_data``).
    """
    step = _step(optimizer, bptt, devices, loss)

    def steps(state, sums, first_bad, arrays, index):
        def body(carry, rows):
            state, sums, first_bad = carry
            state, metrics = step(state, *(array[rows] for array in arrays))
            metrics = jnp.stack(metrics)
            bad = (first_bad < 0) & ~jnp.isfinite(metrics[0])
            return (state, sums + metrics, jnp.where(bad, state.step, first_bad)), metrics

        (state, sums, first_bad), metrics = jax.lax.scan(body, (state, sums, first_bad), index)
        return state, sums, first_bad, metrics[-1]

    compiled = {}  # one jitted function per set of compiler options (speed.py's rule)

    def jitted(state):
        options = speed.loop_compiler_options(state.model, devices, bptt)
        key = tuple(sorted(options.items()))
        if key not in compiled:
            compiled[key] = jax.jit(steps, compiler_options=options or None)
        return compiled[key]

    if not _splits(devices):
        return lambda state, *rest: jitted(state)(state, *rest)
    split_rows = NamedSharding(batch_sharding(devices).mesh, PartitionSpec(None, AXIS))
    return bounded_queue(lambda state, sums, first_bad, arrays, index: jitted(state)(
        state, sums, first_bad, arrays, put(index, split_rows)))


def place_data(arrays, devices):
    """``arrays`` (a tuple of host arrays, or a ``DataSet``'s images and labels) on the device,
    or a copy on each of ``devices``."""
    if hasattr(arrays, "images"):
        arrays = (arrays.images, arrays.labels)
    arrays = tuple(np.asarray(a) for a in arrays)
    if not _splits(devices):
        return jax.device_put(arrays, devices[0] if devices else None)
    return put(arrays, NamedSharding(batch_sharding(devices).mesh, PartitionSpec()))


def epoch_batches(seed, epoch, num_examples, batch_size):
    """The index arrays of one epoch's batches: ``num_examples // batch_size`` of them."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return [order[i * batch_size:(i + 1) * batch_size]
            for i in range(num_examples // batch_size)]


def train_epoch(steps, state, arrays, index, epoch, *, metrics=("loss", "acc"), show_bar):
    """One epoch of steps (``make_steps``, on ``arrays = place_data(...)``, the batches' rows
    ``index [steps, B]``, ``STEPS_PER_CALL`` steps a call); returns the new state and its
    metrics: ``train_<name>`` of the last batch and ``train_<name>_mean`` over the epoch, for
    each of ``metrics`` (the loss's name first, then the task's other metrics).

    Raises:
      TrainingDiverged: a step's loss was NaN or infinite (checked once, at the end).
    """
    sums, first_bad = jnp.zeros(len(metrics), jnp.float32), jnp.asarray(-1, jnp.int32)
    with step_bar(len(index), f"epoch {epoch}", enabled=show_bar) as advance:
        for start in range(0, len(index), STEPS_PER_CALL):
            chunk = index[start:start + STEPS_PER_CALL]
            state, sums, first_bad, last = steps(state, sums, first_bad, arrays, chunk)
            advance(len(chunk))
    sums, first_bad, last = jax.device_get((sums, first_bad, last))  # the epoch's one sync
    if first_bad >= 0 or not np.all(np.isfinite(sums)):
        raise TrainingDiverged(epoch, int(first_bad))
    means = sums / len(index)
    row = {f"train_{name}": float(value) for name, value in zip(metrics, last)}
    return state, row | {f"train_{name}_mean": float(v) for name, v in zip(metrics, means)}
