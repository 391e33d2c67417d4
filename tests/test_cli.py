"""The `rnnkit` command on a tiny MNIST folder: train, resume, evaluate, predict, and one-line
errors with exit status 2."""

import contextlib
import dataclasses
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from rnnkit.cli import main
from rnnkit.config import TrainConfig
from rnnkit.datasets import write_idx

TINY_FLAGS = ["--units", "8", "--batch-size", "10", "--validation-size", "20", "--epochs", "2"]


def run(*argv):
    """``(status, stdout, stderr)`` of ``rnnkit argv`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """MNIST's four files (train .gz, test raw): 80 training and 30 test digits whose class is
    a bright row at 2*label+3 on dark noise."""
    folder = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", 80, ".gz"), ("t10k", 30, "")):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 50, (n, 28, 28)).astype(np.uint8)
        images[np.arange(n), 2 * labels + 3] = 255
        write_idx(folder / f"{prefix}-images-idx3-ubyte{gz}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{gz}", labels)
    return folder


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


@pytest.mark.parametrize("argv, needle", [
    (["train", "--units", "0"], "--units: expected an integer >= 1, got 0"),
    (["train", "--lr", "-1"], "--lr: expected a positive finite number, got -1.0"),
    (["train", "--cell", "rnn"], "argument --cell: invalid choice: 'rnn'"),
    (["train", "--bptt", "scan"], "argument --bptt: invalid choice: 'scan'"),
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
