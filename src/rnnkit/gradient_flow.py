"""``rnnkit gradients``: see the plain RNN's gradient vanish through time and the gated cells'
survive, on a task that needs a memory of ``n_steps`` steps.

The task: remember the class shown at the first step. Step 1 holds the class one-hot and a
marker; every later step holds Gaussian noise on the class inputs (``remember_first``). The
label is read from the final state, so the loss reaches step 1 only through ``n_steps - 1``
steps of recurrence. For each of BasicRNN (tanh), LSTM and GRU::

    model = SequenceClassifier(cell, Dense(units, classes))
    norms["init"] = classifier_gradient_norms(model, eval_batch)   # ||dL/dh_t||, t = 1..T
    model = train(model, train_steps fresh batches)                # Adam, the same budget
    norms["trained"] = ...; accuracy on held-out sequences

``run`` writes ``gradient_norms.csv`` (``cell,phase,step,norm``; the LSTM's cell state ``c`` as
cell ``lstm-c``), ``gradient_norms.png``, ``accuracy.csv`` and the configuration,
``gradient_flow.json``. See ``docs/gradients.md``.
"""

import csv
import io
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

from rnnkit.atomic import atomic_write
from rnnkit.cells import BasicRNNCell, Dense, GRUCell, LSTMCell, LSTMStateTuple
from rnnkit.gradients import classifier_gradient_norms
from rnnkit.model import SequenceClassifier
from rnnkit.plots import save_figure
from rnnkit.pytree import replace
from rnnkit.steps import TrainState, classifier_loss, make_train_step

CELLS = ("basic", "lstm", "gru")
NORM_BATCH = 256  # evaluation sequences the norms are measured on


def remember_first(rng, size, n_steps, classes, noise):
    """``(inputs [size, n_steps, classes + 1] float32, labels [size] int32)``: the class
    one-hot and a marker (the last input) at step 1, noise ``N(0, noise^2)`` on the class
    inputs after it."""
    labels = rng.integers(classes, size=size).astype(np.int32)
    inputs = np.zeros((size, n_steps, classes + 1), np.float32)
    inputs[:, 1:, :classes] = rng.normal(0.0, noise, size=(size, n_steps - 1, classes))
    inputs[np.arange(size), 0, labels] = 1.0
    inputs[:, 0, classes] = 1.0
    return inputs, labels


def build_model(kind, config, *, key):
    """A ``kind`` cell of ``config.units`` on the task's inputs, then ``Dense`` to the classes.
    With ``g = config.gate_bias``, the LSTM's forget gate starts at bias ``g`` and its input
    gate at ``-g``, the GRU's update gate at ``g``: both start keeping their state and writing
    little of each step's input into it (as the GRU ties the two)."""
    cell_key, dense_key = jax.random.split(key)
    inputs, units = config.classes + 1, config.units
    if kind == "basic":
        cell = BasicRNNCell(inputs, units, key=cell_key)
    elif kind == "lstm":  # gates i, f, g, o: the input gate starts as nearly closed as f is open
        cell = LSTMCell(inputs, units, forget_bias=config.gate_bias, key=cell_key)
        cell = replace(cell, b=cell.b.at[:units].set(-config.gate_bias))
    else:  # the GRU's gates are r, z, n; h' = (1 - z) n + z h, so a high z keeps h
        cell = GRUCell(inputs, units, key=cell_key)
        cell = replace(cell, b=cell.b.at[units:2 * units].set(config.gate_bias))
    return SequenceClassifier(cell, Dense(units, config.classes, key=dense_key))


def train(model, config, rng):
    """``model`` after ``config.train_steps`` Adam steps, each on a fresh batch, the gradients
    clipped to a global norm of ``config.clip_norm`` first (unless 0)."""
    optimizer = optax.adam(config.lr)
    if config.clip_norm:
        optimizer = optax.chain(optax.clip_by_global_norm(config.clip_norm), optimizer)
    step = make_train_step(optimizer, loss=classifier_loss)
    zero = jnp.asarray(0, jnp.int32)
    state = TrainState(model, optimizer.init(model), jax.random.key(0), zero, zero)
    for _ in range(config.train_steps):
        batch = remember_first(rng, config.batch_size, config.n_steps, config.classes,
                               config.noise)
        state, _ = step(state, *batch)
    return state.model


