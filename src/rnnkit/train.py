"""Training: the initial state and ``fit``, the book's epoch loop with a run folder (the train
step itself is in ``rnnkit.steps``, the run folder's files and rules in ``rnnkit.rundir``).

What ``fit`` does, as in the book (taking ``STEPS_PER_CALL`` steps in each jitted call)::

    for epoch in range(1, n_epochs + 1):
        for iteration in range(num_examples // batch_size):
            state, (loss_train, acc_train) = train_step(state, X_batch, y_batch)
        loss_val, acc_val = evaluate(state.model, X_valid, y_valid)
    evaluate(state.model, X_test, y_test)

Batches are drawn from ``np.random.default_rng([seed, epoch]).permutation(N)``, so an epoch's
batches depend only on the seed and its number, and a resumed run repeats an uninterrupted one
exactly. Run folder: ``config.json``, ``data.json`` (where the data came from); after every
epoch ``metrics.jsonl``/``.csv`` and ``learning_curves.png``, then
``checkpoints/epoch-NNNN.{safetensors,json}``; ``final.json`` (test metrics).
"""

import collections
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnkit import rundir
from rnnkit.checkpoint import latest_checkpoint, save_checkpoint
from rnnkit.datasets import DatasetError
from rnnkit.evaluate import Metrics, evaluate
from rnnkit.model import N_INPUTS, N_STEPS, build_model
from rnnkit.plots import plot_learning_curves
from rnnkit.progress import epoch_line, is_terminal, write_json, write_metrics
from rnnkit.rundir import RESUMABLE_FIELDS, read_data_source, read_run_config
from rnnkit.steps import TrainingDiverged, TrainState, make_steps, make_train_step, place_data
from rnnkit.steps import train_epoch
from rnnkit.tensorboard import write_events

# TrainState, TrainingDiverged and make_train_step live in rnnkit.steps, read_run_config and
# read_data_source in rnnkit.rundir; they stay importable from here, where the book's loop
# and earlier code import them.
__all__ = ["FitResult", "RESUMABLE_FIELDS", "TrainState", "TrainingDiverged",
           "check_image_size", "fit", "init_state", "make_optimizer", "make_train_step",
           "read_data_source", "read_run_config", "restore"]


class FitResult(NamedTuple):
    state: TrainState
    history: list  # one metrics row (dict) per epoch
    test: Metrics


def make_optimizer(config):
    return optax.adam(config.lr)


def init_state(config):
    """A fresh ``TrainState``: weights and PRNG key derived from ``config.seed``."""
    model_key, key = jax.random.split(jax.random.key(config.seed))
    model = build_model(config, key=model_key)
    zero = jnp.asarray(0, jnp.int32)
    return TrainState(model, make_optimizer(config).init(model), key, zero, zero)


def restore(run_dir, *, log=print):
    """``(state, config)`` of the newest intact checkpoint in ``run_dir``, rebuilt from its
    config; a corrupt newer one is passed over with a line to ``log``
    (``rnnkit.rundir.restore``)."""
    return rundir.restore(run_dir, init_state, log=log)


def check_image_size(datasets, source=None):
    """Raises a DatasetError unless every split's images have 28 rows of 28 pixels.

    ``source`` (a folder, or ``EMBEDDED``) is named in the message.
    """
    where = "" if source is None else f"{rundir.describe_source(source)}: "
    for name in ("train", "validation", "test"):
        pixels = getattr(datasets, name).images.shape[1]
        if pixels != N_STEPS * N_INPUTS:
            side = math.isqrt(pixels)
            square = f" ({side}x{side})" if side * side == pixels else ""
            raise DatasetError(f"{where}expected {name} images of 28x28 = 784 pixels (the RNN "
                               f"reads 28 rows of 28), got {pixels} pixels{square} per image; "
                               f"resize them to 28x28")


