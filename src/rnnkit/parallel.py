"""Data parallelism: each device takes an equal slice of the batch, and the results are averaged.

What a data-parallel step computes, for ``d`` devices and a batch of ``B`` examples::

    slices  = batch split into d slices of B/d examples, one per device
    results = fn(params, *slice, key folded with the device's index)   # on each device at once
    return  mean of results over the devices                           # one all-reduce

Gradients of a batch-mean loss averaged over equal slices are the gradients of the whole batch,
up to float rounding. It is JAX's own engine (``jax.shard_map`` over a ``Mesh``), so the same
code splits a batch across the cores of a CPU, the GPUs of a machine, or the devices of several
processes (``rnnkit.distributed``): each process places only its own devices' slices
(``put``), and XLA's all-reduce spans every process.

On a CPU, XLA keeps one device's computation mostly on one core: the small matmuls and the gate
arithmetic of an RNN step use the other cores little. JAX shows one CPU device unless told
otherwise before its first computation; ``use_cpu_cores()`` gives it one per core, and then a
data-parallel step keeps every core busy (``docs/design.md#data-parallelism-across-cores``).
"""

import collections
import os

import jax
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "batch"


def available_cores():
    """The number of cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def use_cpu_cores(count=None):
    """Give JAX ``count`` CPU devices (default: one per available core), for data parallelism.

    JAX fixes its number of CPU devices at its first computation, so call this first, right
    after the imports (``rnnkit train`` does). Later, the count can no longer change, and this
    returns the count JAX started with.

    Returns:
      The number of CPU devices JAX has or will have.
    Raises:
      ValueError: ``count`` is not a positive integer.
    """
    if count is None:
        count = available_cores()
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count: expected a positive integer number of CPU devices, "
                         f"got {count!r}")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # JAX has computed something already: its devices are fixed
        return len(jax.devices("cpu"))
    return count


# The fewest examples a device gets from the default split, so that a batch is not cut into
# slivers on many cores (docs/design.md#at-least-16-examples-a-device).
MIN_EXAMPLES_PER_DEVICE = 16


def batch_devices(batch_size, devices=None, *, min_examples=MIN_EXAMPLES_PER_DEVICE):
    """The devices a batch of ``batch_size`` examples is split across by default: the first
    ``k`` of each process's ``devices`` (default: ``jax.devices()``), ``k`` the largest count
    for which the ``k * processes`` devices divide ``batch_size`` evenly and leave each at least
    ``min_examples`` (else ``k = 1``: one device in one process)."""
    groups = _by_process(jax.devices() if devices is None else devices)
    counts = [k for k in range(1, min(map(len, groups)) + 1)
              if batch_size % (k * len(groups)) == 0
              and batch_size // (k * len(groups)) >= min_examples]
    return take_devices(devices if devices is not None else jax.devices(),
                        max(counts, default=1) * len(groups))


def take_devices(devices, count):
    """``count`` of ``devices``: the first ``count / processes`` of each process's, in order (a
    process that feeds a batch takes an equal share of it)."""
    groups = _by_process(devices)
    return [device for group in groups for device in group[:count // len(groups)]]


def resolve_device_count(requested, batch_size, available):
    """The number of devices a batch of ``batch_size`` is split across: ``requested``, or for 0
    the default of ``batch_devices``; with several processes, a multiple of their number.

    Raises:
      ValueError: more devices asked for than ``available``, a count that is not a multiple of
        the processes', or a (global) batch that the count does not divide.
    """
    processes = len(_by_process(available))
    count = requested or len(batch_devices(batch_size, available))
    many = f" of the {processes} processes" if processes > 1 else ""
    if count > len(available):
        hint = ("; rnnkit train gives JAX one CPU device per core unless --cpu-devices, "
                "JAX_NUM_CPU_DEVICES or XLA_FLAGS=--xla_force_host_platform_device_count=N say "
                "otherwise (from Python, call rnnkit.parallel.use_cpu_cores(N) before any JAX "
                "computation)" if available[0].platform == "cpu" else "")
        raise ValueError(f"devices: expected at most the {len(available)} "
                         f"{available[0].platform} devices{many or ' JAX sees'}, got "
                         f"{requested}{hint}")
    if count % processes:
        raise ValueError(f"devices: expected a multiple of the {processes} processes (each feeds "
                         f"an equal share of every batch), got {count}")
    if batch_size % count and requested:
        raise ValueError(f"devices: expected a count that divides batch_size {batch_size} "
                         f"evenly, got {count}")
    if batch_size % count:
        raise ValueError(f"batch_size: expected a multiple of the {processes} processes (each "
                         f"feeds an equal share of every global batch), got {batch_size}")
    return count


def _by_process(devices):
    """``devices`` grouped by the process that drives them, in process order."""
    groups = {}
    for device in devices:
        groups.setdefault(getattr(device, "process_index", 0), []).append(device)
    return [groups[p] for p in sorted(groups)]


def batch_sharding(devices):
    """The sharding of a batch ``[B, ...]`` split along its first axis across ``devices``."""
    return NamedSharding(_mesh(devices), PartitionSpec(AXIS))


def data_parallel(fn, devices):
    """``fn(params, *batch, key)`` run on equal slices of the batch, one per device, averaged.

    Args:
      fn: returns a pytree of floating arrays that are means over its slice (a loss and its
        gradients, an accuracy); ``batch`` arrays are ``[B, ...]`` with ``B`` a multiple of
        ``len(devices)``; ``key`` is a PRNG key or None (each device then gets its own
        ``fold_in(key, device index)``).
      devices: the devices, two or more (with one, call ``fn`` itself).
    Returns:
      A function of the same arguments, for use inside ``jax.jit``. On a CPU, call the jitted
      step through ``bounded_queue``.
    """
    def local(params, *batch_and_key):
        *batch, key = batch_and_key
        if key is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(AXIS))
        return _mean_across_devices(fn(params, *batch, key))

    def run(params, *batch_and_key):
        *batch, key = batch_and_key
        specs = (PartitionSpec(), *(PartitionSpec(AXIS) for _ in batch), PartitionSpec())
        # check_vma=False: the time loops start from states made inside (zero_state), which
        # do not vary across devices, and carry states that do.
        return jax.shard_map(local, mesh=_mesh(devices), in_specs=specs,
                             out_specs=PartitionSpec(), check_vma=False)(params, *batch, key)

    return run


def _mean_across_devices(tree):
    """``pmean`` of ``tree``'s arrays (of one float dtype), sent as one flat array: the same
    bits as a ``pmean`` per array, with one all-reduce operand instead of one per array."""
    # XLA:CPU's all-reduce meets the other devices once per operand, so one operand costs
    # least (docs/design.md#one-all-reduce-of-one-flat-array). The barrier keeps XLA from
    # fusing the flat array's slices into Adam's update, which would change its float rounding
    # (tests/test_parallel.py checks the bits).
    flat, unravel = ravel_pytree(tree)
    return jax.lax.optimization_barrier(unravel(jax.lax.pmean(flat, AXIS)))


def bounded_queue(step, depth=2):
    """``step`` that, before each call, waits until the call ``depth`` calls back has finished.

    JAX returns from a call before the devices have run it, so a loop can queue many steps.
    With many multi-device steps queued, XLA:CPU's in-process all-reduce can deadlock (every
    device thread waiting in the all-reduce for a device that never came, until the process
    aborts; ``docs/design.md#a-queue-of-two-steps``). ``tests/test_parallel.py`` runs 2,000
    steps through a queue of 2. A data-parallel loop on a CPU should keep its queue this short;
    ``make_train_step`` and ``make_steps`` do.

    ``step`` must return a pytree whose first array is on every device of the call (as the
    replicated model of a data-parallel step is): waiting for it waits for the whole call.
    """
    pending = collections.deque()

    def call(*args):
        if len(pending) >= depth:
            jax.block_until_ready(pending.popleft())
        out = step(*args)
        # A jitted call's outputs on a device are ready together, so one array on every device
        # stands for the call; waiting for each array of a train state costs host time.
        pending.append(jax.tree.leaves(out)[0])
        return out

    return call


def put(tree, sharding):
    """``tree``'s host arrays, the same in every process, as arrays of ``sharding``: each
    process copies only the parts its own devices hold (``jax.make_array_from_callback``), so
    that several processes feed a batch without sending it to one another."""
    if sharding.is_fully_addressable:  # one process
        return jax.device_put(tree, sharding)

    def one(array):
        array = np.asarray(array)
        return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])

    return jax.tree.map(one, tree)


def local_copy(tree):
    """``tree`` with each array that spans other processes' devices replaced by this process's
    copy on one device: for a replicated train state, the same values, which one process can
    then evaluate or save without the others."""
    def one(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return leaf.addressable_data(0)
        return leaf

    return jax.tree.map(one, tree)


def _mesh(devices):
    return Mesh(np.array(devices), (AXIS,))
