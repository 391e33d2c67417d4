"""Training: the initial state and ``fit``, the one epoch loop for every task, with a run folder
(the train step itself is in ``rnnkit.steps``, the run folder's files and rules in
``rnnkit.rundir``, what differs between tasks in ``rnnkit.tasks``).

What ``fit`` does, as in the book (taking ``STEPS_PER_CALL`` steps in each jitted call)::

    for epoch in range(1, n_epochs + 1):
        for batch in task.train_arrays(config, data, epoch):     # e.g. X_batch, y_batch
            state, (loss_train, *metrics) = train_step(state, *batch)
        row = task.validate(state.model, data)                   # e.g. loss_val, acc_val
    task.test(state.model, data)

An epoch's batches depend only on the seed and its number (for MNIST,
``np.random.default_rng([seed, epoch]).permutation(N)``), so a resumed run repeats an
uninterrupted one exactly. Run folder: ``config.json``, ``data.json`` (where the data came from);
after every epoch ``metrics.jsonl``/``.csv``, TensorBoard events and the task's plots, then
``checkpoints/epoch-NNNN.{safetensors,json}``; ``final.json`` (test metrics).
"""

import collections
import contextlib
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnkit import distributed, rundir
from rnnkit.checkpoint import latest_checkpoint, save_checkpoint
from rnnkit.parallel import local_copy, take_devices
from rnnkit.progress import is_terminal, row_fields, write_json, write_metrics
from rnnkit.rundir import RESUMABLE_FIELDS, read_data_source, read_run_config
from rnnkit.steps import TrainingDiverged, TrainState, make_steps, make_train_step, place_data
from rnnkit.steps import train_epoch
from rnnkit.tasks import task_of
from rnnkit.tasks.mnist import check_image_size
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
    test: dict  # the task's test metrics (final.json)


def make_optimizer(config):
    return optax.adam(config.lr)


def init_state(config, task=None):
    """A fresh ``TrainState`` of ``config``'s task: weights and PRNG key derived from
    ``config.seed``."""
    task = task or task_of(config.to_dict())
    model_key, key = jax.random.split(jax.random.key(config.seed))
    model = task.init_model(config, key=model_key)
    zero = jnp.asarray(0, jnp.int32)
    carry = task.initial_carry(config, model) if hasattr(task, "initial_carry") else None
    return TrainState(model, make_optimizer(config).init(model), key, zero, zero, carry)


def restore(run_dir, *, log=print):
    """``(state, config)`` of the newest intact checkpoint in ``run_dir``, rebuilt from its
    config; a corrupt newer one is passed over with a line to ``log``
    (``rnnkit.rundir.restore``)."""
    return rundir.restore(run_dir, init_state, log=log)


def fit(config, datasets, *, out_dir, resume=False, data_source=None, log=print,
        progress=None, stop=None, task=None):
    """Trains ``config``'s model on ``datasets`` into ``out_dir``: for the classifier, the
    train, validation and test splits; for another task, its ``load_data``'s data.

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
      task: the ``rnnkit.tasks.Task`` (default: the one ``config.task`` names).
    Raises:
      ConfigError (also: ``out_dir`` holds a run or files not rnnkit's), DatasetError (images
      not 28x28), FileNotFoundError (resume without a run), RunFolderError (``out_dir`` is in
      use or not writable), CheckpointError, MetricsError, OSError (the run folder cannot be
      written), TrainingDiverged (the last good checkpoint stays in ``out_dir``).
    """
    task = task or task_of(config.to_dict())
    if hasattr(datasets, "train"):  # data with fixed training examples
        config.validate(datasets.train.num_examples)
    else:
        config.validate()
    if task.name == "mnist":
        check_image_size(datasets)
    out_dir = Path(out_dir)
    devices = jax.devices()
    config = config.replace(out=str(out_dir)).with_devices(devices)
    main = distributed.is_main()  # of several processes (rnnkit.distributed), process 0 writes
    if not main:
        log, progress = _quiet, False
    distributed.check_same_run(config, task, datasets)
    with _run_folder(out_dir, resume, main, log):
        if resume and not main:
            state, history = _follow(config, task, out_dir), []
        elif resume:
            state, history = _resume(config, task, out_dir, log, data_source)
        else:
            state, history = init_state(config, task), []
        distributed.agree("resume", {"epoch": int(state.epoch), "step": int(state.step)})
        if main:
            rundir.write_run_files(out_dir, config, data_source)
        state = _epochs(state, history, config, task, datasets, out_dir,
                        take_devices(devices, config.devices), log=log, progress=progress,
                        stop=stop, main=main)
        test = _finish(local_copy(state), task, datasets, out_dir, log) if main else {}
        return FitResult(state, history, test)


