"""Tasks: the one training loop runs every task; the time-series task end to end (train,
kill -9 and resume, evaluate, predict, generate, stateful training) and its bad input."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.config import TimeSeriesConfig
from rnnkit.tasks import TASKS, get_task
from rnnkit.train import init_state

TINY = ["--units", "8", "--batch-size", "16", "--steps-per-epoch", "6",
        "--validation-windows", "40", "--epochs", "3"]


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def rows(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]


@pytest.fixture(scope="module")
def series_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("series") / "run"
    status, stdout, stderr = run("train", "--task", "timeseries", *TINY, "--out", out)
    assert status == 0, stderr
    return out, stdout


def test_tasks_lists_each_task_in_one_line():
    status, stdout, _ = run("tasks")
    lines = stdout.splitlines()
    assert status == 0 and [line.split()[0] for line in lines] == list(TASKS)
    assert all(len(line.split(None, 1)[1]) > 20 for line in lines)


def test_the_time_series_task_trains_into_a_run_folder(series_run):
    out, stdout = series_run
    assert stdout.count("Training MSE:") == 3 and "Test MSE (held-out windows):" in stdout
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(last) == {"epoch", "train_mse", "train_mse_mean", "mse", "seconds"}
    assert last["epoch"] == 3 and 0 < last["mse"] < 30
    final = json.loads((out / "final.json").read_text())
    assert final["step"] == 18 and final["test_mse"] > 0
    for name in ("learning_curves.png", "prediction.png", "config.json",
                 "checkpoints/epoch-0003.safetensors"):
        assert (out / name).is_file()
    assert json.loads((out / "config.json").read_text())["task"] == "timeseries"


def test_a_killed_time_series_run_resumes_to_the_same_metrics(series_run, tmp_path):
    """kill -9 after the second epoch's checkpoint, then --resume: the metrics of the run
    without the kill, to the last digit."""
    straight = tmp_path / "straight"
    flags = ["--task", "timeseries", *TINY[:-2], "--epochs", "5", "--steps-per-epoch", "40"]
    assert run("train", *flags, "--out", straight)[0] == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    process = subprocess.Popen([sys.executable, "-m", "rnnkit", "train", *flags, "--out",
                                str(killed)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "epoch-0002.json").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    status, stdout, stderr = run("train", "--resume", killed)
    assert status == 0, stderr
    assert "Resuming" in stdout
    assert rows(killed) == rows(straight)
    assert (json.loads((killed / "final.json").read_text())
            == json.loads((straight / "final.json").read_text()))


def test_evaluate_predict_and_generate_a_time_series_run(series_run, tmp_path):
    out, _ = series_run
    status, stdout, _ = run("evaluate", out)
    assert status == 0 and "test: 40 windows of 20 steps\tMSE:" in stdout
    window = np.sin(np.arange(20) * 0.1)
    np.save(tmp_path / "w.npy", window.astype(np.float32))
    np.savetxt(tmp_path / "w.csv", window, delimiter=",")
    status, stdout, stderr = run("predict", out, tmp_path / "w.npy", tmp_path / "w.csv")
    assert status == 0, stderr
    header, first, second = stdout.splitlines()
    assert header.split("\t")[:2] == ["input", "next"]
    assert first.split("\t")[0] == str(tmp_path / "w.npy")
    assert first.split("\t")[1:] == second.split("\t")[1:]  # the same window
    assert len(first.split("\t")) == 22 and float(first.split("\t")[1]) == float(
        first.split("\t")[-1])
    status, stdout, stderr = run("generate", out, "--steps", "30", "--from", "series")
    assert status == 0, stderr
    values = np.loadtxt(out / "generated_series.csv", delimiter=",", skiprows=1)
    assert values.shape == (50, 2) and np.isfinite(values).all()
    assert (out / "generated_series.png").is_file()


def test_generation_reproduces_the_books_loop(series_run):
    """``generate`` feeds each prediction back as the book does: the last prediction on the
    last n_steps values, re-run from a zero state."""
    out, _ = series_run
    state, config = __import__("rnnkit.train", fromlist=["restore"]).restore(out, log=None)
    from rnnkit.tasks.timeseries import generate_run, generation_seed

    got = generate_run(state.model, config, "zeros", 5)
    sequence = list(generation_seed("zeros", config.n_steps))
    for _ in range(5):
        window = jnp.asarray(sequence[-config.n_steps:], jnp.float32).reshape(1, -1, 1)
        sequence.append(float(state.model(window)[0][0, -1, 0]))
    np.testing.assert_allclose(got, sequence, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("argv, needle", [
    (["--keep-prob", "0"], "--keep-prob: expected a number in (0, 1], got 0.0"),
    (["--keep-prob", "1.5"], "--keep-prob: expected a number in (0, 1], got 1.5"),
    (["--stateful", "--chunk", "300", "--sequence-steps", "200"],
     "--chunk: expected at most the sequence length --sequence-steps=200, got 300"),
    (["--n-steps", "400"], "--n-steps: the series has 300 steps"),
    (["--stateful", "--chunk", "30", "--sequence-steps", "200"], "--chunk: expected a divisor"),
])
def test_bad_time_series_flags_are_one_line_and_write_nothing(tmp_path, argv, needle):
    status, _, stderr = run("train", "--task", "timeseries", *argv, "--out", tmp_path / "run")
    assert status == 2 and stderr.startswith("rnnkit: error: ") and stderr.count("\n") == 1
    assert needle in stderr
    assert not (tmp_path / "run").exists()


def test_bad_inputs_to_predict_and_generate_are_one_line(series_run, tmp_path):
    out, _ = series_run
    np.save(tmp_path / "short.npy", np.ones(19, np.float32))
    with_nan = np.ones(20)
    with_nan[4] = np.nan
    np.save(tmp_path / "nan.npy", with_nan)
    (tmp_path / "text.csv").write_text("a,b,c\n")
    cases = [
        (["predict", out, tmp_path / "short.npy"], "expected a window of 20 values"),
        (["predict", out, tmp_path / "nan.npy"], "holds NaN or infinite values (the first at "
                                                 "index [0, 4])"),
        (["predict", out, tmp_path / "text.csv"], "not a CSV of numbers"),
        (["predict", out, tmp_path / "missing.npy"], "no such file"),
        (["generate", out, "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
        (["evaluate", out, "--split", "train"], "the timeseries task holds out validation"),
    ]
    for argv, needle in cases:
        status, _, stderr = run(*argv)
        assert status == 2 and stderr.count("\n") == 1 and needle in stderr, (argv, stderr)
    assert not (out / "generated_zeros.csv").exists()


def test_generate_refuses_a_run_of_another_task(tmp_path):
    run_dir = tmp_path / "mnist-run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"task": "mnist"}))
    status, _, stderr = run("generate", run_dir)
    assert status == 2 and "a run of the mnist task; generate extends" in stderr


def test_stateful_batches_are_consecutive_chunks_of_long_sequences():
    config = TimeSeriesConfig(stateful=True, chunk=5, sequence_steps=15, steps_per_epoch=6,
                              batch_size=4).validate()
    task = get_task("timeseries")
    (inputs, targets, reset), index = task.train_arrays(config, None, epoch=1)
    assert index.shape == (6, 4) and reset.shape == (24,)
    assert reset[index].tolist() == [[True] * 4, [False] * 4, [False] * 4] * 2
    for first in (0, 3):  # each batch of sequences: its chunks 0, 1, 2 in turn
        joined = np.concatenate([inputs[index[first + k]] for k in range(3)], axis=1)
        np.testing.assert_array_equal(joined[:, 1:], np.concatenate(
            [targets[index[first + k]] for k in range(3)], axis=1)[:, :-1])


def test_stateful_loss_carries_the_state_and_stops_its_gradient():
    config = TimeSeriesConfig(stateful=True, chunk=5, sequence_steps=10, steps_per_epoch=2,
                              batch_size=3, units=6).validate()
    task = get_task("timeseries")
    state = init_state(config, task)
    assert jax.tree.leaves(state.carry)[0].shape == (3, 6)
    (inputs, targets, reset), index = task.train_arrays(config, None, epoch=1)
    first, second = index
    _, ((), carry) = task.loss(state.model, inputs[first], targets[first], reset[first],
                               carry=state.carry)
    whole, _ = state.model(np.concatenate([inputs[first], inputs[second]], axis=1))
    half, _ = state.model(inputs[second], initial_state=carry)
    np.testing.assert_allclose(half, whole[:, 5:], rtol=1e-5, atol=1e-6)
    d_carry = jax.grad(lambda c: task.loss(state.model, inputs[second], targets[second],
                                           reset[second], carry=c)[0])(carry)
    assert not np.any(jax.tree.leaves(d_carry)[0])


def test_stateful_training_runs_on_one_device(tmp_path):
    status, stdout, stderr = run("train", "--task", "timeseries", "--stateful", "--chunk", "5",
                                 "--sequence-steps", "10", *TINY, "--out", tmp_path / "run")
    assert status == 0, stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["devices"] == 1 and config["stateful"] is True
    assert json.loads((tmp_path / "run" / "final.json").read_text())["step"] == 18
