"""What a task tells the one training loop (``rnnkit.train.fit``), as a ``typing.Protocol``.

A task is a small object: its configuration class (whose fields become ``rnnkit train --task
NAME`` flags), its data, how to build its model, its loss and metrics, and its plots. The loop
does the rest for every task alike: the explicit BPTT where the cells allow it, data
parallelism, several steps per jitted call, progress, metrics files, checkpoints, resume and
the NaN stop. What one epoch of ``fit`` does with a task::

    arrays, index = task.train_arrays(config, data, epoch)    # index: [steps, B] rows
    for rows in index:                                         # STEPS_PER_CALL per jitted call
        (loss, aux), grads = value_and_grad(task.loss)(model, *(a[rows] for a in arrays))
    row = {train_<metric>, train_<metric>_mean, **task.validate(model, data)}
"""

from typing import Any, Protocol


class Task(Protocol):
    """A sequence task that ``rnnkit.train.fit`` can train."""

    name: str  # what --task takes
    summary: str  # one line for `rnnkit tasks`
    config_class: type  # a frozen ``rnnkit.config.RunConfig`` dataclass; defaults: the book's
    metrics: tuple  # the names of the loss and of the other per-step metrics, loss first
    validation_fields: tuple  # the keys ``validate`` returns, in a metrics row's order
    headline: str  # the key of a metrics row that says how good the run is (a validation one)

    def load_data(self, config, *, data_dir=None, download=False, recorded=None, run=None,
                  log=print) -> tuple[Any, Any]:
        """``(data, source)``: the task's data, and where it came from (recorded in the run's
        ``data.json``; None for generated data). ``recorded``: the source a run was trained
        on, used unless ``data_dir`` is given; ``run`` names the run folder in errors."""

    def init_model(self, config, *, key) -> Any:
        """The model ``config`` describes, its weights drawn from ``key``."""

    def loss(self, model, *batch, key=None, bptt="auto") -> tuple[Any, tuple]:
        """``(loss, aux)`` on one batch: the batch mean that the optimizer minimises, and the
        batch means of the other metrics (``metrics[1:]``)."""

    def train_arrays(self, config, data, epoch) -> tuple[tuple, Any]:
        """``(arrays, index)``: host arrays ``[N, ...]`` and the ``[steps, B]`` rows of each of
        the epoch's batches, a function of the seed and the epoch only (so a resumed run
        repeats an uninterrupted one). The same arrays objects every epoch are placed on the
        devices once."""

    def validate(self, model, data) -> dict:
        """The validation metrics of a metrics row (``{"val_loss": ..., "val_acc": ...}``)."""

    def test(self, model, data) -> tuple[dict, str]:
        """``(metrics for final.json, the line printed)`` on the test data."""

    def epoch_line(self, row) -> str:
        """The line printed after an epoch."""

    def plot(self, run_dir, history, model, data) -> None:
        """Writes the task's plots into ``run_dir`` (after every epoch)."""
