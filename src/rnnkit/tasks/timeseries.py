"""The chapter's time series as a task: predict ``t sin(t)/3 + 2 sin(5t)`` one step ahead.

``rnnkit train --task timeseries`` trains the book's model: 100 ReLU units, the reshape trick
(``--projection wrapper`` for the ``OutputProjectionWrapper``), Adam 0.001, batch 50, 1,500
iterations (15 epochs of 100), MSE on random 20-step windows; ``--layers`` and ``--keep-prob``
make the book's deep RNN with dropout, and ``--stateful --chunk T`` trains with truncated BPTT
on long contiguous sequences (``rnnkit.config.TimeSeriesConfig``). A metrics row holds the
training MSE (``train_mse`` of the epoch's last batch, the book's figure, and its epoch mean)
and the headline ``mse``: the MSE on held-out windows drawn from ``seed + 1``.
"""

from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from rnnkit import timeseries
from rnnkit.config import TimeSeriesConfig
from rnnkit.datasets import DatasetError
from rnnkit.generate import generate
from rnnkit.masks import select
from rnnkit.plots import plot_learning_curves, save_figure
from rnnkit.progress import write_json

# The book's two seeds for generation: zeros, and 20 values of the series from t = 10 (the
# book meant t_min + (t_max - t_min) / 3; its code's operator precedence gave t = 30).
SEED_START = timeseries.T_MIN + (timeseries.T_MAX - timeseries.T_MIN) / 3


class Windows(NamedTuple):
    inputs: np.ndarray  # [N, T, 1]
    targets: np.ndarray  # [N, T, 1]


class TimeSeriesData(NamedTuple):
    """Held-out windows; the training windows are drawn afresh for every epoch."""

    validation: Windows
    test: Windows


@jax.jit
def _squared_errors(model, inputs, targets):
    predictions, _ = model(inputs)
    return jnp.sum(jnp.square(predictions - targets)), predictions


def mean_squared_error(model, windows, chunk_size=1000):
    """The MSE of ``model`` (no dropout) over ``windows``, in chunks of ``chunk_size``."""
    total = 0.0
    for start in range(0, len(windows.inputs), chunk_size):
        part = slice(start, start + chunk_size)
        total += float(_squared_errors(model, windows.inputs[part], windows.targets[part])[0])
    return total / windows.targets.size


def predictions(model, inputs):
    """``inputs [N, T, 1]`` -> the model's predictions ``[N, T, 1]`` (no dropout)."""
    return np.asarray(model(jnp.asarray(inputs))[0])


