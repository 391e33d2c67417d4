"""Fashion-MNIST: Zalando's 28x28 clothing images in MNIST's format; 10 classes, from
0 T-shirt/top to 9 Ankle boot (`CLASS_NAMES`)."""

import os

from rnnkit.datasets.base import Datasets
from rnnkit.datasets.mnist_format import DatasetSpec, read_spec_data_sets

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# The mirror and MD5s that torchvision uses for the four .gz files.
SPEC = DatasetSpec(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83fd310",
    },
)


def read_data_sets(data_dir: str | os.PathLike | None = None, *, validation_size: int = 5000,
                   download: bool = False, seed: int = 42) -> Datasets:
    """Fashion-MNIST, split like `rnnkit.datasets.mnist.read_data_sets`.

    Args:
      data_dir: the folder with the four IDX files (`.gz` or uncompressed); default: search
        `$RNNKIT_DATA/fashion-mnist`, then `~/.cache/rnnkit/fashion-mnist`.
      validation_size: the first `validation_size` training images become the validation
        set, the rest the training set; 0 <= validation_size < 60,000.
      download: fetch missing files from the mirror into the first folder searched.
      seed: seeds each split's batch shuffling.

    Returns:
      Datasets(train, validation, test): 55,000 / 5,000 / 10,000 examples by default, images
      `[N, 784]` float32 in [0, 1], labels `[N]` int32.
    """
    datasets, _ = read_spec_data_sets(SPEC, data_dir, validation_size=validation_size,
                                      download=download, seed=seed)
    return datasets
