"""Training: the initial state and ``fit``, the book's epoch loop with a run folder (the train
step itself is in ``rnnkit.steps``).

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

import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnkit.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, read_sidecar
from rnnkit.checkpoint import save_checkpoint
from rnnkit.config import ConfigError, TrainConfig
from rnnkit.datasets import EMBEDDED, DatasetError
from rnnkit.evaluate import Metrics, evaluate
from rnnkit.model import N_INPUTS, N_STEPS, build_model
from rnnkit.plots import plot_learning_curves
from rnnkit.progress import epoch_line, is_terminal, read_metrics, write_json, write_metrics
from rnnkit.steps import TrainingDiverged, TrainState, make_steps, make_train_step, place_data
from rnnkit.steps import train_epoch
from rnnkit.tensorboard import write_events

# TrainState, TrainingDiverged and make_train_step live in rnnkit.steps and stay importable
# from here, where the book's loop and earlier code import them.
__all__ = ["FitResult", "TrainState", "TrainingDiverged", "check_image_size", "fit",
           "init_state", "make_optimizer", "make_train_step", "read_data_source",
           "read_run_config", "restore"]

# Fields that may differ between a run and its resumption. All but devices leave the numbers
# as they are. Another device count splits the batch's sums differently, so the resumed run
# drifts by float rounding from an uninterrupted one (as on another machine); it may change
# all the same, or a run could not resume on a machine with fewer cores. Not bptt: its modes
# agree only to float rounding, and any machine can keep the run's mode.
RESUMABLE_FIELDS = ("epochs", "data_dir", "download", "out", "devices")


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


def check_image_size(datasets, source=None):
    """Raises a DatasetError unless every split's images have 28 rows of 28 pixels.

    ``source`` (a folder, or ``EMBEDDED``) is named in the message.
    """
    where = "" if source is None else f"{_describe_source(source)}: "
    for name in ("train", "validation", "test"):
        pixels = getattr(datasets, name).images.shape[1]
        if pixels != N_STEPS * N_INPUTS:
            side = math.isqrt(pixels)
            square = f" ({side}x{side})" if side * side == pixels else ""
            raise DatasetError(f"{where}expected {name} images of 28x28 = 784 pixels (the RNN "
                               f"reads 28 rows of 28), got {pixels} pixels{square} per image; "
                               f"resize them to 28x28")


def fit(config, datasets, *, out_dir, resume=False, data_source=None, log=print,
        progress=None):
    """Trains ``config``'s model on ``datasets`` (train, validation, test) into ``out_dir``.

    Args:
      resume: continue the run in ``out_dir`` from its latest checkpoint; ``config`` must equal
        the checkpoint's except for ``RESUMABLE_FIELDS`` (``epochs`` may grow).
      data_source: where ``datasets`` came from, ``EMBEDDED`` or a folder (as
        ``rnnkit.datasets.load_with_source`` says), recorded in ``data.json``; a run on the
        embedded subset cannot resume on data from a folder, nor the reverse.
      log: called with each line to print; progress: draw a progress bar (default: if stdout
        is a terminal).
    Raises:
      ConfigError, DatasetError (images not 28x28), FileNotFoundError (resume without a
      checkpoint), CheckpointError, MetricsError, OSError (the run folder cannot be written),
      TrainingDiverged (the last good checkpoint stays in ``out_dir``).
    """
    config.validate(datasets.train.num_examples)
    check_image_size(datasets)
    out_dir = Path(out_dir)
    devices = jax.devices()
    config = config.replace(out=str(out_dir)).with_devices(devices)
    if resume:
        state, history = _resume(config, out_dir, log, data_source)
    else:
        state, history = _start(config, out_dir, log)
    write_json(out_dir / "config.json", config.to_dict())
    if data_source is not None:
        write_json(out_dir / "data.json", {"source": str(data_source)})
    steps = make_steps(make_optimizer(config), bptt=config.bptt,
                       devices=devices[:config.devices])
    data = place_data(datasets.train, devices[:config.devices])
    show_bar = is_terminal() if progress is None else progress
    for epoch in range(int(state.epoch) + 1, config.epochs + 1):
        started = time.perf_counter()
        try:
            state, row = train_epoch(steps, state, data, config, epoch, show_bar=show_bar)
        except TrainingDiverged as e:
            e.checkpoint = latest_checkpoint(out_dir / "checkpoints")
            raise
        val = evaluate(state.model, datasets.validation.images, datasets.validation.labels)
        row = dict(epoch=epoch, **row, val_loss=val.loss, val_acc=val.accuracy,
                   seconds=round(time.perf_counter() - started, 3))
        state = state._replace(epoch=jnp.asarray(epoch, jnp.int32))
        _end_epoch(state, row, history, config, out_dir)
        log(epoch_line(row))
    return FitResult(state, history, _finish(state, datasets.test, out_dir, log))


def _end_epoch(state, row, history, config, out_dir):
    """The metrics and the plot first, then the checkpoint: a run killed in between resumes
    from the previous checkpoint, which drops the rows written after it and redoes them."""
    history.append(row)
    write_metrics(out_dir, history)
    write_events(out_dir, history)  # TensorBoard's copy of the metrics, if tensorboardX is there
    plot_learning_curves(history, out_dir / "learning_curves.png")
    save_checkpoint(out_dir / "checkpoints", state, epoch=row["epoch"], step=int(state.step),
                    config=config.to_dict())


def _start(config, out_dir, log):
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError("out", f"{out_dir} is a file, not a folder; choose another folder")
    if latest_checkpoint(out_dir / "checkpoints"):
        raise ConfigError("out", f"{out_dir} already holds a run; continue it with --resume "
                          f"{out_dir} or choose another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"Training into {out_dir}")
    return init_state(config), []


def read_run_config(run_dir):
    """The ``TrainConfig`` in ``run_dir/config.json``."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text())).validate()
    except json.JSONDecodeError as e:
        raise ConfigError("config", f"{path} is not valid JSON ({e})") from e
    except ConfigError as e:
        raise ConfigError("config", f"{path}: {e}") from e