class TimeSeriesTask:
    name = "timeseries"
    summary = ("predict the book's time series t sin(t)/3 + 2 sin(5t) one step ahead "
               "(sequence to sequence; --stateful for truncated BPTT)")
    config_class = TimeSeriesConfig
    metrics = ("mse",)
    validation_fields = ("mse",)
    headline = "mse"

    def load_data(self, config, *, data_dir=None, download=False, recorded=None, run=None,
                  split=None, log=print):
        def held_out(offset):
            return Windows(*timeseries.windows(config.seed + offset, config.validation_windows,
                                               config.n_steps))

        if split not in (None, "validation", "test"):
            raise DatasetError(f"--split: the timeseries task holds out validation and test "
                               f"windows (its training windows are drawn afresh every epoch), "
                               f"got {split!r}")
        data = TimeSeriesData(validation=held_out(1), test=held_out(2))
        log(f"The book's time series: windows of {config.n_steps} steps, "
            f"{config.validation_windows:,} held out (seed {config.seed + 1})")
        return (data if split is None else getattr(data, split)), None

    def init_model(self, config, *, key):
        return timeseries.build_regressor(
            config.cell, units=config.units, layers=config.layers,
            activation=config.activation, projection=config.projection,
            keep_prob=config.keep_prob, key=key)

    def initial_carry(self, config, model):
        """With ``stateful``, the state carried from chunk to chunk (zeros), else None."""
        return model.zero_state(config.batch_size) if config.stateful else None

    def loss(self, model, inputs, targets, reset=None, *, key=None, bptt="auto", carry=None):
        """The MSE of a batch of windows; stateful (``carry`` given), of a batch of chunks,
        each starting from the state the previous chunk of its sequence ended in (zeros where
        ``reset [B]``: a sequence's first chunk), the gradient stopped there."""
        if carry is None:
            return timeseries.mse(model, inputs, targets, key=key, bptt=bptt), ()
        start = select(reset, jax.tree.map(jnp.zeros_like, carry), jax.lax.stop_gradient(carry))
        predicted, final = model(inputs, key=key, bptt=bptt, initial_state=start)
        return timeseries.mean_squared_error(predicted, targets), ((), final)

    def train_arrays(self, config, data, epoch):
        """Random windows (``next_batch``) from ``default_rng([seed, epoch])``. Stateful: the
        epoch's long sequences, cut into chunks, in the order the steps take them: the
        batch's sequences' chunk 0, their chunk 1, ..., then the next batch of sequences."""
        rng = np.random.default_rng([config.seed, epoch])
        batch = config.batch_size
        if not config.stateful:
            count = config.steps_per_epoch * batch
            inputs, targets = timeseries.next_batch(rng, count, config.n_steps)
            return (inputs, targets), np.arange(count).reshape(config.steps_per_epoch, batch)
        chunks = config.sequence_steps // config.chunk
        batches = config.steps_per_epoch // chunks
        inputs, targets = timeseries.next_batch(rng, batches * batch, config.sequence_steps)

        def rows(x):  # [N*B, K*T, 1] -> [N, B, K, T, 1] -> [N, K, B, T, 1] -> [N*K*B, T, 1]
            x = x.reshape(batches, batch, chunks, config.chunk, 1).transpose(0, 2, 1, 3, 4)
            return x.reshape(-1, config.chunk, 1)

        reset = np.broadcast_to((np.arange(chunks) == 0)[None, :, None],
                                (batches, chunks, batch)).reshape(-1)
        index = np.arange(batches * chunks * batch).reshape(batches * chunks, batch)
        return (rows(inputs), rows(targets), reset), index

    def validate(self, model, data):
        return {"mse": mean_squared_error(model, data.validation)}

    def test(self, model, data):
        value = mean_squared_error(model, data.test)
        return {"test_mse": value}, f"Test MSE (held-out windows): {value:.6f}"

    def epoch_line(self, row):
        return (f"{row['epoch']}\tTraining MSE: {row['train_mse']:.6f}\t"
                f"Held-out MSE: {row['mse']:.6f}")

    def plot(self, run_dir, history, model, data):
        plot_learning_curves(history, Path(run_dir) / "learning_curves.png",
                             metrics=(("mse", "MSE", "mse"),))
        plot_prediction(model, Path(run_dir) / "prediction.png")

    def evaluate_run(self, model, config, data, split, run_dir, log=print):
        value = mean_squared_error(model, data)
        log(f"{split}: {len(data.inputs):,} windows of {config.n_steps} steps\t"
            f"MSE: {value:.6f}")
        path = Path(run_dir) / f"evaluate_{split}.json"
        write_json(path, {"split": split, "mse": value})
        return f"saved to {path}"

    def predict(self, model, config, inputs, options):
        """``rnnkit predict``: per window (``.npy`` or ``.csv``, ``n_steps`` values, or several
        windows as rows), the window, the predicted next value, then every step's prediction."""
        windows = [(name, read_window(name, config.n_steps)) for name in inputs]
        yield "input\tnext\t" + "\t".join(f"y({t + 1})" for t in range(config.n_steps))
        for name, batch in windows:
            predicted = predictions(model, batch)[..., 0]  # [N, T]
            for i, row in enumerate(predicted):
                label = name if len(predicted) == 1 else f"{name}[{i}]"
                yield f"{label}\t{row[-1]:.6f}\t" + "\t".join(f"{v:.6f}" for v in row)


