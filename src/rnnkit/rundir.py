"""The run folder: who may use it, the files that describe the run, and the checks of a resume.

A run folder is used by one process at a time: ``hold`` keeps an OS lock (``fcntl.flock``) on
``RUN/.lock`` for as long as a training or an evaluation uses it. The OS drops the lock when its
process ends, however it ends, so a lock file left by a killed process locks nothing.

A new run goes only into a new folder, an empty one, or one that rnnkit marked as a run stopped
before its first checkpoint: ``start`` writes ``RUN/.rnnkit-run`` before anything else and
``unmark`` removes it once the first checkpoint is written, from when the checkpoint says that
the folder holds a run. ``config.json`` and ``data.json`` (where the data came from) describe
the run; ``restore`` rebuilds the state of its newest intact checkpoint.
"""

import contextlib
import fcntl
import json
import os
import shlex
import tempfile
from pathlib import Path

from rnnkit.checkpoint import CheckpointError, checkpoints, load_checkpoint, read_sidecar
from rnnkit.config import ConfigError
from rnnkit.datasets import EMBEDDED, DatasetError, describe_source
from rnnkit.progress import METRIC_FIELDS, read_metrics, write_json
from rnnkit.tasks import task_of

MARKER = ".rnnkit-run"
LOCK = ".lock"
# What a run writes before its first checkpoint; starting such a run over removes them.
_FIRST_FILES = ("metrics.jsonl", "metrics.csv", "learning_curves.png", "final.json")

# Fields that may differ between a run and its resumption. All but devices leave the numbers
# as they are. Another device count splits the batch's sums differently, so the resumed run
# drifts by float rounding from an uninterrupted one (as on another machine); it may change
# all the same, or a run could not resume on a machine with fewer cores. Not bptt: its modes
# agree only to float rounding, and any machine can keep the run's mode.
RESUMABLE_FIELDS = ("epochs", "data_dir", "download", "out", "devices")


class RunFolderError(ValueError):
    """A run folder cannot be used now: another process holds it, or it cannot be written."""


@contextlib.contextmanager
def hold(run_dir):
    """Holds ``run_dir`` (an existing folder) for this process while the ``with`` body runs.

    Raises:
      FileNotFoundError: no such folder. RunFolderError: another process holds it, or the
        folder cannot be written.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    path = run_dir / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _not_writable(run_dir, e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 20, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise RunFolderError(f"{run_dir} is in use by another rnnkit process{pid}; wait "
                                 f"for it to end, or stop it, then try again") from None
        if _same_file(fd, path):  # not a lock file that its holder removed meanwhile
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _check_writable(run_dir)
        yield
    finally:
        # Removed while still locked: a process that opened it before sees another file at
        # the path (or none) once it gets the lock, and tries again.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _same_file(fd, path):
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _check_writable(run_dir):
    try:
        tempfile.TemporaryFile(dir=run_dir).close()
    except OSError as e:
        raise _not_writable(run_dir, e) from e


def _not_writable(run_dir, error):
    return RunFolderError(f"{run_dir}: the run folder is not writable ({error.strerror or error}); "
                          f"make it writable, or copy the run to a folder you can write")


def check_new(out_dir):
    """Raises unless a new run may go into ``out_dir``; True if it holds a run to start over.

    A new run goes into a folder that does not exist, an empty one, or one that ``start``
    marked and that holds no checkpoint (a run stopped before its first epoch ended).

    Raises:
      ConfigError("out"): ``out_dir`` is a file, holds a run, or holds files not rnnkit's.
    """
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return False
    if not out_dir.is_dir():
        raise ConfigError("out", f"{out_dir} is a file, not a folder; choose another folder")
    found = checkpoints(out_dir / "checkpoints")
    if found:
        state = "finished" if (out_dir / "final.json").exists() else "stopped"
        raise ConfigError("out", f"{out_dir} already holds a run ({state} after epoch "
                          f"{_epoch(found[0])}); continue it with rnnkit train --resume "
                          f"{shlex.quote(str(out_dir))}, or choose another folder")
    names = sorted(p.name for p in out_dir.iterdir() if p.name != LOCK)
    if not names or MARKER in names:
        return bool(names)
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    raise ConfigError("out", f"{out_dir} is not empty and holds no rnnkit run: it holds "
                      f"{shown}; rnnkit trains only into a new or empty folder, so choose "
                      f"another one (nothing was written)")


def _epoch(sidecar_path):
    return int(sidecar_path.stem.removeprefix("epoch-"))


@contextlib.contextmanager
def new_run(out_dir, *, log):
    """Holds ``out_dir`` for a new run (``hold``) after ``check_new`` and ``start``.

    A folder that rnnkit did not mark is checked before the lock file is written into it.
    """
    out_dir = Path(out_dir)
    if not (out_dir / MARKER).exists():
        check_new(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with hold(out_dir):
        start(out_dir, log=log)
        yield


def start(out_dir, *, log):
    """Makes the held ``out_dir`` a new run's folder (``check_new`` first): marks it, and
    removes the files of a run stopped there before its first checkpoint."""
    out_dir = Path(out_dir)
    if check_new(out_dir):
        log(f"Starting {out_dir} over: the run there stopped before its first checkpoint")
        for name in _FIRST_FILES:
            (out_dir / name).unlink(missing_ok=True)
        for path in (out_dir / "checkpoints").glob("*epoch-*"):  # a checkpoint cut short
            path.unlink(missing_ok=True)
    (out_dir / MARKER).write_text("an rnnkit run; removed at its first checkpoint\n")
    log(f"Training into {out_dir}")


def can_start_over(run_dir):
    """Whether ``run_dir`` holds a run stopped before its first checkpoint, to start over."""
    run_dir = Path(run_dir)
    return (run_dir / MARKER).exists() and not checkpoints(run_dir / "checkpoints")


def unmark(out_dir):
    """After the first checkpoint: the checkpoints say from now on that ``out_dir`` is a run."""
    (Path(out_dir) / MARKER).unlink(missing_ok=True)


def write_run_files(out_dir, config, data_source):
    """``config.json`` and, when the source is known, ``data.json``."""
    write_json(Path(out_dir) / "config.json", config.to_dict())
    if data_source is not None:
        write_json(Path(out_dir) / "data.json", {"source": str(data_source)})


def read_run_config(run_dir):
    """The configuration in ``run_dir/config.json``, of its task's class (``TrainConfig`` for
    the classifier; a run from before tasks is one)."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    try:
        return config_from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as e:
        raise ConfigError("config", f"{path} is not valid JSON ({e})") from e
    except ConfigError as e:
        raise ConfigError("config", f"{path}: {e}") from e


