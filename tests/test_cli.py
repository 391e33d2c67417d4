"""The `rnnkit` command on a tiny MNIST folder: train, resume, evaluate, predict, the data a
run was trained on, and one-line errors with exit status 2."""

import contextlib
import dataclasses
import errno
import io
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from rnnkit.cli import main
from rnnkit.config import TrainConfig
from rnnkit.datasets import write_idx
from rnnkit.model import SequenceClassifier

TINY_FLAGS = ["--units", "8", "--batch-size", "10", "--validation-size", "20", "--epochs", "2"]


def run(*argv):
    """``(status, stdout, stderr)`` of ``rnnkit argv`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def write_mnist(folder, side=28):
    """MNIST's four files (train .gz, test raw): 80 training and 30 test digits whose class is
    a bright row at 2*label+3 on dark noise."""
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", 80, ".gz"), ("t10k", 30, "")):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 50, (n, side, side)).astype(np.uint8)
        images[np.arange(n), 2 * labels + 3] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte{gz}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{gz}", labels)
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A 2-epoch run: ``(run folder, stdout)``."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    status, stdout, stderr = run("train", "--data-dir", data_dir, "--out", out, *TINY_FLAGS)
    assert status == 0 and stderr == ""
    return out, stdout


def test_train_prints_the_data_and_the_books_lines_and_fills_the_run_folder(trained, data_dir):
    out, stdout = trained
    lines = stdout.splitlines()
    assert lines[0] == f"MNIST from {data_dir}: 60 train / 20 validation / 30 test examples"
    assert [line.split("\t")[0] for line in lines if "\tTraining loss: " in line] == ["1", "2"]
    assert lines[-1].startswith("Test loss: ")
    assert {"config.json", "metrics.jsonl", "metrics.csv", "learning_curves.png", "final.json",
            "checkpoints"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert (config["units"], config["epochs"], config["data_dir"]) == (8, 2, str(data_dir))
    assert json.loads((out / "data.json").read_text()) == {"source": str(data_dir)}


def test_cli_resume_matches_the_uninterrupted_run(trained, data_dir, tmp_path):
    out = tmp_path / "run"
    assert run("train", "--data-dir", data_dir, "--out", out, *TINY_FLAGS[:-1], "1")[0] == 0
    status, stdout, _ = run("train", "--resume", out, "--epochs", "2")
    assert status == 0 and f"Resuming {out} after epoch 1 (step 6)" in stdout

    def values(folder):
        rows = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert values(out) == values(trained[0])
    assert (out / "final.json").read_text() == (trained[0] / "final.json").read_text()


def test_help_documents_every_config_flag():
    status, stdout, _ = run("train", "--help")
    assert status == 0
    for field in dataclasses.fields(TrainConfig):
        assert "--" + field.name.replace("_", "-") in stdout
    assert "--resume RUN" in stdout and "(default: 150)" in stdout
    text = " ".join(stdout.split())
    assert "~/.cache/rnnkit/<dataset>, then, for MNIST without --download, the embedded " \
           "5,000-digit subset" in text
    assert "only --epochs (to extend the run), --data-dir (the same data, moved), " \
           "--download and --devices may differ" in text
    evaluate_help = " ".join(run("evaluate", "--help")[1].split())
    assert "default: the data the run was trained on (RUN/data.json" in evaluate_help


@pytest.mark.parametrize("argv, needle", [
    (["train", "--units", "0"], "--units: expected an integer >= 1, got 0"),
    (["train", "--lr", "-1"], "--lr: expected a positive finite number, got -1.0"),
    (["train", "--cell", "rnn"], "argument --cell: invalid choice: 'rnn'"),
    (["train", "--bptt", "scan"], "argument --bptt: invalid choice: 'scan'"),
    (["train", "--bptt", "cudnn"], "--bptt: 'cudnn' trains LSTM cells on a GPU with cuDNN; got "
     "cell 'basic'"),
    (["train", "--units", "many"], "argument --units: invalid int value: 'many'"),
    (["train", "--batch-size", "61", "--validation-size", "20", "--data-dir", "{data}"],
     "--batch-size: expected at most the 60 training examples, got 61"),
    (["train", "--data-dir", "{missing}"], "MNIST data not found"),
    (["train", "--resume", "{missing}"], "no such run folder"),
    (["train", "--resume", "{run}", "--units", "9"], "--units: the run in"),
    (["train", "--resume", "{run}", "--out", "x"], "--out: not allowed with --resume"),
    (["evaluate", "{missing}"], "no such run folder"),
    (["evaluate", "{run}", "--split", "dev"], "invalid choice: 'dev'"),
    (["predict", "{run}", "{missing}"], "no such file"),
    (["predict", "{run}", "{data}/t10k-labels-idx1-ubyte"], "cannot be read as one"),
    (["fly"], "invalid choice: 'fly'"),
])
def test_bad_input_is_one_line_on_stderr_and_status_2(argv, needle, trained, data_dir, tmp_path):
    names = dict(data=data_dir, missing=tmp_path / "missing", run=trained[0])
    status, _, stderr = run(*[a.format(**names) for a in argv])
    assert status == 2
    assert stderr.startswith("rnnkit: error: ") and stderr.count("\n") == 1, stderr
    assert needle in stderr


def assert_one_line_error(result, *needles):
    status, _, stderr = result
    assert status == 2
    assert stderr.startswith("rnnkit: error: ") and stderr.count("\n") == 1, stderr
    for needle in needles:
        assert needle in stderr


def test_unwritable_run_folders_are_one_line_errors(data_dir, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    train = ("train", "--data-dir", data_dir, *TINY_FLAGS, "--out")
    assert_one_line_error(run(*train, tmp_path / "file"), f"--out: {tmp_path}/file is a file")
    assert_one_line_error(run(*train, tmp_path / "file" / "run"),
                          f"{tmp_path}/file/run: Not a directory")
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path / "locked")):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    assert_one_line_error(run(*train, tmp_path / "locked"),
                          f"{tmp_path}/locked: Permission denied")
    assert_one_line_error(run("train", "--download", "--data-dir", tmp_path / "locked" / "data"),
                          f"{tmp_path}/locked/data: Permission denied")


@pytest.mark.parametrize("damage, command, needle", [
    (lambda run: (run / "metrics.jsonl").write_text("{oops\n"), "resume",
     "metrics.jsonl, line 1: not JSON"),
    (lambda run: (run / "metrics.jsonl").write_text("{}\n"), "resume",
     "metrics.jsonl, line 1: expected an object with an integer epoch"),
    (lambda run: (run / "config.json").unlink(), "resume", "config.json: No such file"),
    (lambda run: (run / "config.json").write_text('{"units": 0}'), "resume",
     "config.json: units: expected an integer >= 1, got 0"),
    (lambda run: [path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text())
                                              .items() if k != "config"}))
                  for path in (run / "checkpoints").glob("*.json")], "evaluate",
     'epoch-0002.json: the checkpoint sidecar has no "config" entry'),
    (lambda run: (run / "data.json").write_text("[]"), "evaluate",
     'data.json: expected {"source": "embedded" or a folder}'),
    (lambda run: (run / "data.json").write_text(json.dumps({"source": str(run / "gone")})),
     "evaluate", "the run was trained on {run}/gone, but MNIST data not found"),
], ids=["bad-metrics", "metrics-row", "no-config", "bad-config", "sidecar-without-config",
        "bad-data-json", "data-gone"])
def test_a_damaged_run_folder_is_a_one_line_error(trained, tmp_path, damage, command, needle):
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    damage(copy)
    argv = ("train", "--resume", copy, "--epochs", "3") if command == "resume" else (
        "evaluate", copy)
    assert_one_line_error(run(*argv), needle.replace("{run}", str(copy)))


@pytest.mark.parametrize("side", [32, 56])  # 56x56 would run as 112 steps of 28 pixels
def test_images_that_are_not_28x28_are_a_one_line_error(trained, tmp_path, side):
    folder = write_mnist(tmp_path, side)
    needle = (f"{folder}: expected train images of 28x28 = 784 pixels (the RNN reads 28 rows "
              f"of 28), got {side * side} pixels ({side}x{side}) per image")
    assert_one_line_error(run("train", "--data-dir", folder, *TINY_FLAGS, "--out",
                              tmp_path / "run"), needle)
    assert not (tmp_path / "run").exists()
    assert_one_line_error(run("evaluate", trained[0], "--data-dir", folder), needle)


def test_resume_and_evaluate_use_the_data_the_run_was_trained_on(data_dir, tmp_path,
                                                                 monkeypatch):
    monkeypatch.delenv("RNNKIT_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no cached MNIST: the embedded subset
    out, flags = tmp_path / "run", ["--units", "8", "--batch-size", "50", "--epochs", "1",
                                    "--validation-size", "20"]  # fits the tiny MNIST too
    status, stdout, _ = run("train", "--out", out, *flags)
    assert status == 0 and stdout.startswith("Using the embedded 5,000-digit MNIST subset")
    assert json.loads((out / "data.json").read_text()) == {"source": "embedded"}
    shutil.copytree(data_dir, tmp_path / "root" / "mnist")  # now a full MNIST appears
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "root"))
    status, stdout, _ = run("evaluate", out)
    assert status == 0 and "test: 500 examples" in stdout, stdout
    status, stdout, _ = run("train", "--resume", out, "--epochs", "2")
    assert status == 0 and "as in training" in stdout and "after epoch 1" in stdout
    assert json.loads((out / "final.json").read_text())["epoch"] == 2
    assert_one_line_error(run("train", "--resume", out, "--epochs", "3", "--data-dir",
                              tmp_path / "root" / "mnist"),
                          f"--data-dir: the run in {out} was trained on the embedded MNIST "
                          f"subset, got {tmp_path}/root/mnist")
    status, stdout, _ = run("evaluate", out, "--data-dir", tmp_path / "root" / "mnist")
    assert status == 0 and "test: 30 examples" in stdout  # an explicit --data-dir overrides


def test_evaluate_runs_the_model_once_over_the_split(trained, monkeypatch):
    sizes, real = [], SequenceClassifier.__call__

    def counted(self, images, **kwargs):
        sizes.append(len(images))
        return real(self, images, **kwargs)

    monkeypatch.setattr(SequenceClassifier, "__call__", counted)
    with jax.disable_jit():  # so that every call runs, rather than once per trace
        status, stdout, _ = run("evaluate", trained[0])
    assert status == 0 and sizes == [1000]  # the 30 test digits, padded to one chunk


def test_errors_from_the_installed_command_have_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "rnnkit.cli", "evaluate", tmp_path / "no"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"rnnkit: error: {tmp_path / 'no'}: no such run folder\n"


def test_divergence_exits_1_with_one_line(data_dir, tmp_path):
    status, _, stderr = run("train", "--data-dir", data_dir, "--out", tmp_path / "run",
                            "--activation", "relu", "--lr", "1e30", *TINY_FLAGS)
    assert status == 1 and stderr.count("\n") == 1
    assert stderr.startswith("rnnkit: error: training diverged: the loss is NaN or infinite")


def test_evaluate_prints_and_saves_the_confusion_matrix(trained):
    out = trained[0]
    status, stdout, _ = run("evaluate", out)
    assert status == 0
    final = json.loads((out / "final.json").read_text())
    assert f"test: 30 examples\tloss: {final['test_loss']:.6f}\taccuracy: " \
           f"{final['test_acc'] * 100:.2f}%" in stdout
    rows = [line.split() for line in stdout.splitlines() if line[:9].strip().isdigit()]
    matrix = np.array([row[1:] for row in rows], int)
    assert matrix.shape == (10, 10) and matrix.sum() == 30
    assert np.trace(matrix) == round(final["test_acc"] * 30)
    assert (out / "confusion_test.png").stat().st_size > 0
    saved = json.loads((out / "evaluate_test.json").read_text())
    assert saved["confusion_matrix"] == matrix.tolist()


def test_predict_npy_and_png_give_the_same_probabilities(trained, data_dir, tmp_path):
    from rnnkit.datasets import read_idx
    digits = read_idx(data_dir / "t10k-images-idx3-ubyte")[:3]  # uint8 [3, 28, 28]
    np.save(tmp_path / "three.npy", digits.reshape(3, 784).astype(np.float32) / 255)
    np.save(tmp_path / "one.npy", digits[1])
    Image.fromarray(digits[1]).save(tmp_path / "one.png")
    Image.fromarray(255 - digits[1]).save(tmp_path / "dark.png")
    status, stdout, stderr = run("predict", trained[0], tmp_path / "three.npy",
                                 tmp_path / "one.npy", tmp_path / "one.png")
    assert status == 0 and stderr == ""
    header, *lines = stdout.splitlines()
    assert header.split("\t")[:3] == ["input", "class", "probability"]
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in lines}
    assert list(rows) == [f"{tmp_path}/three.npy[{i}]" for i in range(3)] + [
        f"{tmp_path}/one.npy", f"{tmp_path}/one.png"]
    for label, best, *probabilities in rows.values():
        p = np.array(probabilities, float)
        assert abs(p.sum() - 1) < 1e-3 and int(label) == p.argmax() and float(best) == p.max()
    assert rows[f"{tmp_path}/one.png"] == rows[f"{tmp_path}/one.npy"] == rows[
        f"{tmp_path}/three.npy[1]"]
    status, stdout, stderr = run("predict", trained[0], tmp_path / "dark.png")
    assert "looks dark on light" in stderr
    status, inverted, _ = run("predict", trained[0], tmp_path / "dark.png", "--invert")
    np.testing.assert_allclose(np.array(inverted.splitlines()[1].split("\t")[1:], float),
                               np.array(rows[f"{tmp_path}/one.png"], float), atol=2e-4)
