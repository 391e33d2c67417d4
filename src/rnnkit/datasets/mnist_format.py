"""The layout MNIST and Fashion-MNIST share: four IDX files, found on disk or downloaded,
read into `Datasets(train, validation, test)`, or one split from only the two files it needs.

`mnist.py` and `fashion_mnist.py` only describe their files with a `DatasetSpec`.
"""

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from rnnkit.datasets.base import DataSet, Datasets, check_labels
from rnnkit.datasets.download import fetch
from rnnkit.datasets.errors import DataNotFoundError, DatasetError
from rnnkit.datasets.idx import read_idx
from rnnkit.datasets.paths import check_folder, resolve_data_dir

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
SPLITS = ("train", "validation", "test")  # the validation split is cut from the training files


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What a four-file MNIST-format data set is called and where to fetch it.

    Attributes:
      name: its folder name under `$RNNKIT_DATA` and the cache, e.g. "mnist".
      title: its name in messages, e.g. "MNIST".
      mirrors: base URLs tried in order; a file's URL is `mirror + file name`.
      md5: the MD5 (hex) of each of the four `.gz` files in `FILES`.
      num_classes: labels lie in `0..num_classes - 1`; a file with others is refused.
    """

    name: str
    title: str
    mirrors: tuple[str, ...]
    md5: Mapping[str, str]
    num_classes: int = 10


def read_spec_data_sets(spec: DatasetSpec, data_dir: str | os.PathLike | None = None, *,
                        validation_size: int = 5000, download: bool = False, seed: int = 42,
                        environ: Mapping[str, str] | None = None,
                        home: str | os.PathLike | None = None,
                        timeout: float = 30.0) -> tuple[Datasets, Path]:
    """`read_data_sets` for any `spec`; also returns the folder the files were read from.

    `environ` and `home` go to `resolve_data_dir`; `timeout` to `fetch`.
    """
    _check_validation_size(validation_size)
    folder = locate(spec, data_dir, download=download, environ=environ, home=home,
                    timeout=timeout)
    training = _read_pair(folder, TRAIN_IMAGES, TRAIN_LABELS, spec)
    test = DataSet(*_read_pair(folder, TEST_IMAGES, TEST_LABELS, spec), seed=seed)
    return Datasets(*_split_training(*training, folder, validation_size, seed), test), folder


def read_spec_split(spec: DatasetSpec, split: str, data_dir: str | os.PathLike | None = None,
                    *, validation_size: int = 5000, download: bool = False, seed: int = 42,
                    environ: Mapping[str, str] | None = None,
                    home: str | os.PathLike | None = None,
                    timeout: float = 30.0) -> tuple[DataSet, Path]:
    """One split of `read_spec_data_sets` (the same examples, the same shuffling), found and
    read with only the two files it needs: the `t10k-*` files for "test", the `train-*` files
    for "train" and "validation". Also returns the folder it was read from."""
    if split not in SPLITS:
        raise DatasetError(f"split: expected 'train', 'validation' or 'test', got {split!r}")
    _check_validation_size(validation_size)
    files = FILES[2:] if split == "test" else FILES[:2]
    folder = locate(spec, data_dir, download=download, files=files, environ=environ,
                    home=home, timeout=timeout)
    if split == "test":
        return DataSet(*_read_pair(folder, TEST_IMAGES, TEST_LABELS, spec), seed=seed), folder
    training = _read_pair(folder, TRAIN_IMAGES, TRAIN_LABELS, spec)
    train, validation = _split_training(*training, folder, validation_size, seed)
    return (train if split == "train" else validation), folder


def read_test_set(data_dir: str | os.PathLike, *, seed: int = 42) -> DataSet:
    """The test split alone, from a folder that holds at least the two `t10k-*` files.

    Useful to train on the embedded subset and evaluate on the official 10,000 test digits.
    Returns a DataSet with images `[N, 784]` float32 in [0, 1] and labels `[N]` int32.
    """
    folder = check_folder(data_dir)
    missing = missing_files(folder, FILES[2:])
    if missing:
        raise DataNotFoundError(f"read_test_set: {folder} has no {' and no '.join(missing)} "
                                f"(nor the uncompressed file)")
    return DataSet(*_read_pair(folder, TEST_IMAGES, TEST_LABELS), seed=seed)


def locate(spec: DatasetSpec, data_dir: str | os.PathLike | None, *, download: bool,
           files: tuple[str, ...] = FILES, environ: Mapping[str, str] | None = None,
           home: str | os.PathLike | None = None, timeout: float = 30.0) -> Path:
    """The first searched folder that holds all `files`, downloading the missing ones into
    the first folder of the search if `download`; else a DataNotFoundError."""
    candidates = resolve_data_dir(spec.name, data_dir, environ=environ, home=home)
    for folder in candidates:
        if not missing_files(folder, files):
            return folder
    if not download:
        raise DataNotFoundError(_not_found_message(spec, candidates, files))
    for name in missing_files(candidates[0], files):
        fetch(name, spec.md5[name], spec.mirrors, candidates[0], timeout=timeout)
    return candidates[0]


def find_file(folder: Path, name: str) -> Path | None:
    """`folder/name`, or its uncompressed form without `.gz`, whichever exists first."""
    for path in (folder / name, folder / name.removesuffix(".gz")):
        if path.is_file():
            return path
    return None


def missing_files(folder: Path, files: tuple[str, ...] = FILES) -> list[str]:
    """The names in `files` that `folder` lacks in both compressed and raw form."""
    return [name for name in files if find_file(folder, name) is None]


def _not_found_message(spec: DatasetSpec, candidates: list[Path], files: tuple[str, ...]) -> str:
    """One line: where we looked, what was partly there, and how to get the data."""
    message = (f"{spec.title} data not found: looked for {', '.join(files)} (or uncompressed) "
               f"in {', '.join(map(str, candidates))}")
    for folder in candidates:
        present = [name for name in files if find_file(folder, name) is not None]
        if present == [TEST_IMAGES, TEST_LABELS] and files == FILES:
            message += (f"; {folder} holds only the test files, which cannot make a train "
                        f"split (to read just the test set, use read_test_set('{folder}'))")
        elif present:
            message += f"; {folder} holds only {', '.join(present)}"
    return message + (f"; pass download=True (CLI: rnnkit train --download) to fetch them into "
                      f"{candidates[0]}, or data_dir= (CLI: --data-dir) for a folder that "
                      f"holds them")


def _check_validation_size(validation_size) -> None:
    if isinstance(validation_size, bool) or not isinstance(validation_size, int | np.integer) \
            or validation_size < 0:
        raise DatasetError(f"validation_size must be an int >= 0, got {validation_size!r}")


def _split_training(images: np.ndarray, labels: np.ndarray, folder: Path, validation_size: int,
                    seed: int) -> tuple[DataSet, DataSet]:
    """(train, validation): the validation set is the first `validation_size` training images,
    as in the book."""
    v = validation_size
    if not 0 <= v < len(images):
        raise DatasetError(f"validation_size must be between 0 and {len(images) - 1} "
                           f"(the number of training images in {folder} minus one), got {v}")
    return (DataSet(images[v:], labels[v:], seed=seed),
            DataSet(images[:v], labels[:v], seed=seed))


def _read_pair(folder: Path, images_name: str, labels_name: str,
               spec: DatasetSpec | None = None) -> tuple[np.ndarray, ...]:
    """uint8 images `[N, rows, cols]` (N >= 1) and uint8 labels `[N]` in
    `0..num_classes - 1` (`spec`'s, else 10), checked against each other."""
    images_path, labels_path = find_file(folder, images_name), find_file(folder, labels_name)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{images_path}: expected uint8 images [N, rows, cols], "
                           f"got {images.dtype} {list(images.shape)}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetError(f"{labels_path}: expected uint8 labels [N], "
                           f"got {labels.dtype} {list(labels.shape)}")
    if len(images) != len(labels):
        raise DatasetError(f"{images_path} holds {len(images)} images but {labels_path} "
                           f"holds {len(labels)} labels")
    if len(images) == 0:
        raise DatasetError(f"{images_path}: holds 0 images (its header says so); replace it "
                           f"with the data set's complete file")
    num_classes, owner = (10, "the") if spec is None else (spec.num_classes, f"{spec.title}'s")
    check_labels(labels, num_classes, labels_path, classes=f"{owner} {num_classes} classes",
                 advice="replace the file with the data set's own labels file")
    return images, labels
