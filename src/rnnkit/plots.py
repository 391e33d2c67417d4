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


def _save(fig, path):
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    with atomic_write(path) as out:
        out.write(buffer.getvalue())


def plot_learning_curves(rows, path):
    """Loss and accuracy per epoch, training (mean over the epoch) and validation.

    Args:
      rows: the metrics rows of a run (dicts with epoch, train_loss_mean, train_acc_mean,
        val_loss, val_acc). path: the PNG to write.
    """
    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax, key, title in ((loss_ax, "loss", "Loss"), (acc_ax, "acc", "Accuracy")):
        ax.plot(epochs, [r[f"train_{key}_mean"] for r in rows], "o-", label="training (mean)")
        ax.plot(epochs, [r[f"val_{key}"] for r in rows], "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


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
    _save(fig, path)
