"""The book's `rk.datasets.mnist.read_data_sets()` offline: the embedded subset and one notice
line when no MNIST is found, never when a folder or a download was asked for."""

import numpy as np
import pytest

from rnnkit import datasets
from rnnkit.datasets import DataNotFoundError, DownloadError, write_idx
from rnnkit.datasets.mnist_format import FILES


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """`$RNNKIT_DATA` and the home folder (so `~/.cache/rnnkit`) are empty folders."""
    for name in ("root", "home"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "root"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_no_data_found_falls_back_to_the_embedded_subset_with_one_notice(no_data, capsys):
    mnist = datasets.mnist.read_data_sets()
    out, err = capsys.readouterr()
    assert [split.num_examples for split in mnist] == [4000, 500, 500]
    expected = datasets.load_embedded_mnist(seed=42)
    for split, same in zip(mnist, expected):
        np.testing.assert_array_equal(split.labels, same.labels)
        np.testing.assert_array_equal(split.images, same.images)
    assert out == ""
    assert err.count("\n") == 1 and err == datasets.mnist.EMBEDDED_NOTICE + "\n"
    assert "embedded 5,000-digit subset" in err and "download=True" in err
    images, labels = mnist.train.next_batch(150)
    assert images.shape == (150, 784) and labels.shape == (150,)


def test_the_seed_goes_to_the_embedded_split(no_data):
    split = datasets.mnist.read_data_sets(seed=7).validation.labels
    np.testing.assert_array_equal(split, datasets.load_embedded_mnist(seed=7).validation.labels)


def test_an_explicit_data_dir_never_falls_back(no_data, capsys):
    with pytest.raises(DataNotFoundError, match="MNIST data not found"):
        datasets.mnist.read_data_sets(no_data / "root")
    assert capsys.readouterr().err == ""


def test_download_never_falls_back(no_data, monkeypatch, capsys):
    def offline(name, *args, **kwargs):
        raise DownloadError(f"{name}: offline")

    monkeypatch.setattr("rnnkit.datasets.mnist_format.fetch", offline)
    with pytest.raises(DownloadError, match="offline"):
        datasets.mnist.read_data_sets(download=True)
    assert capsys.readouterr().err == ""


def test_data_found_in_rnnkit_data_is_read_without_a_notice(no_data, capsys):
    folder = no_data / "root" / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for images_name, labels_name, n in ((FILES[0], FILES[1], 30), (FILES[2], FILES[3], 10)):
        write_idx(folder / images_name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / labels_name, (np.arange(n) % 10).astype(np.uint8))
    mnist = datasets.mnist.read_data_sets(validation_size=5)
    assert [split.num_examples for split in mnist] == [25, 5, 10]
    assert capsys.readouterr().err == ""
