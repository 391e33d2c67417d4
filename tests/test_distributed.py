"""Training in several processes (rnnkit.distributed), on this machine over 127.0.0.1: 2
processes x 2 CPU devices train the numbers of 1 process x 4 devices and of 1 device, for MNIST
and the time series; a process killed (or frozen) stops the others with one line, and the run
resumes; processes started differently, an unreachable coordinator and device counts that
cannot split a batch are refused by name; a user's CPU device count wins over one per core."""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np
import pytest

from rnnkit import cli
from rnnkit.config import ConfigError, TimeSeriesConfig, TrainConfig
from rnnkit.parallel import batch_devices, resolve_device_count, take_devices
from test_cli import run, write_mnist

MNIST = ["--units", "8", "--batch-size", "20", "--validation-size", "20", "--epochs", "3"]
SERIES = ["--task", "timeseries", "--units", "8", "--batch-size", "16", "--steps-per-epoch",
          "6", "--validation-windows", "40", "--epochs", "2"]
# Environment variables that set JAX's CPU device count: the subprocesses get theirs from flags
USER_COUNTS = ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rnnkit(*argv, env=None):
    """A started ``rnnkit train argv`` process."""
    environment = {k: v for k, v in os.environ.items() if k not in USER_COUNTS} | (env or {})
    return subprocess.Popen([sys.executable, "-m", "rnnkit", "train", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=environment)


def processes(count, *argv, timeout=30, port=None):
    """``count`` started processes of one distributed run, 2 CPU devices each."""
    address = f"127.0.0.1:{port or free_port()}"
    return [rnnkit(*argv, "--coordinator", address, "--num-processes", count, "--process-id", i,
                   "--cpu-devices", 2, "--distributed-timeout", timeout) for i in range(count)]


def results(started, timeout=240):
    """``[(status, stdout, stderr)]`` of the ``started`` processes once they ended."""
    return [(p.wait(timeout), *p.communicate()) for p in started]


def values(run_dir):
    """Every metric of a run: the rows of metrics.jsonl without timings, then final.json."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows] + [
        json.loads((run_dir / "final.json").read_text())]


def assert_same_numbers(run_a, run_b):
    """The same metrics, within a relative 1e-5."""
    a, b = values(run_a), values(run_b)
    assert [row.keys() for row in a] == [row.keys() for row in b]
    for row_a, row_b in zip(a, b, strict=True):
        for name in row_a:
            np.testing.assert_allclose(row_a[name], row_b[name], rtol=1e-5, err_msg=name)


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The processes share their compiled programs through JAX's persistent cache: the same
    programs and numbers, in half the time on two cores."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax_cache")))
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        yield


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("mnist"), num_train=120)  # 100 train, 20 val


def interrupt(started, run_dir, epoch, how):
    """Stops process 1 of ``started`` (``how``: kill or SIGSTOP) once ``run_dir`` holds the
    checkpoint of ``epoch``; returns process 0's ``(status, stderr, seconds it went on)``."""
    first, second = started
    checkpoint = run_dir / "checkpoints" / f"epoch-{epoch:04d}.json"
    while not checkpoint.exists() and first.poll() is None:
        time.sleep(0.05)
    second.send_signal(how)
    stopped_at = time.monotonic()
    try:
        (status, _, stderr), = results([first], timeout=120)
    finally:
        second.kill()
        second.communicate()
    return status, stderr, time.monotonic() - stopped_at


@pytest.fixture(scope="module")
def two_by_two(mnist, tmp_path_factory):
    """An MNIST run of 2 processes x 2 devices that loses process 1 twice, resumed by 2
    processes each time: killed (kill -9) after epoch 1, frozen (SIGSTOP: a hung machine,
    whose connections stay open) after epoch 2. Returns the run folder, what process 0 did
    at each loss, the results of the last 2 processes and a copy of the run after epoch 1."""
    out = tmp_path_factory.mktemp("runs") / "2x2"
    flags = [*MNIST, "--data-dir", mnist, "--devices", 4]
    killed = interrupt(processes(2, *flags, "--out", out, timeout=5), out, 1, signal.SIGKILL)
    after_one = out.parent / "after_epoch_1"
    shutil.copytree(out, after_one)
    frozen = interrupt(processes(2, "--resume", out, "--devices", 4, timeout=4), out, 2,
                       signal.SIGSTOP)
    done = results(processes(2, "--resume", out, "--devices", 4))
    return out, {"killed": killed, "frozen": frozen}, done, after_one


def test_a_killed_process_stops_the_others_with_one_line(two_by_two):
    status, stderr, seconds = two_by_two[1]["killed"]
    assert status == 1 and seconds < 20, stderr
    assert stderr.startswith("rnnkit: error: ") and stderr.count("\n") == 1, stderr
    assert "start every process again with rnnkit train --resume" in stderr


def test_a_frozen_process_stops_the_others_within_the_timeout(two_by_two):
    """Without the watch, process 0 would wait in the all-reduce for ever."""
    status, stderr, seconds = two_by_two[1]["frozen"]
    assert status == 1 and seconds < 20, stderr
    assert stderr.startswith("rnnkit: error: process 1 stopped answering 4 s ago"), stderr
    assert stderr.count("\n") == 1 and stderr.rstrip().endswith("--resume RUN"), stderr


@pytest.mark.parametrize("task", ["mnist", "timeseries"])
def test_two_processes_train_the_numbers_of_one_process_and_of_one_device(task, mnist,
                                                                         two_by_two, tmp_path):
    if task == "mnist":
        flags, (split, _, done, _) = [*MNIST, "--data-dir", mnist], two_by_two
    else:
        flags, split = SERIES, tmp_path / "2x2"
        done = results(processes(2, *flags, "--devices", 4, "--out", split))
    (status, stdout, stderr), (status_1, stdout_1, stderr_1) = done
    assert (status, status_1, stderr, stdout_1, stderr_1) == (0, 0, "", "", ""), done
    assert stdout.count("\n") > 3  # only process 0 prints
    four = rnnkit(*flags, "--devices", 4, "--out", tmp_path / "1x4",  # the user's own count
                  env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert four.wait(240) == 0, four.communicate()
    status, _, stderr = run("train", *flags, "--devices", 1, "--out", tmp_path / "1x1")
    assert status == 0, stderr
    for run_dir, devices in ((split, 4), (tmp_path / "1x4", 4), (tmp_path / "1x1", 1)):
        assert json.loads((run_dir / "config.json").read_text())["devices"] == devices
    assert_same_numbers(split, tmp_path / "1x4")
    assert_same_numbers(split, tmp_path / "1x1")


def test_a_run_of_two_processes_resumes_in_one(two_by_two):
    """With another process and device count: the same numbers up to float rounding."""
    out, _, _, after_one = two_by_two
    status, stdout, stderr = run("train", "--resume", after_one, "--devices", 2)
    assert status == 0 and f"Resuming {after_one} after epoch 1" in stdout, stderr
    assert json.loads((after_one / "config.json").read_text())["devices"] == 2
    assert_same_numbers(after_one, out)


def slurm_job():
    """A SLURM job id whose coordinator port (JAX: 61440 + id % 4096) is free here."""
    for port in range(61440, 65536):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return str(port - 61440)
    pytest.skip("no free port in 61440-65535")


def test_processes_started_with_different_configurations_are_refused_by_name(mnist, tmp_path):
    """Launched by SLURM (its variables, as srun sets them): JAX's cluster detection finds
    the coordinator, the process count and ids without rnnkit's flags."""
    job = {"SLURM_JOB_ID": slurm_job(), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2"}
    common = ["--data-dir", mnist, "--cpu-devices", 2, "--out", tmp_path]
    started = [rnnkit(*MNIST, *units, *common, env=job | {"SLURM_PROCID": str(i),
                                                          "SLURM_LOCALID": str(i)})
               for i, units in enumerate([[], ["--units", 9]])]
    (status, _, stderr), (status_1, _, stderr_1) = results(started)
    assert (status, status_1) == (2, 2), (stderr, stderr_1)
    assert stderr == ("rnnkit: error: process 1 was started with units=9, process 0 with 8; "
                      "give every process the same rnnkit train flags (but its own "
                      "--process-id)\n")
    assert "process 0 was started with units=8, process 1 with 9" in stderr_1
    assert not (tmp_path / "checkpoints").exists()


def test_an_unreachable_coordinator_is_one_line_after_the_timeout(tmp_path):
    port = free_port()
    started = time.monotonic()
    process = rnnkit(*MNIST, "--coordinator", f"127.0.0.1:{port}", "--num-processes", 2,
                     "--process-id", 1, "--distributed-timeout", 2, "--out", tmp_path)
    (status, stdout, stderr), = results([process], timeout=60)
    assert status == 2 and time.monotonic() - started < 30
    assert stderr == (f"rnnkit: error: no coordinator answers at 127.0.0.1:{port} (process 0 "
                      f"runs it) within 2 s; start every process with the same --coordinator "
                      f"and --num-processes, each with its own --process-id, or raise "
                      f"--distributed-timeout\n")


@pytest.mark.parametrize("flags, needle", [
    (["--num-processes", 2], "expected --coordinator HOST:PORT, --num-processes N and "
     "--process-id I together (or none of them, under a cluster manager JAX detects, such as "
     "SLURM)"),
    (["--coordinator", "localhost", "--num-processes", 2, "--process-id", 0],
     "--coordinator: expected HOST:PORT (e.g. 10.0.0.1:1234), got 'localhost'"),
    (["--coordinator", "h:1", "--num-processes", 2, "--process-id", 2],
     "--process-id: expected 0 to 1 (--num-processes 2), got 2"),
    (["--cpu-devices", 0], "--cpu-devices: expected at least 1, got 0"),
])
def test_bad_launch_flags_are_one_line(flags, needle, tmp_path):
    status, _, stderr = run("train", *MNIST, "--out", tmp_path / "run", *flags)
    assert status == 2 and stderr == f"rnnkit: error: {needle}\n"


class Device(NamedTuple):
    process_index: int
    id: int
    platform: str = "cpu"


TWO_BY_TWO = [Device(process, process * 2 + i) for process in (0, 1) for i in (0, 1)]


@pytest.mark.parametrize("requested, batch_size, expected", [
    (0, 64, 4), (0, 20, 2), (0, 6, 2), (4, 20, 4), (2, 10, 2),
    (3, 30, "devices: expected a multiple of the 2 processes (each feeds an equal share of "
     "every batch), got 3"),
    (6, 60, "devices: expected at most the 4 cpu devices of the 2 processes, got 6"),
    (4, 10, "devices: expected a count that divides batch_size 10 evenly, got 4"),
    (0, 15, "batch_size: expected a multiple of the 2 processes (each feeds an equal share of "
     "every global batch), got 15"),
])
def test_the_device_count_of_several_processes(requested, batch_size, expected):
    if isinstance(expected, int):
        assert resolve_device_count(requested, batch_size, TWO_BY_TWO) == expected
        return
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}"):
        resolve_device_count(requested, batch_size, TWO_BY_TWO)
    with pytest.raises(ConfigError) as excinfo:  # the field named: --devices or --batch-size
        TrainConfig(devices=requested, batch_size=batch_size).with_devices(TWO_BY_TWO)
    assert excinfo.value.field == expected.split(":")[0]


def test_each_process_gives_an_equal_share_of_the_devices():
    assert take_devices(TWO_BY_TWO, 2) == [TWO_BY_TWO[0], TWO_BY_TWO[2]]
    assert take_devices(TWO_BY_TWO, 4) == TWO_BY_TWO
    assert batch_devices(64, TWO_BY_TWO) == TWO_BY_TWO
    with pytest.raises(ConfigError, match="^stateful: trains on one device, in one process"):
        TimeSeriesConfig(stateful=True, chunk=20, steps_per_epoch=100).with_devices(TWO_BY_TWO)


@pytest.mark.parametrize("env, flag, expected", [
    ({}, None, [()]),  # one device per core
    ({"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, None, []),
    ({"JAX_NUM_CPU_DEVICES": "3"}, None, []),
    ({"JAX_NUM_CPU_DEVICES": "3"}, 5, [(5,)]),  # the flag wins
])
def test_the_users_cpu_device_count_wins_over_one_per_core(env, flag, expected, monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "use_cpu_cores", lambda *count: calls.append(count))
    for name in USER_COUNTS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cli._start(argparse.Namespace(cpu_devices=flag, coordinator=None, num_processes=None,
                                  process_id=None, distributed_timeout=60))
    assert calls == expected