def config_from_dict(values):
    """A saved configuration, as its task's config class, validated."""
    try:
        task = task_of(values)
    except ValueError as e:
        raise ConfigError("task", str(e).removeprefix("task: ")) from e
    return task.config_class.from_dict(values).validate()


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


def restore(run_dir, init_state, *, log):
    """``(state, config)`` of the newest intact checkpoint in ``run_dir``.

    A checkpoint that cannot be loaded (a corrupt file, a sidecar without a valid config) is
    passed over for the one before it, with a line to ``log``.

    Args:
      init_state: ``config -> TrainState``, the tree the checkpoint is loaded into.
    Raises:
      FileNotFoundError: no run folder or no checkpoint. CheckpointError: none is intact (the
        newest's error).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    found = checkpoints(run_dir / "checkpoints")
    if not found:
        raise FileNotFoundError(f"{run_dir}: no checkpoint in {run_dir / 'checkpoints'} "
                                f"(expected epoch-NNNN.json and epoch-NNNN.safetensors)")
    newest_error = None
    for path in found:
        try:
            state, config = _load(path, init_state)
        except CheckpointError as e:
            newest_error = newest_error or e
            continue
        if newest_error:
            log(f"{newest_error}; using {path}, the newest intact checkpoint, instead")
        return state, config
    raise newest_error


def _load(path, init_state):
    sidecar = read_sidecar(path)
    if "config" not in sidecar:
        raise CheckpointError(f"{path}: the checkpoint sidecar has no \"config\" entry, so the "
                              f"model cannot be rebuilt")
    try:
        config = config_from_dict(sidecar["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: the sidecar's config is not valid ({e})") from e
    state, _ = load_checkpoint(path, init_state(config))
    return state, config


def check_resumable(config, saved, done, run_dir):
    """Raises a ConfigError unless ``config`` may continue the run of ``saved`` (the config of
    its checkpoint, after ``done`` epochs): only ``RESUMABLE_FIELDS`` differ, and the epochs
    are at least those done."""
    for name, value in config.to_dict().items():
        if name not in RESUMABLE_FIELDS and getattr(saved, name) != value:
            raise ConfigError(name, f"the run in {run_dir} was trained with "
                              f"{getattr(saved, name)!r}, got {value!r}; only "
                              f"{', '.join(RESUMABLE_FIELDS)} may change on resume")
    if config.epochs < done:
        raise ConfigError("epochs", f"expected at least the {done} epochs already done in "
                          f"{run_dir}, got {config.epochs}")


def check_data_source(recorded, given, run_dir):
    """Raises a ConfigError if a run on the embedded subset would resume on a folder's data,
    or the reverse (None, a source not known, passes)."""
    if None not in (recorded, given) and (recorded == EMBEDDED) != (given == EMBEDDED):
        raise ConfigError("data_dir", f"the run in {run_dir} was trained on "
                          f"{describe_source(recorded)}, got {describe_source(given)}; "
                          f"resume it on the data it was trained on")


def read_history(run_dir, done, *, fields=METRIC_FIELDS, log):
    """The metrics rows of epochs ``1..done`` for a resumed run.

    Without ``metrics.jsonl`` the run goes on from its checkpoint all the same: the rows of the
    epochs done are lost, and stand in the files as rows that hold only their epoch (the
    metrics null, in the CSV empty).
    """
    path = Path(run_dir) / "metrics.jsonl"
    if path.exists():
        return read_metrics(run_dir, up_to_epoch=done, fields=fields)
    log(f"{path} is missing: resuming from the checkpoint all the same; the metrics of epochs "
        f"1 to {done} are lost (their rows hold only the epoch)")
    return [dict.fromkeys(fields, None) | {"epoch": epoch} for epoch in range(1, done + 1)]
