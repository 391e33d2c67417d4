"""Training across processes, on one machine or several: JAX's distributed runtime.

Every process runs the same ``rnnkit train``; process 0 also runs the coordinator, a small
service the others reach at ``HOST:PORT``. JAX then sees the devices of every process as one
set: a batch is split across all of them (``rnnkit.parallel``), each process feeding its own
devices' slices, and XLA's all-reduce spans the processes (on CPUs through gloo, on GPUs
through NCCL). What rnnkit adds to ``jax.distributed.initialize``::

    initialize: not every process there within `timeout` s     -> one line, exit status 2
      then a watch: another silent for `timeout` s, or stopped  -> one line, exit status 1
    check_same_run(config, task, data): another config or data  -> DistributedError, named
    finish(): wait for all; leave(status): stop all             -> no process left waiting

JAX's own reactions to these (a C++ check failure, a hang in a collective) come later, or not
at all. Only process 0 (``is_main()``) writes the run folder and prints; ``docs/parallel.md``
says how to launch a run.
"""

import atexit
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
import zlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnnkit.parallel import put, take_devices

# How often a process tells the others it is alive, in seconds.
BEAT = 1.0
# The key-value store's folder for rnnkit's keys (JAX keeps its own elsewhere in it).
_KEYS = "rnnkit"
# Fields of a configuration that may differ between processes: each names a path of its own
# process's machine (where it would write, where it found the data); the data itself is compared.
PER_PROCESS_FIELDS = ("out", "data_dir", "download")


class DistributedError(RuntimeError):
    """Processes that cannot train together: bad launch arguments, or different runs."""


class ProcessLost(RuntimeError):
    """A process of the run is gone, so the others cannot go on (exit status 1)."""


_session = None  # this process's _Session once initialize has run


def initialize(coordinator=None, num_processes=None, process_id=None, *, timeout=60):
    """Joins the distributed run (process 0 starts its coordinator); call it before any JAX
    computation. Given none of the three, JAX's cluster detection fills them in (SLURM, Open
    MPI, ...). CPU collectives go through gloo.

    Args:
      coordinator: ``"HOST:PORT"`` of process 0, the same for every process.
      num_processes: the processes in the run; process_id: this one's, ``0..num_processes-1``.
      timeout: seconds to wait for all processes at the start, and for one that falls silent.
    Returns:
      ``(process_id, num_processes)``.
    Raises:
      DistributedError: bad arguments (a process that does not join in time ends this one).
    """
    global _session
    _check_arguments(coordinator, num_processes, process_id, timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX ends a process with a C++ check failure when the others do not join in time, or
    # stop sending heartbeats: rnnkit's timer and watch come first, with one line.
    timer = threading.Timer(timeout, _not_joined, (coordinator, num_processes, process_id,
                                                   timeout))
    timer.daemon = True
    timer.start()
    try:
        jax.distributed.initialize(
            coordinator, num_processes, process_id, initialization_timeout=int(timeout) + 30,
            heartbeat_timeout_seconds=int(2 * timeout) + 10,
            shutdown_timeout_seconds=math.ceil(timeout))
    except (RuntimeError, ValueError) as e:  # XlaRuntimeError is a RuntimeError
        raise DistributedError(_join_error(e, coordinator)) from None
    finally:
        timer.cancel()
    from jax._src import distributed as jax_distributed  # noqa: PLC0415 (its key-value store)

    _session = _Session(jax_distributed.global_state.client, jax.process_index(),
                        jax.process_count(), timeout)
    atexit.register(leave, 1)  # runs before JAX's shutdown, which would wait for the others
    return jax.process_index(), jax.process_count()


def detected():
    """Whether JAX's cluster detection finds this process in a job of several (SLURM, Open
    MPI, ...), which ``initialize()`` without arguments joins."""
    try:
        from jax._src.clusters import ClusterEnv  # noqa: PLC0415

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = [env for env in ClusterEnv._cluster_types
                     if not env.opt_in_only_method and env.is_env_present()]
            return bool(found) and found[0].get_process_count() > 1
    except Exception:  # noqa: BLE001 (JAX's detection is private API: no cluster, then)
        return False


def _check_arguments(coordinator, num_processes, process_id, timeout):
    given = [value is not None for value in (coordinator, num_processes, process_id)]
    if any(given) and not all(given):
        raise DistributedError("expected --coordinator HOST:PORT, --num-processes N and "
                               "--process-id I together (or none of them, under a cluster "
                               "manager JAX detects, such as SLURM)")
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DistributedError(f"--coordinator: expected HOST:PORT (e.g. 10.0.0.1:1234), "
                                   f"got {coordinator!r}")
        if num_processes < 1:
            raise DistributedError(f"--num-processes: expected at least 1, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise DistributedError(f"--process-id: expected 0 to {num_processes - 1} "
                                   f"(--num-processes {num_processes}), got {process_id}")
    if not timeout > 0:
        raise DistributedError(f"--distributed-timeout: expected a positive number of "
                               f"seconds, got {timeout}")


def _join_error(error, coordinator):
    text = str(error)
    if coordinator is None and "coordinator_address" in text:
        return ("no --coordinator given and no cluster found (JAX detects SLURM, Open MPI and "
                "others); give --coordinator HOST:PORT --num-processes N --process-id I")
    return f"cannot join the coordinator {coordinator}: {text.splitlines()[0][:200]}"


def _not_joined(coordinator, num_processes, process_id, timeout):
    """Ends this process (from the timer's thread): the run did not come together in time."""
    if process_id != 0 and coordinator is not None and not _listening(coordinator):
        what = f"no coordinator answers at {coordinator} (process 0 runs it)"
    else:
        what = f"not all {num_processes or 'the'} processes joined"
    _exit(f"{what} within {timeout:g} s; start every process with the same --coordinator and "
          f"--num-processes, each with its own --process-id, or raise --distributed-timeout", 2)


def _listening(address):
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=2).close()
    except OSError:
        return False
    return True


