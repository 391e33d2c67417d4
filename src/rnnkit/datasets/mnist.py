"""MNIST: 60,000 training and 10,000 test images of handwritten digits, 28x28, labels 0-9."""

import os

from rnnkit.datasets.base import Datasets
from rnnkit.datasets.mnist_format import DatasetSpec, read_spec_data_sets

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


def read_data_sets(data_dir: str | os.PathLike | None = None, *, validation_size: int = 5000,
                   download: bool = False, seed: int = 42) -> Datasets:
    """MNIST as the book's `input_data.read_data_sets("/tmp/data/")` returns it.

    Args:
      data_dir: the folder with the four IDX files (`.gz` or uncompressed); default: search
        `$RNNKIT_DATA/mnist`, then `~/.cache/rnnkit/mnist` (see `rnnkit.datasets.paths`).
      validation_size: the first `validation_size` training images become the validation
        set, the rest the training set; 0 <= validation_size < 60,000.
      download: fetch missing files from the mirrors into the first folder searched.
      seed: seeds each split's batch shuffling.

    Returns:
      Datasets(train, validation, test): 55,000 / 5,000 / 10,000 examples by default, images
      `[N, 784]` float32 in [0, 1], labels `[N]` int32.
    """
    datasets, _ = read_spec_data_sets(SPEC, data_dir, validation_size=validation_size,
                                      download=download, seed=seed)
    return datasets