def read_data_source(run_dir):
    """The data source recorded in ``run_dir/data.json``, or None (a run from before it)."""
    path = Path(run_dir) / "data.json"
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(recorded, dict) or not isinstance(recorded.get("source"), str):
        raise DatasetError(f"{path}: expected {{\"source\": \"{EMBEDDED}\" or a folder}}, "
                           f"got {str(recorded)[:60]!r}")
    return recorded["source"]


def _describe_source(source):
    return "the embedded MNIST subset" if source == EMBEDDED else str(source)


def restore(run_dir):
    """``(state, config)`` of the latest checkpoint in ``run_dir``, rebuilt from its config."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    path = latest_checkpoint(run_dir / "checkpoints")
    if path is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in {run_dir / 'checkpoints'} "
                                f"(expected epoch-NNNN.json and epoch-NNNN.safetensors)")
    sidecar = read_sidecar(path)
    if "config" not in sidecar:
        raise CheckpointError(f"{path}: the checkpoint sidecar has no \"config\" entry, so the "
                              f"model cannot be rebuilt")
    try:
        config = TrainConfig.from_dict(sidecar["config"]).validate()
    except ConfigError as e:
        raise CheckpointError(f"{path}: the sidecar's config is not valid ({e})") from e
    state, _ = load_checkpoint(path, init_state(config))
    return state, config


def _resume(config, out_dir, log, data_source):
    state, saved = restore(out_dir)
    recorded = read_data_source(out_dir)
    if None not in (recorded, data_source) and (recorded == EMBEDDED) != (data_source == EMBEDDED):
        raise ConfigError("data_dir", f"the run in {out_dir} was trained on "
                          f"{_describe_source(recorded)}, got {_describe_source(data_source)}; "
                          f"resume it on the data it was trained on")
    for name, value in config.to_dict().items():
        if name not in RESUMABLE_FIELDS and getattr(saved, name) != value:
            raise ConfigError(name, f"the run in {out_dir} was trained with "
                              f"{getattr(saved, name)!r}, got {value!r}; only "
                              f"{', '.join(RESUMABLE_FIELDS)} may change on resume")
    done = int(state.epoch)
    if config.epochs < done:
        raise ConfigError("epochs", f"expected at least the {done} epochs already done in "
                          f"{out_dir}, got {config.epochs}")
    log(f"Resuming {out_dir} after epoch {done} (step {int(state.step)})")
    history = read_metrics(out_dir, up_to_epoch=done)
    write_metrics(out_dir, history)  # drop the rows of epochs after the checkpoint
    return state, history


def _finish(state, test, out_dir, log):
    metrics = evaluate(state.model, test.images, test.labels)
    write_json(out_dir / "final.json", {"epoch": int(state.epoch), "step": int(state.step),
                                        "test_loss": metrics.loss, "test_acc": metrics.accuracy})
    log(f"Test loss: {metrics.loss:.6f}\tTest accuracy: {metrics.accuracy * 100:.2f}%")
    return metrics
