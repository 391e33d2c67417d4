"""What a train step costs besides its time: memory, compile time, FLOPs, the sequential floor.

Run as a script, this file is the fresh child process of the peak-RSS measurement
(``python benchmarks/peer_costs.py '{"framework": "torch", "shape": [B, T, I, H], ...}'``) and
of a compile-time measurement with a time limit (``'{"compile": "static", "cell": ...}'``).
"""

import json
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec

import rnnkit as rk
from common import CLASSES, book_batch, grad_fn, train_step_fn
from peer_models import BUILDERS, GATES


def compiled_bytes(kind, shape, *, bptt):
    """XLA's ``memory_analysis`` of rnnkit's train step (``make_train_step``, one device) on
    ``shape = (B, T, I, H)``."""
    batch_size, num_steps, input_size, units = shape
    x, y = book_batch(batch_size, num_steps, input_size)
    _, step, state = train_step_fn(kind, x, y, units, bptt=bptt, devices=jax.devices()[:1])
    stats = step.lower(state[0], x, y).compile().memory_analysis()
    sizes = dict(temp=stats.temp_size_in_bytes, argument=stats.argument_size_in_bytes,
                 output=stats.output_size_in_bytes)
    return dict(sizes, total=sum(sizes.values()))


def peak_rss_kb():
    """This process's peak RSS in kB: ``(VmHWM, ru_maxrss)``.

    ``ru_maxrss`` of a process started by ``exec`` begins at its *parent's* peak (Linux copies
    the old address space's high-water mark into the new process at exec), so a child of a big
    benchmark process would show no growth. ``VmHWM`` is the same high-water mark for this
    address space alone; it is the figure used where ``/proc`` has it.
    """
    ru_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with open("/proc/self/status") as f:
            hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        hwm = ru_maxrss
    return hwm, ru_maxrss


def rss_growth(framework, shape, *, mode, steps):
    """Peak-RSS growth (kB) of ``steps`` train steps (``mode="run"``), or of compiling the step
    only (``mode="compile"``, JAX), measured in a fresh Python process after the model is built."""
    return _child(dict(framework=framework, shape=list(shape), mode=mode, steps=steps))