@jax.jit
def _hits(model, inputs, labels):
    return jnp.sum(jnp.argmax(model(inputs), axis=-1) == labels)


def accuracy(model, inputs, labels):
    return int(_hits(model, inputs, labels)) / len(labels)


def named_norms(kind, norms):
    """``{cell name: [T] norms}``: the hidden state's under the cell's name, an LSTM's cell
    state as ``lstm-c``."""
    if isinstance(norms, LSTMStateTuple):
        return {kind: np.asarray(norms.h), f"{kind}-c": np.asarray(norms.c)}
    return {kind: np.asarray(norms)}


def run(config, out_dir, *, log=print):
    """Trains each cell on the task and writes the norms, their plot and the accuracies into
    ``out_dir``; returns ``{"norms": {(cell, phase): [T]}, "accuracy": {kind: float}}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = (config.n_steps, config.classes, config.noise)
    eval_inputs, eval_labels = remember_first(np.random.default_rng(config.seed + 1),
                                              config.eval_size, *task)
    probe = (eval_inputs[:NORM_BATCH], eval_labels[:NORM_BATCH])
    norms, accuracies, rows = {}, {}, []
    for i, kind in enumerate(CELLS):
        started = time.perf_counter()
        model = build_model(kind, config, key=jax.random.fold_in(jax.random.key(config.seed), i))
        for name, values in named_norms(kind, classifier_gradient_norms(model, *probe)).items():
            norms[name, "init"] = values
        model = train(model, config, np.random.default_rng([config.seed, i]))
        for name, values in named_norms(kind, classifier_gradient_norms(model, *probe)).items():
            norms[name, "trained"] = values
        accuracies[kind] = accuracy(model, eval_inputs, eval_labels)
        seconds = time.perf_counter() - started
        rows.append((kind, accuracies[kind], seconds))
        log(f"{kind}\taccuracy {accuracies[kind] * 100:.1f}% (chance "
            f"{100 / config.classes:.0f}%)\t||dL/dh_1|| / ||dL/dh_T||: init "
            f"{_ratio(norms[kind, 'init']):.2e}, trained {_ratio(norms[kind, 'trained']):.2e}"
            f"\t{seconds:.1f} s")
    _write(out_dir / "gradient_norms.csv", ["cell", "phase", "step", "norm"],
           [(cell, phase, t + 1, f"{v:.6e}") for (cell, phase), values in norms.items()
            for t, v in enumerate(values.tolist())])
    _write(out_dir / "accuracy.csv", ["cell", "accuracy", "train_steps", "seconds"],
           [(kind, f"{acc:.4f}", config.train_steps, f"{s:.1f}") for kind, acc, s in rows])
    with atomic_write(out_dir / "gradient_flow.json") as out:  # not a run's config.json
        out.write((json.dumps(config.to_dict(), indent=2) + "\n").encode())
    plot_norms(norms, out_dir / "gradient_norms.png", config, accuracies)
    return {"norms": norms, "accuracy": accuracies}


def _ratio(values):
    return float(values[0] / values[-1]) if values[-1] > 0 else float("nan")


def _write(path, header, rows):
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_write(path) as out:
        out.write(table.getvalue().encode())


def plot_norms(norms, path, config, accuracies):
    """``||dL/dh_t||`` against t on a log scale: one colour per cell, dashed at
    initialisation, solid after training (a norm of exactly 0, e.g. below float32's range,
    leaves a gap)."""
    fig = Figure(figsize=(9, 5))
    ax = fig.subplots()
    colours = {"basic": "tab:red", "lstm": "tab:blue", "lstm-c": "tab:cyan", "gru": "tab:green"}
    steps = np.arange(1, config.n_steps + 1)
    for (cell, phase), values in norms.items():
        kind = cell.removesuffix("-c")
        label = f"{cell} {phase}" + (f" ({accuracies[kind] * 100:.0f}%)"
                                     if phase == "trained" and cell == kind else "")
        ax.plot(steps, np.where(values > 0, values, np.nan), color=colours[cell],
                linestyle="--" if phase == "init" else "-", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("time step t (the class is shown at t = 1; the loss reads the state at T)")
    ax.set_ylabel("||dL/dh_t||")
    ax.set_title(f"Gradient flow through time: T = {config.n_steps}, {config.train_steps} "
                 f"Adam steps per cell (held-out accuracy)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    save_figure(fig, path)
