"""PNG figures of a run: learning curves and a confusion matrix.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, so no global figure state and
no display needed) and written atomically.
"""

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rnnkit.atomic import atomic_write


def save_figure(fig, path):
    """Writes a matplotlib ``Figure`` to ``path`` as a PNG, atomically."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    with atomic_write(path) as out:
        out.write(buffer.getvalue())


def plot_learning_curves(rows, path, *, metrics=(("loss", "Loss", "loss"),
                                                 ("acc", "Accuracy", "acc"))):
    """Each metric per epoch, training (mean over the epoch) and validation, one panel each.

    Args:
      rows: the metrics rows of a run. path: the PNG to write.
      metrics: ``(name, title, validation key)`` per panel: the panel plots
        ``train_<name>_mean`` and ``val_<validation key>`` (or the key itself if the row has no
        ``val_`` one). A missing (NaN) value leaves a gap.
    """
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(5 * len(metrics), 4))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, (name, title, val_key) in zip(axes, metrics):
        val_key = f"val_{val_key}" if rows and f"val_{val_key}" in rows[0] else val_key
        ax.plot(epochs, [_value(r, f"train_{name}_mean") for r in rows], "o-",
                label="training (mean)")
        ax.plot(epochs, [_value(r, val_key) for r in rows], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _value(row, key):
    value = row.get(key)
    return np.nan if value is None else value


def plot_confusion_matrix(matrix, path, *, title):
    """A heat map of ``matrix [C, C]`` (rows: true class, columns: predicted), counts written in."""
    matrix = np.asarray(matrix)
    fig = Figure(figsize=(6, 5.5))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    classes = range(len(matrix))
    ax.set_xticks(classes)
    ax.set_yticks(classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > threshold else "black")
    fig.tight_layout()
    save_figure(fig, path)
