"""How a run reports itself: the book's epoch line, a progress bar, and the run folder's metrics.

``metrics.jsonl`` and ``metrics.csv`` hold one row per epoch (``METRIC_FIELDS`` for the
classifier, ``row_fields(task)`` for any task); both are
rewritten whole, atomically, after every epoch, so a reader never sees half a row and a resumed
run simply rewrites them from the rows kept up to its checkpoint.

Every JSON file is strict JSON (RFC 8259), which has no NaN or infinity: such a number is
written as ``null`` (in ``metrics.csv``, as an empty field) and ``read_metrics`` reads it back
as NaN.
"""

import contextlib
import csv
import io
import json
import math
import sys
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.progress import TimeRemainingColumn

from rnnkit.atomic import atomic_write

METRIC_FIELDS = ("epoch", "train_loss", "train_acc", "train_loss_mean", "train_acc_mean",
                 "val_loss", "val_acc", "seconds")


def row_fields(task):
    """The keys of a task's metrics row: the epoch, ``train_<m>`` then ``train_<m>_mean`` for
    each of ``task.metrics``, the task's ``validation_fields``, the epoch's seconds."""
    return ("epoch", *(f"train_{m}" for m in task.metrics),
            *(f"train_{m}_mean" for m in task.metrics), *task.validation_fields, "seconds")


def epoch_line(row):
    """The book's line; training loss and accuracy are those of the epoch's last batch."""
    return (f"{row['epoch']}\tTraining loss: {row['train_loss']:.6f}\tTraining acc: "
            f"{row['train_acc']:.6f}\tValidation loss: {row['val_loss']:.6f}\tAccuracy: "
            f"{row['val_acc'] * 100:.2f}%")


def write_json(path, value):
    """Writes ``value`` to ``path`` as strict JSON, atomically: a NaN or infinite float in it
    becomes ``null``."""
    with atomic_write(path) as out:
        out.write((_strict_json(value, indent=2) + "\n").encode())


def _strict_json(value, **kwargs):
    return json.dumps(_finite_or_null(value), allow_nan=False, **kwargs)


def _finite_or_null(value):
    """``value`` with every NaN or infinite float, however deep in dicts and lists, as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_null(item) for item in value]
    return value


def write_metrics(folder, rows, fields=METRIC_FIELDS):
    """Rewrites ``metrics.jsonl`` and ``metrics.csv`` in ``folder`` with the ``fields`` of
    ``rows``; a NaN or infinite value is ``null`` in the one and an empty field in the other."""
    folder = Path(folder)
    rows = [_finite_or_null({k: row[k] for k in fields}) for row in rows]
    lines = "".join(_strict_json(row) + "\n" for row in rows)
    with atomic_write(folder / "metrics.jsonl") as out:
        out.write(lines.encode())
    table = io.StringIO()
    writer = csv.DictWriter(table, fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(folder / "metrics.csv") as out:
        out.write(table.getvalue().encode())


class MetricsError(ValueError):
    """``metrics.jsonl`` cannot be read back; the message names the file and the line."""


def read_metrics(folder, *, up_to_epoch, fields=METRIC_FIELDS):
    """The rows of ``folder/metrics.jsonl`` for epochs ``1..up_to_epoch``, one for each; a
    ``null`` value is NaN.

    Raises:
      MetricsError: a line that is not a metrics row, or a missing epoch (the file is absent,
        or was edited by hand).
    """
    path = Path(folder) / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    rows = [_metrics_row(path, number, line, fields)
            for number, line in enumerate(lines, 1) if line.strip()]
    kept = [row for row in rows if row["epoch"] <= up_to_epoch]
    epochs = [row["epoch"] for row in kept]
    if epochs != list(range(1, up_to_epoch + 1)):
        raise MetricsError(f"{path}: expected one row for each of epochs 1 to {up_to_epoch} "
                           f"(the latest checkpoint's), got epochs {epochs}")
    return kept


def _metrics_row(path, number, line, fields):
    try:
        row = json.loads(line)
    except ValueError as e:
        raise MetricsError(f"{path}, line {number}: not JSON ({e})") from e
    if (not isinstance(row, dict) or set(fields) - row.keys()
            or isinstance(row["epoch"], bool) or not isinstance(row["epoch"], int)):
        raise MetricsError(f"{path}, line {number}: expected an object with an integer epoch "
                           f"and {', '.join(fields[1:])}, got {line[:60]!r}")
    return {key: math.nan if value is None else value for key, value in row.items()}


def is_terminal():
    """Whether standard output is an interactive terminal (where a progress bar belongs)."""
    return sys.stdout.isatty()


@contextlib.contextmanager
def step_bar(total, description, *, enabled):
    """Yields ``advance(steps=1)``, to call as steps are taken; draws a transient rich bar when
    ``enabled``.

    The bar only counts steps on the host, so it never waits for the device.
    """
    if not enabled:
        yield lambda steps=1: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda steps=1: bar.advance(task, steps)
