"""The `rnnkit` command on a tiny MNIST folder: train, resume, evaluate, predict, the data a
run was trained on, and one-line errors with exit status 2."""

import contextlib
import dataclasses
import errno
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import weakref

import jax
import numpy as np
import pytest
from PIL import Image

from rnnkit import train
from rnnkit.cli import main
from rnnkit.tasks import mnist as mnist_task
from rnnkit.config import TrainConfig
from rnnkit.datasets import write_idx
from rnnkit.model import SequenceClassifier
from support import held_by_another_process

TINY_FLAGS = ["--units", "8", "--batch-size", "10", "--validation-size", "20", "--epochs", "2"]


def run(*argv):
    """``(status, stdout, stderr)`` of ``rnnkit argv`` run in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def write_mnist(folder, side=28, num_train=80):
    """MNIST's four files (train .gz, test raw): 80 training and 30 test digits whose class is
    a bright row at 2*label+3 on dark noise."""
    rng = np.random.default_rng(0)
    for prefix, n, gz in (("train", num_train, ".gz"), ("t10k", 30, "")):
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
    (["train", "--bptt", "cudnn"], "--bptt: 'cudnn' trains LSTM cells"),
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
    assert_one_line_error(run("evaluate", trained[0], "--data-dir", folder),
                          needle.replace("expected train images", "expected test images"))


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


# --- the run folder: one process at a time, no other files, interrupts ------------------------

def test_a_run_folder_in_use_by_another_process_is_refused(trained, data_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    with held_by_another_process(copy) as holder:
        needle = f"{copy} is in use by another rnnkit process (pid {holder.pid}); wait"
        assert_one_line_error(run("train", "--resume", copy, "--epochs", "3"), needle)
        assert_one_line_error(run("evaluate", copy), needle)
        assert_one_line_error(run("train", "--data-dir", data_dir, "--out", copy, *TINY_FLAGS),
                              "already holds a run")
        (copy / "checkpoints").rename(tmp_path / "moved")  # as if before its first checkpoint
        (copy / ".rnnkit-run").write_text("")
        assert_one_line_error(run("train", "--data-dir", data_dir, "--out", copy, *TINY_FLAGS),
                              needle)


def test_train_refuses_a_folder_of_other_files_by_name(data_dir, tmp_path):
    (tmp_path / "thesis.tex").write_text("years of work")
    assert_one_line_error(
        run("train", "--data-dir", data_dir, "--out", tmp_path, *TINY_FLAGS),
        f"--out: {tmp_path} is not empty and holds no rnnkit run: it holds thesis.tex; rnnkit "
        f"trains only into a new or empty folder")
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it_over(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy, ignore=shutil.ignore_patterns("checkpoints", "final.json"))
    (copy / ".rnnkit-run").write_text("")
    status, stdout, _ = run("train", "--resume", copy)
    assert status == 0 and f"Starting {copy} over: the run there stopped before its first " \
                           f"checkpoint" in stdout
    assert (copy / "final.json").read_text() == (trained[0] / "final.json").read_text()


def training(*argv):
    """A ``rnnkit train`` process and a queue of its stdout lines (None at its end)."""
    process = subprocess.Popen([sys.executable, "-m", "rnnkit.cli", "train", *map(str, argv)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = queue.Queue()

    def read():
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def interrupt_after(argv, needle, *, presses=1):
    """Runs ``rnnkit train argv``, sends Ctrl-C once a line holds ``needle``; its stderr."""
    process, lines = training(*argv)
    while True:
        line = lines.get(timeout=120)
        assert line is not None, process.stderr.read()
        if needle in line:
            break
    for _ in range(presses):
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.startswith("rnnkit: error: interrupted") and stderr.count("\n") == 1, stderr
    return stderr


def test_ctrl_c_stops_a_training_at_any_moment_and_it_resumes(data_dir, tmp_path):
    out = tmp_path / "run"
    stderr = interrupt_after(["--data-dir", data_dir, "--out", out, *TINY_FLAGS[:-1], "1000"],
                             "Training into")  # while it compiles
    assert str(out) in stderr
    resume = ["--resume", out]
    stderr = interrupt_after(resume, "\tTraining loss: ")  # right after an epoch
    assert stderr.endswith(f"continue with rnnkit train --resume {out}\n")
    interrupt_after(resume, "Resuming", presses=2)  # twice: at once
    done = int(train.latest_checkpoint(out / "checkpoints").stem.removeprefix("epoch-"))
    process, _ = training(*resume, "--epochs", done + 1)
    assert process.wait(timeout=120) == 0, process.stderr.read()
    assert json.loads((out / "final.json").read_text())["epoch"] == done + 1


def test_ctrl_c_that_lands_in_a_finalizer_still_stops_the_training(data_dir, tmp_path,
                                                                   monkeypatch):
    """Python swallows an exception raised in a finalizer, KeyboardInterrupt too."""
    real = mnist_task.plot_learning_curves

    def plot_and_interrupt(rows, path):
        real(rows, path)
        garbage = type("Garbage", (), {})()
        weakref.finalize(garbage, signal.raise_signal, signal.SIGINT)
        del garbage  # the finalizer runs here, and with it the Ctrl-C's handler

    monkeypatch.setattr(mnist_task, "plot_learning_curves", plot_and_interrupt)
    out = tmp_path / "run"
    status, _, stderr = run("train", "--data-dir", data_dir, "--out", out, *TINY_FLAGS)
    assert status == 130 and stderr == (f"rnnkit: error: interrupted; {out} keeps its "
                                        f"checkpoint of epoch 1: continue with rnnkit train "
                                        f"--resume {out}\n")
    monkeypatch.undo()
    assert run("train", "--resume", out)[0] == 0


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_an_interrupt_says_what_was_kept(trained, data_dir, tmp_path, monkeypatch, command):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    if command == "evaluate":
        monkeypatch.setattr("rnnkit.tasks.mnist.evaluate_with_probabilities", interrupted)
        status, _, stderr = run("evaluate", trained[0])
        assert (status, stderr) == (130, "rnnkit: error: interrupted\n")
        return
    monkeypatch.setattr(train, "train_epoch", interrupted)
    out = tmp_path / "my run"
    status, _, stderr = run("train", "--data-dir", data_dir, "--out", out, *TINY_FLAGS)
    assert status == 130 and stderr == (f"rnnkit: error: interrupted before the first "
                                        f"checkpoint of {out}; run the same command again to "
                                        f"start over\n")


def test_a_full_disk_names_the_file(trained, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    assert_one_line_error(run("evaluate", copy),
                          f"rnnkit: error: {copy}/confusion_test.png: No space left on device")
    assert not list(copy.glob(".*.part"))


def test_a_read_only_run_folder_is_named_before_evaluating(trained, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    real = os.open

    def read_only(path, flags, *args, **kwargs):  # as a read-only mount (root ignores chmod)
        if str(path).startswith(str(copy)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    status, stdout, stderr = run("evaluate", copy)
    assert (status, stdout) == (2, "")
    assert stderr == (f"rnnkit: error: {copy}: the run folder is not writable (Read-only file "
                      f"system); make it writable, or copy the run to a folder you can write\n")


def test_data_with_fewer_images_than_the_run_held_out_says_so(trained, tmp_path):
    (tmp_path / "small").mkdir()
    small = write_mnist(tmp_path / "small", num_train=15)
    needle = (f"{small}: the data has 15 training images, but the run in {trained[0]} held out "
              f"20 of them for validation (its validation_size); use the data it was trained on")
    assert_one_line_error(run("evaluate", trained[0], "--data-dir", small, "--split",
                              "validation"), needle)
    assert run("evaluate", trained[0], "--data-dir", small)[0] == 0  # the test files suffice
    copy = tmp_path / "run"
    shutil.copytree(trained[0], copy)
    assert_one_line_error(run("train", "--resume", copy, "--epochs", "3", "--data-dir", small),
                          needle.replace(str(trained[0]), str(copy)))


def test_a_data_dir_that_is_a_file_is_one_line(data_dir, tmp_path):
    assert_one_line_error(run("train", "--data-dir", data_dir / "t10k-labels-idx1-ubyte",
                              "--out", tmp_path / "run", *TINY_FLAGS), "a file, not a folder")
    assert not (tmp_path / "run").exists()