def read_window(path, n_steps):
    """Windows ``[N, n_steps, 1]`` from a ``.npy`` or ``.csv`` file of ``[n_steps]``,
    ``[n_steps, 1]`` or ``[N, n_steps]`` finite values."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file" if not path.exists() else
                         f"{path}: a folder, not a file; pass the .npy or .csv files in it")
    try:
        if path.suffix.lower() == ".csv":
            values = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=1)
        else:
            values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        kind = "CSV of numbers" if path.suffix.lower() == ".csv" else ".npy array file"
        raise ValueError(f"{path}: not a {kind} ({str(e).splitlines()[0][:80]})") from e
    if values.dtype.kind not in "iuf":
        raise ValueError(f"{path}: expected numbers, got dtype {values.dtype}")
    shape = list(values.shape)
    if values.ndim == 2 and values.shape[1] == 1 and values.shape[0] == n_steps:
        values = values[:, 0]
    if values.ndim == 1:
        values = values[None]
    if values.ndim != 2 or values.shape[1] != n_steps or len(values) == 0:
        raise ValueError(f"{path}: expected a window of {n_steps} values (the run's n_steps), "
                         f"or rows of {n_steps}, got shape {shape}")
    if not np.all(np.isfinite(values)):
        where = np.argwhere(~np.isfinite(values))[0].tolist()
        raise ValueError(f"{path}: holds NaN or infinite values (the first at index {where})")
    return values.astype(np.float32)[..., None]


def generation_seed(kind, n_steps):
    """The book's seeds: ``n_steps`` zeros, or ``n_steps`` values of the series from t = 10."""
    if kind == "zeros":
        return np.zeros(n_steps, np.float32)
    t = SEED_START + np.arange(n_steps) * timeseries.RESOLUTION
    return timeseries.time_series(t).astype(np.float32)


def generate_run(model, config, kind, steps):
    """The book's creative RNN: ``steps`` values after the seed ``kind`` ("zeros" or "series").

    A model trained on windows (the book's way) re-reads its last ``n_steps`` values for every
    new one, as the book does; a model trained statefully carries its state instead.
    """
    window = None if config.stateful else config.n_steps
    return np.asarray(generate(model, generation_seed(kind, config.n_steps), steps,
                               window=window))


def plot_prediction(model, path, n_steps=20):
    """The book's figure: the series, the test instance at t = 12.2, its target and the
    model's prediction."""
    t = np.linspace(timeseries.T_MIN, timeseries.T_MAX,
                    int((timeseries.T_MAX - timeseries.T_MIN) / timeseries.RESOLUTION))
    inputs, targets = timeseries.instance(n_steps=n_steps)
    t_instance = np.linspace(12.2, 12.2 + timeseries.RESOLUTION * (n_steps + 1), n_steps + 1)
    predicted = predictions(model, inputs)[0, :, 0]
    fig = Figure(figsize=(11, 4))
    whole, zoom = fig.subplots(1, 2)
    whole.plot(t, timeseries.time_series(t), label=r"$t \sin(t)/3 + 2 \sin(5t)$")
    whole.plot(t_instance[:-1], inputs[0, :, 0], "b-", linewidth=3, label="a training instance")
    whole.set_title("A time series (generated)")
    whole.set_xlabel("Time")
    whole.legend(loc="lower left")
    zoom.plot(t_instance[:-1], inputs[0, :, 0], "bo", markersize=8, alpha=0.4, label="instance")
    zoom.plot(t_instance[1:], targets[0, :, 0], "w*", markersize=10, markeredgecolor="k",
              label="target")
    zoom.plot(t_instance[1:], predicted, "r.", markersize=10, label="prediction")
    zoom.set_title("The model on the book's test instance")
    zoom.set_xlabel("Time")
    zoom.legend(loc="upper left")
    save_figure(fig, path)


def plot_generated(values, seed_steps, path, title):
    """Generated values against their step, the seed in another colour."""
    fig = Figure(figsize=(10, 4))
    ax = fig.subplots()
    steps = np.arange(len(values))
    ax.plot(steps[:seed_steps], values[:seed_steps], "b-", linewidth=3, label="seed")
    ax.plot(steps[seed_steps - 1:], values[seed_steps - 1:], "r-", label="generated")
    ax.set_xlabel("Time step")
    ax.set_title(title)
    ax.legend(loc="upper left")
    save_figure(fig, path)
