"""`DataSet` and `Datasets`: the `mnist.train` / `mnist.validation` / `mnist.test` objects of
the TensorFlow 1 tutorials that the book uses, on NumPy arrays."""

import math
import operator
from typing import NamedTuple

import numpy as np

from rnnkit.datasets.errors import DatasetError


class DataSet:
    """Images and labels that hand out shuffled mini-batches, epoch after epoch.

    Attributes:
      images: float32 `[N, D]` in [0, 1]; `D = 784` for MNIST's 28x28 images.
      labels: int32 `[N]`.
      num_examples: `N`.
      epochs_completed: how many times `next_batch` has run through the data.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, seed: int = 42):
        """Args:
          images: `[N, ...]` uint8 in 0..255 (scaled to [0, 1]) or floats already in [0, 1];
            every dimension after the first is flattened, so `[N, 28, 28]` becomes `[N, 784]`.
          labels: integers `[N]`.
          seed: seeds the NumPy Generator that shuffles each epoch.
        """
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim < 2 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"DataSet: expected images [N, ...] and labels [N], got images "
                               f"{images.shape} and labels {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(f"DataSet: labels must be integers, got {labels.dtype}")
        pixels = math.prod(images.shape[1:])  # not reshape(N, -1): N may be 0
        self._images = _as_unit_float(images.reshape(len(images), pixels))  # [N, D]
        self._labels = labels.astype(np.int32)  # [N]
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(labels))  # this epoch's permutation
        self._index_in_epoch = 0
        self._epochs_completed = 0

    @property
    def images(self) -> np.ndarray:
        return self._images

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    @property
    def num_examples(self) -> int:
        return len(self._labels)

    @property
    def epochs_completed(self) -> int:
        return self._epochs_completed

    def next_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The next `batch_size` examples: images `[B, D]` float32 and labels `[B]` int32.

        As in TF1's `DataSet.next_batch`: the first call shuffles; when fewer than
        `batch_size` examples are left in the epoch, the batch is the rest of this epoch plus
        the start of a fresh permutation, and `epochs_completed` goes up by one. So every
        example appears exactly once per epoch. The stored `images` are never reordered.
        """
        batch_size = self._check_batch_size(batch_size)
        start = self._index_in_epoch
        if self._epochs_completed == 0 and start == 0:
            self._order = self._rng.permutation(self.num_examples)
        if start + batch_size <= self.num_examples:
            self._index_in_epoch = start + batch_size
            picked = self._order[start:self._index_in_epoch]
        else:
            rest = self._order[start:]
            self._epochs_completed += 1
            self._order = self._rng.permutation(self.num_examples)
            self._index_in_epoch = batch_size - len(rest)
            picked = np.concatenate([rest, self._order[:self._index_in_epoch]])
        return self._images[picked], self._labels[picked]

    def _check_batch_size(self, batch_size) -> int:
        try:  # any integer, NumPy's included, but not a bool or a float
            size = None if isinstance(batch_size, bool) else operator.index(batch_size)
        except TypeError:
            size = None
        if size is None or not 1 <= size <= self.num_examples:
            raise DatasetError(f"next_batch: batch_size must be an int between 1 and "
                               f"num_examples ({self.num_examples}), got {batch_size!r}")
        return size

    def __repr__(self) -> str:
        return f"DataSet(num_examples={self.num_examples}, image_size={self._images.shape[1]})"


class Datasets(NamedTuple):
    """The three splits, named as in the book: `mnist.train`, `mnist.validation`, `mnist.test`."""

    train: DataSet
    validation: DataSet
    test: DataSet


def check_labels(labels: np.ndarray, num_classes: int, name: str, *, classes: str,
                 advice: str) -> None:
    """Raises a DatasetError unless every label lies in `0..num_classes - 1`.

    One line: `name` (a file or an argument), how many labels lie outside, `classes` (what the
    classes are), the index and value of the first one outside, then `advice`.
    """
    labels = np.ravel(labels)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DatasetError(f"{name}: {bad.size} of {labels.size} labels lie outside "
                           f"0..{num_classes - 1} ({classes}); the first, at index {bad[0]}, "
                           f"is {labels[bad[0]]}; {advice}")


def _as_unit_float(images: np.ndarray) -> np.ndarray:
    """float32 in [0, 1]: uint8 is divided by 255, floats must already lie in [0, 1]."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    if not np.issubdtype(images.dtype, np.floating):
        raise DatasetError(f"DataSet: images must be uint8 (0..255) or floats in [0, 1], "
                           f"got {images.dtype}")
    if images.size and not (images.min() >= 0 and images.max() <= 1):
        raise DatasetError(f"DataSet: float images must lie in [0, 1], "
                           f"got values in [{images.min()}, {images.max()}]")
    return images.astype(np.float32)