def _exit(message, status):
    print(f"rnnkit: error: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


def is_main():
    """Whether this process writes the run folder and prints: process 0, or the only one."""
    return jax.process_index() == 0


def check_same_run(config, task, data):
    """Raises a DistributedError, naming the first difference, unless every process trains the
    same ``config`` (but for ``PER_PROCESS_FIELDS``) of ``task`` on the same training data
    (the arrays of ``data``'s first epoch) with as many devices; a no-op in a single process.
    Every process must call it: it waits for all."""
    if _session is None:
        return
    arrays, _ = task.train_arrays(config, data, 1)
    values = {k: v for k, v in config.to_dict().items() if k not in PER_PROCESS_FIELDS}
    values["local_devices"] = jax.local_device_count()
    # a checksum of the data: the same files may lie in another folder on each machine
    values["training_data"] = [f"{a.shape} {zlib.crc32(np.ascontiguousarray(a)):08x}"
                               for a in arrays]
    _session.agree("start", values)
    _connect(take_devices(jax.devices(), config.devices))


def _connect(devices):
    """Opens the collectives among ``devices`` with one all-reduce, while gloo's lines about
    its connections (on stdout, one per device) go to /dev/null rather than into the output."""
    mesh = Mesh(np.array(devices), ("all",))
    total = jax.jit(jax.shard_map(lambda x: jax.lax.psum(x, "all"), mesh=mesh,
                                  in_specs=PartitionSpec("all"), out_specs=PartitionSpec()))
    ones = put(np.ones(len(devices), np.float32), NamedSharding(mesh, PartitionSpec("all")))
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            jax.block_until_ready(total(ones))
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def agree(name, values):
    """Raises a DistributedError unless every process passed equal ``values`` (a dict of JSON
    values) under this ``name``; a no-op in a single process. Every process must call it, in
    the same order: it waits for the others."""
    if _session is not None:
        _session.agree(name, values)


def lost(error, run_dir):
    """The ``ProcessLost`` that a failed collective (``error``, a ``JaxRuntimeError``) means
    in a run of several processes, naming ``run_dir`` to resume; None in a single process."""
    if _session is None:
        return None
    return ProcessLost(f"a collective operation with the other processes failed "
                       f"({str(error).splitlines()[0][:120]}): a process stopped, or its "
                       f"machine or network failed. {run_dir} keeps its checkpoints: start every "
                       f"process again with rnnkit train --resume {run_dir}")


def finish():
    """Waits until every process has finished its part (process 0 writes the last files), so
    that none leaves early; a no-op in a single process."""
    if _session is not None:
        _session.finish()


def leave(status):
    """Ends a process that stops before the others finished (an error, Ctrl-C): tells them,
    so that they stop too, and exits with ``status`` at once, without JAX's shutdown (which
    would wait for them). A no-op in a single process and after ``finish``."""
    if _session is not None and not _session.done.is_set():
        _session.stop(None, status)


class _Session:
    """This process's part: its beats, its watch over the others, and the agreements."""

    def __init__(self, client, index, count, timeout):
        self.client, self.index, self.count, self.timeout = client, index, count, timeout
        self.done = threading.Event()  # finished or leaving: the watch stops
        self.agreements = 0
        threading.Thread(target=self._watch, name="rnnkit-watch", daemon=True).start()

    def _set(self, key, value):
        self.client.key_value_set(f"{_KEYS}/{key}", value, allow_overwrite=True)

    def _watch(self):
        """Beats every BEAT seconds; ends this process when another stopped early, has been
        silent for ``timeout`` seconds, or the coordinator is gone."""
        start = time.monotonic()
        heard = {other: (None, start) for other in range(self.count)}  # (last beat, seen at)
        beat = 0
        while not self.done.wait(BEAT):
            beat += 1
            try:
                self._set(f"beat/{self.index}", str(beat))
                state = dict(self.client.key_value_dir_get(f"{_KEYS}/"))
            except Exception as e:  # noqa: BLE001 (the store is gone with process 0)
                self._lost(f"process 0, which runs the coordinator, stopped answering "
                           f"({str(e).splitlines()[0][:80]})")
                return
            now = time.monotonic()
            for other in set(range(self.count)) - {self.index}:
                if f"{_KEYS}/finished/{other}" in state:
                    continue
                if f"{_KEYS}/stopped/{other}" in state:
                    self._lost(f"process {other} stopped before the run ended (its output says "
                               f"why)", grace=min(2.0, self.timeout))
                    return
                value = state.get(f"{_KEYS}/beat/{other}")
                if heard[other][0] != value:
                    heard[other] = (value, now)
                elif now - heard[other][1] > self.timeout:
                    self._lost(f"process {other} stopped answering {self.timeout:g} s ago (it "
                               f"was killed, or its machine or network failed)")
                    return

    def _lost(self, what, grace=0.0):
        """Ends this process (from the watch's thread): the others cannot go on without one."""
        if not self.done.wait(grace):  # unless this process is ending by itself meanwhile
            self.stop(f"{what}; process {self.index} stops too. The run folder keeps its "
                      f"checkpoints: start every process again with rnnkit train --resume "
                      f"RUN", 1)

    def stop(self, message, status):
        """Ends this process with ``message`` (if any) and ``status``, at once (JAX's shutdown
        would wait for the others): tells the others, which then stop too; process 0 first
        waits for them (at most ``timeout`` seconds), as its exit ends its coordinator, which
        JAX makes the others' abrupt end."""
        self.done.set()
        if message:
            print(f"rnnkit: error: {message}", file=sys.stderr, flush=True)
        try:
            self._set(f"stopped/{self.index}", "1")
            if self.index == 0:
                self._wait_for_others()
        except Exception:  # noqa: BLE001, S110 (the coordinator is gone: nothing to tell)
            pass
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)

    def _wait_for_others(self):
        """Returns once every other process has stopped, finished or fallen silent."""
        seen, deadline = {}, time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            state, now = dict(self.client.key_value_dir_get(f"{_KEYS}/")), time.monotonic()
            alive = False
            for other in range(1, self.count):
                if f"{_KEYS}/stopped/{other}" in state or f"{_KEYS}/finished/{other}" in state:
                    continue
                beat = state.get(f"{_KEYS}/beat/{other}")
                if seen.get(other, (None,))[0] != beat:
                    seen[other] = (beat, now)
                alive = alive or now - seen[other][1] < 3 * BEAT
            if not alive:
                return
            time.sleep(BEAT / 4)

    def agree(self, name, values):
        self.agreements += 1
        key = f"agree/{self.agreements}-{name}"
        self._set(f"{key}/{self.index}", json.dumps(values, sort_keys=True))
        for other in range(self.count):
            theirs = json.loads(self._wait(f"{_KEYS}/{key}/{other}"))
            for field in sorted(set(values) | set(theirs)):
                if values.get(field) != theirs.get(field):
                    raise DistributedError(
                        f"process {other} was started with {field}={theirs.get(field)!r}, "
                        f"process {self.index} with {values.get(field)!r}; give every process "
                        f"the same rnnkit train flags (but its own --process-id)")

    def _wait(self, key):
        """The value of ``key`` once its process has set it (the watch ends this process if
        that one is gone)."""
        while True:
            try:
                return self.client.blocking_key_value_get(key, int(BEAT * 1000))
            except Exception as e:  # noqa: BLE001
                if "DEADLINE_EXCEEDED" not in str(e):  # not just a second without it
                    raise DistributedError(f"the coordinator stopped answering: "
                                           f"{str(e).splitlines()[0][:100]}") from None

    def finish(self):
        self._set(f"finished/{self.index}", "1")
        for other in range(self.count):
            self._wait(f"{_KEYS}/finished/{other}")
        self.done.set()