def _child(spec, timeout=None):
    """Run ``spec`` in a fresh ``python peer_costs.py`` process; its last line of output."""
    proc = subprocess.run([sys.executable, __file__, json.dumps(spec)], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode:
        raise RuntimeError(f"benchmark child {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_child(spec):
    batch_size, num_steps, input_size, units = spec["shape"]
    x, y = book_batch(batch_size, num_steps, input_size)
    peer = BUILDERS[spec["framework"]]("lstm", x, y, units)
    hwm0, max0 = peak_rss_kb()
    if spec["mode"] == "compile":
        peer.compile()
    else:
        for _ in range(spec["steps"]):
            peer.train_step()
    hwm1, max1 = peak_rss_kb()
    return dict(spec, growth_kb=hwm1 - hwm0, hwm_kb=[hwm0, hwm1], ru_maxrss_kb=[max0, max1])


def compile_times(sizes, kinds, skip_static_long, static_limit_s):
    """Section e. With ``static_limit_s``, static_rnn at the longest T is compiled in a fresh
    process stopped after that many seconds; a stopped one is a row with ``stopped_after_s``."""
    batch_size, _, input_size, units = sizes.book
    longest = max(sizes.compile_steps)
    rows = []
    for kind in kinds:
        # First use of a cell pays one-off tracing costs: pay them at a T that is not reported.
        compile_seconds(kind, (batch_size, 2, input_size, units), loop="dynamic")
        for loop in ("dynamic", "static"):
            for t in sizes.compile_steps:
                limited = loop == "static" and t == longest
                if limited and skip_static_long:
                    continue
                shape = (batch_size, t, input_size, units)
                if limited and static_limit_s is not None:
                    got = compile_seconds_limited(kind, shape, loop=loop, limit_s=static_limit_s)
                else:
                    got = compile_seconds(kind, shape, loop=loop)
                row = dict(cell=kind, loop=loop, T=t, lower_s=None, compile_s=None, total_s=None)
                if got is None:
                    row["stopped_after_s"] = static_limit_s
                    print(f"  {kind:5s} {loop:8s} T={t:<5d} stopped after {static_limit_s} s",
                          flush=True)
                else:
                    row.update(lower_s=got[0], compile_s=got[1], total_s=sum(got))
                    print(f"  {kind:5s} {loop:8s} T={t:<5d} {sum(got):8.2f} s", flush=True)
                rows.append(row)
    return rows


def compile_seconds(kind, shape, *, loop):
    """Wall seconds of ``jax.jit(value_and_grad(loss)).lower(...)`` and of ``.compile()``, the
    loss unrolled by ``rk.dynamic_rnn`` or ``rk.static_rnn`` (``loop``)."""
    batch_size, num_steps, input_size, units = shape
    x, y = book_batch(batch_size, num_steps, input_size)
    _, grad, model = grad_fn(kind, x, y, units, loop=loop)  # a new jit: nothing from its caches
    start = time.perf_counter()
    lowered = grad.lower(model, x, y)
    middle = time.perf_counter()
    lowered.compile()
    return middle - start, time.perf_counter() - middle


def compile_seconds_limited(kind, shape, *, loop, limit_s):
    """``compile_seconds`` in a fresh process, stopped after ``limit_s`` wall seconds (the
    child's own start-up and its warm-up at T=2 included): ``None`` when it was stopped."""
    spec = dict(compile=loop, cell=kind, shape=list(shape))
    try:
        return tuple(_child(spec, timeout=limit_s))
    except subprocess.TimeoutExpired:  # subprocess.run has killed the child
        return None


def _compile_child(spec):
    """Compile at T=2 first (one-off tracing costs), then time the compile at the full shape."""
    batch_size, _, input_size, units = spec["shape"]
    compile_seconds(spec["cell"], (batch_size, 2, input_size, units), loop=spec["compile"])
    return compile_seconds(spec["cell"], tuple(spec["shape"]), loop=spec["compile"])


def matmul_gflops(size, timer):
    """float32 ``[n, n] @ [n, n]`` throughput in GFLOP/s; ``timer(fn)`` returns median ms."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    ms = timer(lambda: matmul(a, a).block_until_ready())
    return 2 * size**3 / (ms * 1e-3) / 1e9


def train_flops(kind, shape):
    """Matmul FLOPs of one train step: forward (input projection, recurrence, dense) x 3."""
    batch_size, num_steps, input_size, units = shape
    gated = GATES[kind] * units
    forward = 2 * batch_size * num_steps * (input_size + units) * gated
    forward += 2 * batch_size * units * CLASSES
    return 3 * forward  # the backward pass is two matmuls per forward one


def recurrent_floor_ms(kind, shape, timer, devices=None):
    """Median ms of only the step's sequential matmuls, each waiting for the one before.

    T forward ``[B, H] @ [H, G*H]`` then T backward ``[B, G*H] @ [G*H, H]``. The G blocks of
    ``w`` are one orthogonal matrix and the chain averages / repeats them, so values neither
    grow nor vanish (no denormals) and each link adds only a [B, G*H] mean or tile. With two or
    more ``devices``, each runs the chain on its slice of the batch, all at once: the floor of
    the data-parallel step.
    """
    batch_size, num_steps, _, units = shape
    gates = GATES[kind]
    q = jax.nn.initializers.orthogonal()(jax.random.key(0), (units, units), jnp.float32)
    w = jnp.tile(q, (1, gates))  # [H, G*H]
    h0 = jax.random.normal(jax.random.key(1), (batch_size, units), jnp.float32)

    def chain(h, w):
        def forward(h, _):
            return (h @ w).reshape(h.shape[0], gates, units).mean(axis=1), None  # [B, H]

        def backward(d, _):
            return jnp.tile(d / gates, (1, gates)) @ w.T, None  # [B, G*H] @ [G*H, H]

        h, _ = jax.lax.scan(forward, h, None, length=num_steps)
        d, _ = jax.lax.scan(backward, h, None, length=num_steps)
        return d

    if devices is not None and len(devices) > 1:
        split = PartitionSpec(rk.parallel.AXIS)
        chain = jax.shard_map(chain, mesh=Mesh(np.array(devices), (rk.parallel.AXIS,)),
                              in_specs=(split, PartitionSpec()), out_specs=split)
        h0 = jax.device_put(h0, rk.parallel.batch_sharding(devices))
    chain = jax.jit(chain)
    return timer(lambda: chain(h0, w).block_until_ready())


if __name__ == "__main__":
    rk.use_cpu_cores()  # as in peers.py, before JAX's first computation
    child_spec = json.loads(sys.argv[1])
    print(json.dumps((_compile_child if "compile" in child_spec else _rss_child)(child_spec)))
