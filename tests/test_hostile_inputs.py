"""A catalogue of hostile inputs to `rnnkit` and the readers behind it: labels outside the
classes, empty files, paths of the wrong kind, .npy files that are not arrays or hold NaN,
images too large to decode. Each row makes one bad input and names what the one-line error
must say: exit status 2, `rnnkit: error: ...` on stderr, no traceback, and every JSON file
written is strict JSON."""

import contextlib
import io
import json
import math
import pickle
import struct
import zlib

import jax
import numpy as np
import pytest

from rnnkit import Dense
from rnnkit.cli import main
from rnnkit.datasets import DatasetError, write_idx
from rnnkit.evaluate import confusion_matrix, evaluate, load_digits, predict_probabilities
from rnnkit.progress import read_metrics, write_json, write_metrics

TINY = ["--units", "8", "--batch-size", "10", "--validation-size", "20", "--epochs", "1"]
BAD_INDEX = 5  # where write_mnist puts a bad label


def run(*argv):
    """``(status, stdout, stderr)`` of ``rnnkit argv`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def write_mnist(folder, *, train_label=None, test_label=None, num_test=30, files="all"):
    """A tiny MNIST (80 training digits, .gz; ``num_test`` test digits, raw); a label given
    replaces the one at ``BAD_INDEX``; ``files`` "train" or "test" writes only those two."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, gz, bad in (("train", 80, ".gz", train_label),
                               ("t10k", num_test, "", test_label)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        if bad is not None:
            labels[BAD_INDEX] = bad
        images = rng.integers(0, 256, (n, 28, 28)).astype(np.uint8)
        if files in ("all", prefix.replace("t10k", "test")):
            write_idx(folder / f"{prefix}-images-idx3-ubyte{gz}", images)
            write_idx(folder / f"{prefix}-labels-idx1-ubyte{gz}", labels)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run on a tiny MNIST: ``(run folder, data folder)``."""
    data = write_mnist(tmp_path_factory.mktemp("mnist"))
    out = tmp_path_factory.mktemp("runs") / "tiny"
    status, _, stderr = run("train", "--data-dir", data, "--out", out, *TINY)
    assert status == 0 and stderr == "", stderr
    for path in out.rglob("*.json"):
        _strict_json(path.read_text())
    return out, data


# --- hostile files ----------------------------------------------------------------------------

def _png_header(width, height):
    """A PNG that declares width x height 8-bit gray pixels and holds none: PIL reads the size
    from the header, so it is a decompression bomb without the megabytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _npy_header(shape, descr="<f4"):
    """The header of a .npy file of ``shape``, with no data after it."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return out.getvalue()


def _npy_bytes(array, **kwargs):
    out = io.BytesIO()
    np.save(out, array, **kwargs)
    return out.getvalue()


def _with_nan(value):
    images = np.zeros((2, 28, 28), np.float32)
    images[1, 3, 7] = value
    return _npy_bytes(images)


def _npz_bytes():
    out = io.BytesIO()
    np.savez(out, images=np.zeros((1, 784), np.float32))
    return out.getvalue()


NOT_NPY = "not a .npy array file (pickled object arrays are refused: rnnkit never loads pickle)"

# id -> (file name, its bytes, what the error names after "FILE: ")
PREDICT_FILES = {
    "empty-npy": ("x.npy", _npy_bytes(np.zeros((0, 784), np.float32)),
                  "holds no images (shape [0, 784])"),
    "nan-npy": ("x.npy", _with_nan(np.nan), "holds NaN or infinite values (the first at "
                "index [1, 3, 7]); expected float pixels in [0, 1]"),
    "inf-npy": ("x.npy", _with_nan(-np.inf), "holds NaN or infinite values (the first at "
                "index [1, 3, 7])"),
    "object-npy": ("x.npy", _npy_bytes(np.array([{"pixels": 1}], object), allow_pickle=True),
                   NOT_NPY),
    "text-npy": ("x.npy", b"0 0 0 0\n", NOT_NPY),
    "pickle-npy": ("x.npy", pickle.dumps(np.zeros((28, 28), np.float32)), NOT_NPY),
    "npz-named-npy": ("x.npy", _npz_bytes(), NOT_NPY),
    "png-named-npy": ("x.npy", _png_header(28, 28), NOT_NPY),
    "truncated-npy": ("x.npy", _npy_bytes(np.zeros((4, 784), np.float32))[:-100],
                      "its header declares float32 [4, 784], 12544 bytes of data, but it holds "
                      "12444 (truncated?)"),
    "npy-declaring-terabytes": ("x.npy", _npy_header((10**9, 784)) + bytes(64),
                                "its header declares float32 [1000000000, 784], "
                                "3136000000000 bytes of data, but it holds 64"),
    "complex-npy": ("x.npy", _npy_bytes(np.zeros((28, 28), np.complex64)),
                    "expected uint8 or float pixels, got dtype complex64"),
    "structured-npy": ("x.npy", _npy_bytes(np.zeros((28, 28), [("a", "<f4"), ("b", "<i4")])),
                       "expected uint8 or float pixels"),
    "png-14000x14000": ("x.png", _png_header(14000, 14000), "the image is too large"),
    "png-10000x10000": ("x.png", _png_header(10000, 10000), "the image is too large"),
    "idx-as-image": ("x.png", b"\0\0\x08\x01\0\0\0\x01\x07",
                     "expected a .npy array or an image file"),
}


@pytest.mark.parametrize("name, content, needle", PREDICT_FILES.values(), ids=PREDICT_FILES)
def test_predict_refuses_hostile_files_in_one_line(trained, tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content)
    assert_one_line_error(run("predict", trained[0], tmp_path / name),
                          f"{tmp_path / name}: {needle}")


def test_predict_on_a_folder_says_it_is_a_folder(trained, tmp_path):
    assert_one_line_error(run("predict", trained[0], tmp_path),
                          f"{tmp_path}: a folder, not a file; pass the image or .npy files in it")


# --- hostile data folders -----------------------------------------------------------------------

def _file(tmp_path):
    (tmp_path / "data.gz").write_bytes(b"")
    return tmp_path / "data.gz"


# id -> (make(tmp_path) -> the --data-dir, the command, what the error names)
DATA_FOLDERS = {
    "test-label-12-train": (lambda t: write_mnist(t / "d", test_label=12), "train",
                            "{d}/t10k-labels-idx1-ubyte: 1 of 30 labels lie outside 0..9 "
                            "(MNIST's 10 classes); the first, at index 5, is 12"),
    "test-label-12-evaluate": (lambda t: write_mnist(t / "d", test_label=12), "evaluate",
                               "{d}/t10k-labels-idx1-ubyte: 1 of 30 labels lie outside"),
    "train-label-12-train": (lambda t: write_mnist(t / "d", train_label=12), "train",
                             "{d}/train-labels-idx1-ubyte.gz: 1 of 80 labels lie outside 0..9"),
    "train-label-255-validation": (lambda t: write_mnist(t / "d", train_label=255),
                                   "evaluate --split validation", "index 5, is 255"),
    "test-idx-of-0-images-evaluate": (lambda t: write_mnist(t / "d", num_test=0), "evaluate",
                                      "{d}/t10k-images-idx3-ubyte: holds 0 images"),
    "test-idx-of-0-images-train": (lambda t: write_mnist(t / "d", num_test=0), "train",
                                   "{d}/t10k-images-idx3-ubyte: holds 0 images"),
    "data-dir-is-a-file-evaluate": (_file, "evaluate", "{d}: a file, not a folder"),
    "data-dir-is-a-file-download": (_file, "train --download", "{d}: a file, not a folder"),
    "only-test-files-train-split": (lambda t: write_mnist(t / "d", files="test"),
                                    "evaluate --split train", "MNIST data not found: looked for "
                                    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz"),
}


@pytest.mark.parametrize("make, command, needle", DATA_FOLDERS.values(), ids=DATA_FOLDERS)
def test_hostile_data_folders_are_one_line_and_write_no_run(trained, tmp_path, make, command,
                                                            needle):
    folder = make(tmp_path)
    command, *flags = command.split()
    target = [trained[0]] if command == "evaluate" else ["--out", tmp_path / "run", *TINY]
    before = {p.name: p.read_bytes() for p in trained[0].glob("*.json")}
    assert_one_line_error(run(command, *target, *flags, "--data-dir", folder),
                          needle.format(d=folder))
    assert not (tmp_path / "run").exists()
    assert {p.name: p.read_bytes() for p in trained[0].glob("*.json")} == before


def test_rnnkit_data_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "root").write_text("")
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "root"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert_one_line_error(run("train", "--out", tmp_path / "run", *TINY),
                          f"$RNNKIT_DATA ({tmp_path / 'root'}) is a file, not a folder")


def test_evaluating_the_test_split_needs_only_the_test_files(trained, tmp_path):
    folder = write_mnist(tmp_path / "d", files="test")
    status, stdout, stderr = run("evaluate", trained[0], "--data-dir", folder)
    assert status == 0 and stderr == "", stderr
    assert f"MNIST test split from {folder}: 30 examples" in stdout
    assert "test: 30 examples" in stdout


def assert_one_line_error(result, needle):
    status, _, stderr = result
    assert status == 2, stderr
    assert stderr.startswith("rnnkit: error: ") and stderr.count("\n") == 1, stderr
    assert needle in stderr, stderr


# --- what rnnkit writes and computes from bad values --------------------------------------------

def _strict_json(text):
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(text, parse_constant=refuse)


def test_write_json_writes_non_finite_numbers_as_null(tmp_path):
    write_json(tmp_path / "final.json", {"test_loss": math.nan, "test_acc": 0.5,
                                         "curve": [1.0, math.inf, -math.inf], "epoch": 3})
    assert _strict_json((tmp_path / "final.json").read_text()) == {
        "test_loss": None, "test_acc": 0.5, "curve": [1.0, None, None], "epoch": 3}


def test_metrics_files_are_strict_and_read_back_non_finite_values_as_nan(tmp_path):
    rows = [dict(epoch=1, train_loss=math.nan, train_acc=0.1, train_loss_mean=math.inf,
                 train_acc_mean=0.1, val_loss=2.0, val_acc=0.2, seconds=1.5)]
    write_metrics(tmp_path, rows)
    line = (tmp_path / "metrics.jsonl").read_text()
    assert _strict_json(line)["train_loss"] is None and line.count("\n") == 1
    csv_row = (tmp_path / "metrics.csv").read_text().splitlines()[1]
    assert csv_row == "1,,0.1,,0.1,2.0,0.2,1.5"
    back = read_metrics(tmp_path, up_to_epoch=1)
    assert math.isnan(back[0]["train_loss"]) and math.isnan(back[0]["train_loss_mean"])
    assert back[0]["val_loss"] == 2.0


def test_confusion_matrix_refuses_classes_outside_the_matrix():
    assert confusion_matrix([0, 2, 2], [0, 2, 1], 3).tolist() == [[1, 0, 0], [0, 0, 0],
                                                                   [0, 1, 1]]
    with pytest.raises(ValueError, match=r"labels: 1 of 3 labels lie outside 0\.\.2 .* the "
                                         r"first, at index 1, is 12"):
        confusion_matrix([0, 12, 2], [0, 1, 1], 3)
    with pytest.raises(ValueError, match=r"predicted: 2 of 3 .* at index 0, is -1"):
        confusion_matrix([0, 1, 2], [-1, 1, 3], 3)


def test_evaluate_refuses_labels_outside_the_models_classes():
    model = Dense(784, 10, key=jax.random.key(0))
    images = np.zeros((4, 784), np.float32)
    assert evaluate(model, images, np.array([0, 9, 3, 3])).loss > 0
    with pytest.raises(DatasetError, match=r"labels: 1 of 4 labels lie outside 0\.\.9 \(the "
                                           r"model's 10 classes\); the first, at index 2, is 12"):
        evaluate(model, images, np.array([0, 9, 12, 3]))


def test_predicting_zero_images_is_a_one_line_value_error():
    model = Dense(784, 10, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"^images: expected at least one example to predict, "
                                         r"got shape \(0, 784\)$"):
        predict_probabilities(model, np.zeros((0, 784), np.float32))


def test_load_digits_reads_good_files_unchanged(tmp_path):
    digits = np.random.default_rng(0).integers(0, 256, (3, 28, 28)).astype(np.uint8)
    np.save(tmp_path / "x.npy", digits)
    np.testing.assert_array_equal(load_digits(tmp_path / "x.npy"),
                                  digits.reshape(3, 784) / np.float32(255))