def fit(config, datasets, *, out_dir, resume=False, data_source=None, log=print,
        progress=None, stop=None):
    """Trains ``config``'s model on ``datasets`` (train, validation, test) into ``out_dir``.

    ``out_dir`` is held by this process while ``fit`` runs (``rnnkit.rundir.hold``); a new run
    goes only into a new or empty folder, or one whose run stopped before its first checkpoint
    (started over).

    Args:
      resume: continue the run in ``out_dir`` from its newest intact checkpoint (or start it
        over if it stopped before its first); ``config`` must equal the checkpoint's except for
        ``RESUMABLE_FIELDS`` (``epochs`` may grow).
      data_source: where ``datasets`` came from, ``EMBEDDED`` or a folder (as
        ``rnnkit.datasets.load_with_source`` says), recorded in ``data.json``; a run on the
        embedded subset cannot resume on data from a folder, nor the reverse.
      log: called with each line to print; progress: draw a progress bar (default: if stdout
        is a terminal).
      stop: called between jitted calls; once it returns True, ``fit`` raises
        KeyboardInterrupt there, keeping the checkpoints written so far.
    Raises:
      ConfigError (also: ``out_dir`` holds a run or files not rnnkit's), DatasetError (images
      not 28x28), FileNotFoundError (resume without a run), RunFolderError (``out_dir`` is in
      use or not writable), CheckpointError, MetricsError, OSError (the run folder cannot be
      written), TrainingDiverged (the last good checkpoint stays in ``out_dir``).
    """
    config.validate(datasets.train.num_examples)
    check_image_size(datasets)
    out_dir = Path(out_dir)
    devices = jax.devices()
    config = config.replace(out=str(out_dir)).with_devices(devices)
    with rundir.hold(out_dir) if resume else rundir.new_run(out_dir, log=log):
        if resume:
            state, history = _resume(config, out_dir, log, data_source)
        else:
            state, history = init_state(config), []
        rundir.write_run_files(out_dir, config, data_source)
        state = _epochs(state, history, config, datasets, out_dir, devices[:config.devices],
                        log=log, progress=progress, stop=stop)
        return FitResult(state, history, _finish(state, datasets.test, out_dir, log))


def _epochs(state, history, config, datasets, out_dir, devices, *, log, progress, stop):
    """The epochs after ``state``'s up to ``config.epochs``; appends to ``history``."""
    steps = make_steps(make_optimizer(config), bptt=config.bptt, devices=devices)
    if stop is not None:
        steps = _stopping(steps, stop)
    data = place_data(datasets.train, devices)
    show_bar = is_terminal() if progress is None else progress
    for epoch in range(int(state.epoch) + 1, config.epochs + 1):
        started = time.perf_counter()
        try:
            state, row = train_epoch(steps, state, data, config, epoch, show_bar=show_bar)
        except TrainingDiverged as e:
            e.checkpoint = latest_checkpoint(out_dir / "checkpoints")
            raise
        _check(stop)
        val = evaluate(state.model, datasets.validation.images, datasets.validation.labels)
        row = dict(epoch=epoch, **row, val_loss=val.loss, val_acc=val.accuracy,
                   seconds=round(time.perf_counter() - started, 3))
        state = state._replace(epoch=jnp.asarray(epoch, jnp.int32))
        _end_epoch(state, row, history, config, out_dir)
        log(epoch_line(row))
        _check(stop)
    return state


def _stopping(steps, stop):
    """``steps`` that checks ``stop`` before each call, once the call before the last is done
    (so that a stop is seen within two calls, not once the host has queued a whole epoch)."""
    pending = collections.deque()

    def call(*args):
        if len(pending) >= 2:
            jax.block_until_ready(pending.popleft())
        _check(stop)
        out = steps(*args)
        pending.append(jax.tree.leaves(out)[0])
        return out

    return call


def _check(stop):
    if stop is not None and stop():
        raise KeyboardInterrupt


def _end_epoch(state, row, history, config, out_dir):
    """The metrics and the plot first, then the checkpoint: a run killed in between resumes
    from the previous checkpoint, which drops the rows written after it and redoes them."""
    history.append(row)
    write_metrics(out_dir, history)
    # TensorBoard's copy of the metrics, if tensorboardX is there (of the known rows: a resume
    # without metrics.jsonl leaves the lost epochs' rows without values)
    write_events(out_dir, [r for r in history if r["seconds"] is not None])
    plot_learning_curves(history, out_dir / "learning_curves.png")
    save_checkpoint(out_dir / "checkpoints", state, epoch=row["epoch"], step=int(state.step),
                    config=config.to_dict())
    rundir.unmark(out_dir)


def _resume(config, out_dir, log, data_source):
    if rundir.can_start_over(out_dir):
        rundir.start(out_dir, log=log)
        return init_state(config), []
    state, saved = restore(out_dir, log=log)
    rundir.check_data_source(read_data_source(out_dir), data_source, out_dir)
    done = int(state.epoch)
    rundir.check_resumable(config, saved, done, out_dir)
    log(f"Resuming {out_dir} after epoch {done} (step {int(state.step)})")
    history = rundir.read_history(out_dir, done, log=log)
    write_metrics(out_dir, history)  # drop the rows of epochs after the checkpoint
    return state, history


def _finish(state, test, out_dir, log):
    metrics = evaluate(state.model, test.images, test.labels)
    write_json(out_dir / "final.json", {"epoch": int(state.epoch), "step": int(state.step),
                                        "test_loss": metrics.loss, "test_acc": metrics.accuracy})
    log(f"Test loss: {metrics.loss:.6f}\tTest accuracy: {metrics.accuracy * 100:.2f}%")
    return metrics