def _quiet(*args):
    """A log that drops its lines: only process 0 of several prints."""


def _run_folder(out_dir, resume, main, log):
    """Holds ``out_dir`` for the run; of several processes, only process 0 does (the others
    never write it)."""
    if not main:
        return contextlib.nullcontext()
    return rundir.hold(out_dir) if resume else rundir.new_run(out_dir, log=log)


def _epochs(state, history, config, task, data, out_dir, devices, *, log, progress, stop,
            main=True):
    """The epochs after ``state``'s up to ``config.epochs``; appends to ``history``."""
    steps = make_steps(make_optimizer(config), bptt=config.bptt, devices=devices,
                       loss=task.loss)
    if stop is not None:
        steps = _stopping(steps, stop)
    show_bar = is_terminal() if progress is None else progress
    placed = (None, None)  # (host arrays, their copies on the devices): placed once if fixed
    for epoch in range(int(state.epoch) + 1, config.epochs + 1):
        started = time.perf_counter()
        arrays, index = task.train_arrays(config, data, epoch)
        if placed[0] is None or any(a is not b for a, b in zip(arrays, placed[0])):
            placed = (arrays, place_data(arrays, devices))
        try:
            state, row = train_epoch(steps, state, placed[1], index, epoch,
                                     metrics=task.metrics, show_bar=show_bar)
        except TrainingDiverged as e:
            e.checkpoint = latest_checkpoint(out_dir / "checkpoints")
            raise
        _check(stop)
        state = state._replace(epoch=jnp.asarray(epoch, jnp.int32))
        if main:  # on its own copy of the replicated state; the others go on to the next epoch
            own = local_copy(state)
            row = dict(epoch=epoch, **row, **task.validate(own.model, data),
                       seconds=round(time.perf_counter() - started, 3))
            _end_epoch(own, row, history, config, task, data, out_dir)
            log(task.epoch_line(row))
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


def _end_epoch(state, row, history, config, task, data, out_dir):
    """The metrics and the plots first, then the checkpoint: a run killed in between resumes
    from the previous checkpoint, which drops the rows written after it and redoes them."""
    history.append(row)
    write_metrics(out_dir, history, row_fields(task))
    # TensorBoard's copy of the metrics, if tensorboardX is there (of the known rows: a resume
    # without metrics.jsonl leaves the lost epochs' rows without values)
    write_events(out_dir, [r for r in history if r["seconds"] is not None])
    task.plot(out_dir, history, state.model, data)
    save_checkpoint(out_dir / "checkpoints", state, epoch=row["epoch"], step=int(state.step),
                    config=config.to_dict())
    rundir.unmark(out_dir)


def _resume(config, task, out_dir, log, data_source):
    if rundir.can_start_over(out_dir):
        rundir.start(out_dir, log=log)
        return init_state(config, task), []
    state, saved = restore(out_dir, log=log)
    rundir.check_data_source(read_data_source(out_dir), data_source, out_dir)
    done = int(state.epoch)
    rundir.check_resumable(config, saved, done, out_dir)
    log(f"Resuming {out_dir} after epoch {done} (step {int(state.step)})")
    history = rundir.read_history(out_dir, done, fields=row_fields(task), log=log)
    write_metrics(out_dir, history, row_fields(task))  # drop the rows after the checkpoint
    return state, history


def _follow(config, task, out_dir):
    """The state a process other than 0 resumes from: the checkpoint process 0 resumes from
    (the run folder must lie where every process reads it), or a new one."""
    if rundir.can_start_over(out_dir):
        return init_state(config, task)
    state, saved = restore(out_dir, log=_quiet)
    rundir.check_resumable(config, saved, int(state.epoch), out_dir)
    return state


def _finish(state, task, data, out_dir, log):
    metrics, line = task.test(state.model, data)
    write_json(out_dir / "final.json", {"epoch": int(state.epoch), "step": int(state.step),
                                        **metrics})
    log(line)
    return metrics
