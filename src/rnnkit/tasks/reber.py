"""The chapter's exercise as a task: tell embedded Reber strings from near-misses.

``rnnkit train --task reber`` trains the book's classifier (``rnnkit.reber``): a 30-unit GRU on
one-hot letters, stopped at each string's end by ``sequence_length``, one logit, sigmoid
cross-entropy; Adam, batch 50, on 10,000 strings drawn from the seed, half of them near-misses
(``rnnkit.config.ReberConfig``). Its headline is ``val_accuracy`` on 5,000 strings drawn from
``seed + 1``. ``rnnkit predict RUN STRING...`` prints ``string, good or bad, p`` per string.
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnkit import reber
from rnnkit.config import ReberConfig
from rnnkit.datasets import DatasetError
from rnnkit.plots import plot_learning_curves
from rnnkit.progress import write_json
from rnnkit.steps import epoch_batches

SPLITS = {"train": 0, "validation": 1, "test": 2}  # split -> offset of its seed


class Strings(NamedTuple):
    """One split: the strings, encoded, and their labels (1: valid)."""

    strings: list
    inputs: np.ndarray  # [N, T, 7] one-hot, zero past each length
    lengths: np.ndarray  # [N] int32
    labels: np.ndarray  # [N] int32

    @property
    def num_examples(self):
        return len(self.strings)


class ReberData(NamedTuple):
    train: Strings
    validation: Strings
    test: Strings


def make_split(config, split):
    """The strings of ``split``, drawn from ``default_rng(seed + offset)``."""
    size = getattr(config, f"{split}_size")
    strings, labels = reber.dataset(size, np.random.default_rng(config.seed + SPLITS[split]))
    return Strings(strings, *reber.encode(strings), labels)


class ReberTask:
    name = "reber"
    summary = ("tell strings of the embedded Reber grammar from near-misses (the chapter's "
               "exercise: a 30-unit GRU, variable lengths)")
    config_class = ReberConfig
    metrics = ("loss", "accuracy")
    validation_fields = ("val_loss", "val_accuracy")
    headline = "val_accuracy"

    def load_data(self, config, *, data_dir=None, download=False, recorded=None, run=None,
                  split=None, log=print):
        if split is not None and split not in SPLITS:
            raise DatasetError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")
        data = {name: make_split(config, name) for name in ([split] if split else SPLITS)}
        log(f"Embedded Reber strings: {config.train_size:,} training (seed {config.seed}), "
            f"{config.validation_size:,} validation, {config.test_size:,} test; half valid, "
            f"half near-misses")
        return (data[split] if split else ReberData(**data)), None

    def init_model(self, config, *, key):
        return reber.build_classifier(config.cell, config.units, config.layers,
                                      activation=config.activation, key=key)

    def loss(self, model, inputs, lengths, labels, *, key=None, bptt="auto"):
        loss, accuracy = reber.loss_and_accuracy(model, inputs, lengths, labels, key=key,
                                                 bptt=bptt)
        return loss, (accuracy,)

    def train_arrays(self, config, data, epoch):
        train = data.train
        index = np.stack(epoch_batches(config.seed, epoch, train.num_examples,
                                       config.batch_size))
        return (train.inputs, train.lengths, train.labels), index

    def validate(self, model, data):
        loss, accuracy, _ = _evaluate(model, data.validation)
        return {"val_loss": loss, "val_accuracy": accuracy}

    def test(self, model, data):
        loss, accuracy, _ = _evaluate(model, data.test)
        line = f"Test loss: {loss:.6f}\tTest accuracy: {accuracy * 100:.2f}%"
        return {"test_loss": loss, "test_accuracy": accuracy}, line

    def epoch_line(self, row):
        return (f"{row['epoch']}\tTraining loss: {row['train_loss']:.6f}\tTraining acc: "
                f"{row['train_accuracy']:.6f}\tValidation loss: {row['val_loss']:.6f}\t"
                f"Accuracy: {row['val_accuracy'] * 100:.2f}%")

    def plot(self, run_dir, history, model, data):
        plot_learning_curves(history, Path(run_dir) / "learning_curves.png",
                             metrics=(("loss", "Loss", "loss"),
                                      ("accuracy", "Accuracy", "accuracy")))

    def evaluate_run(self, model, config, data, split, run_dir, log=print):
        """``rnnkit evaluate``: loss and accuracy of a split, and the strings it got wrong."""
        loss, accuracy, p = _evaluate(model, data)
        wrong = [(s, int(y), float(q)) for s, y, q in zip(data.strings, data.labels, p)
                 if (q > 0.5) != (y == 1)]
        log(f"{split}: {data.num_examples:,} strings\tloss: {loss:.6f}\t"
            f"accuracy: {accuracy * 100:.2f}%\twrong: {len(wrong)}")
        for string, label, q in wrong[:20]:
            log(f"  {string}\t{'good' if label else 'bad'}\tp(good) {q:.4f}")
        path = Path(run_dir) / f"evaluate_{split}.json"
        write_json(path, {"split": split, "loss": loss, "accuracy": accuracy,
                          "wrong": [{"string": s, "label": y, "p_good": q}
                                    for s, y, q in wrong]})
        return f"saved to {path}"

    def predict(self, model, config, inputs, options):
        """``rnnkit predict``: per string, ``string<TAB>good|bad<TAB>probability`` (the
        probability of the verdict, as MNIST's ``probability`` is its class's); a string that
        is empty or has letters outside BEPSTVX is a ValueError."""
        p_good = reber.probabilities(model, list(inputs))
        for string, p in zip(inputs, p_good):
            yield f"{string}\tgood\t{p:.4f}" if p > 0.5 else f"{string}\tbad\t{1 - p:.4f}"


def _evaluate(model, split):
    return reber.evaluate(model, split.inputs, split.lengths, split.labels)
