"""``rnnkit runs``: the run folders in a folder as a table, newest first, to compare them.

Each folder in it is a row: its task, its configuration in short, the epochs done of those
planned, the task's headline metric in the last metrics row (validation accuracy for MNIST, the
held-out MSE for the time series), the test metric of a finished run and its status. A run
is newest by the time of its ``config.json`` (written when it starts or resumes). A folder that
is not a run, or whose files cannot be read, is a row that says why.
"""

import json
from pathlib import Path
from typing import NamedTuple

from rnnkit.tasks import task_of

COLUMNS = ("run", "task", "config", "epochs", "headline", "test", "status")
_RIGHT_ALIGNED = {"epochs", "headline", "test"}


class RunRow(NamedTuple):
    """One run as the table shows it (every field a string)."""

    run: str
    task: str
    config: str  # cell, layers x units, learning rate, batch size: "lstm 2x150 lr=0.001 batch=150"
    epochs: str  # done/planned
    headline: str  # the task's headline metric: "val_acc 93.10%", "mse 0.0411"
    test: str  # the first test metric of final.json: "test_acc 89.80%"
    status: str  # finished, stopped at epoch N, no epoch yet, unreadable: why


class _Unreadable(Exception):
    """A run folder's file is missing or not what rnnkit writes; the message says which."""


def list_runs(folder):
    """The ``RunRow`` of each folder in ``folder`` (hidden ones aside), newest first.

    Raises:
      FileNotFoundError, NotADirectoryError: ``folder`` is missing or a file.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{folder}: no such folder of runs")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder of runs")
    runs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return [_describe(run) for run in sorted(runs, key=_started, reverse=True)]


def format_runs(rows):
    """``rows`` under a header, as a plain text table with aligned columns."""
    table = [COLUMNS, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = ("  ".join(cell.rjust(width) if name in _RIGHT_ALIGNED else cell.ljust(width)
                       for name, cell, width in zip(COLUMNS, row, widths)).rstrip()
             for row in table)
    return "\n".join(lines) + "\n"


def _started(run):
    config = run / "config.json"
    try:
        return (config if config.exists() else run).stat().st_mtime, run.name
    except OSError:
        return 0.0, run.name


def _describe(run):
    try:
        config = _read_object(run / "config.json")
        try:
            task = task_of(config)
        except ValueError as e:
            raise _Unreadable(f"config.json names an unknown task ({e})") from e
        config = {**task.config_class().to_dict(), **config}  # an older one lacks fields
        rows = _read_rows(run / "metrics.jsonl")
        final = _read_object(run / "final.json") if (run / "final.json").exists() else None
    except _Unreadable as e:
        return _unreadable(run.name, e)
    except OSError as e:
        return _unreadable(run.name, e.strerror or e)
    done = rows[-1]["epoch"] if rows else 0
    finished = final is not None and final.get("epoch", done) == done
    status = "finished" if finished else f"stopped at epoch {done}" if rows else "no epoch yet"
    cell = config["cell"] if config["activation"] == "tanh" else (
        f"{config['cell']}/{config['activation']}")
    name = config.get("dataset", task.name)  # the classifier's data set names its task
    tests = [key for key in (final or {}) if key.startswith("test_")]
    return RunRow(run.name, name,
                  f"{cell} {config['layers']}x{config['units']} lr={config['lr']} "
                  f"batch={config['batch_size']}",
                  f"{done}/{config['epochs']}",
                  _metric(task.headline, rows[-1].get(task.headline)) if rows else "-",
                  _metric(tests[-1], final[tests[-1]]) if finished and tests else "-", status)


def _unreadable(name, why):
    return RunRow(name, *["-"] * 5, f"unreadable: {why}")


def _read_text(path):
    try:
        return path.read_text()
    except UnicodeDecodeError as e:
        raise _Unreadable(f"{path.name} is not text") from e


def _read_object(path):
    if not path.exists():
        raise _Unreadable(f"no {path.name}")
    try:
        value = json.loads(_read_text(path))
    except ValueError as e:
        raise _Unreadable(f"{path.name} is not JSON") from e
    if not isinstance(value, dict):
        raise _Unreadable(f"{path.name} is not a JSON object")
    return value


def _read_rows(path):
    """The rows of ``metrics.jsonl`` (none if it is absent)."""
    rows = []
    for number, line in enumerate(_read_text(path).splitlines() if path.exists() else [], 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not (isinstance(row, dict) and isinstance(row.get("epoch"), int)):
            raise _Unreadable(f"{path.name} line {number} is not a metrics row")
        rows.append(row)
    return rows


def _metric(name, value):
    """``name value``: an accuracy in percent, anything else to four significant digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    shown = f"{value * 100:.2f}%" if "acc" in name or "match" in name else f"{value:.4g}"
    return f"{name} {shown}"
