"""rnnkit side by side with PyTorch, Keras 3 (TensorFlow) and Flax NNX, in one run.

Usage: .venv-bench/bin/python benchmarks/peers.py [--sections a,b,c,d,e,f] [--cells basic,lstm,gru]
           [--frameworks rnnkit,rnnkit-fit,rnnkit-explicit,rnnkit-autodiff,rnnkit-1dev,torch,
                         keras,flax]
           [--skip-static-long | --static-limit SECONDS]
           [--smoke] [--json benchmarks/results/peers.json]

  a  train step on the book's workload (B=150, T=28, I=28, H=150), each cell: median ms
  b  LSTM train step on long sequences (B=32, T=1000, I=32, H=128)
  c  inference (forward to logits) at B=1000 on the book's shapes: sequences per second
  d  memory of (b) at T=250, 500, 1000: XLA's memory_analysis of rnnkit's compiled step, and
     the peak-RSS growth of the step in a fresh process for every framework
  e  compile time of dynamic_rnn against static_rnn (jit of value_and_grad) at T=28, 100, 1000
  f  float32 matmul peak, matmul FLOPs per step, rnnkit's fraction of peak, sequential floor
Frameworks: see peer_models.py. "rnnkit" is the library's train step
(``rnnkit.steps.make_train_step``), one jitted call a step, the batch split across one JAX CPU
device per core as ``rnnkit train`` splits it; "rnnkit-fit" is the training loop ``rnnkit
train`` runs (``rnnkit.steps.make_steps``): 32 steps per jitted call, its time divided by 32
(not in d); "rnnkit-explicit" and "rnnkit-autodiff" force a BPTT mode on the same devices as
"rnnkit"; "rnnkit-1dev" is "rnnkit" on one device; "keras-tob" times Keras's train_on_batch
instead of the tf.function step. --smoke runs tiny shapes and 2 steps: it tests the script, not
the speed.
"""

import argparse
import dataclasses
import importlib.metadata
import math
import os
import platform
import sys

import numpy as np

import peer_costs
import rnnkit as rk
from common import book_batch, interleaved_median_ms, machine, write_json
from peer_models import BUILDERS, DEFAULT_FRAMEWORKS, GATES, param_offset, rnnkit_params


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Shapes ``(B, T, I, H)`` and step counts of every section."""

    book: tuple = (150, 28, 28, 150)
    long: tuple = (32, 1000, 32, 128)
    infer_batch: int = 1000
    memory_steps: tuple = (250, 500, 1000)
    compile_steps: tuple = (28, 100, 1000)
    matmul: int = 2048
    steps: int = 6  # timed steps per framework and round; long sequences use long_steps
    long_steps: int = 2
    rounds: int = 10  # rounds interleave the frameworks (common.interleaved_median_ms)
    warmup: int = 3
    rss_steps: int = 3


SMOKE = Sizes(book=(8, 5, 4, 6), long=(4, 20, 4, 8), infer_batch=16, memory_steps=(10, 20, 40),
              compile_steps=(5, 10, 20), matmul=128, steps=2, long_steps=2, rounds=1, warmup=1,
              rss_steps=2)
PACKAGES = ("rnnkit", "jax", "jaxlib", "optax", "numpy", "torch", "tensorflow-cpu", "keras", "flax")


def timer(sizes, steps):
    """Medians of a dict of functions, interleaved (see ``common.interleaved_median_ms``)."""
    return lambda fns: interleaved_median_ms(fns, steps=steps, rounds=sizes.rounds,
                                             warmup=sizes.warmup)


def timer_one(sizes, steps):
    """Median ms of a single function, timed as ``timer`` does."""
    many = timer(sizes, steps)
    return lambda fn: many({"fn": fn})["fn"]


def build_checked(frameworks, kind, x, y, units, *, train=True):
    """Every framework's ``Peer``, after checking its loss is finite and its parameter count."""
    peers = {name: BUILDERS[name](kind, x, y, units) for name in frameworks}
    base = rnnkit_params(kind, x.shape[-1], units)
    for name, peer in peers.items():
        if train and not math.isfinite(loss := peer.train_step()):
            raise SystemExit(f"{name} {kind}: the first train step's loss is {loss}")
        if not train and not np.isfinite(np.asarray(peer.forward())).all():
            raise SystemExit(f"{name} {kind}: the logits are not all finite")
        if peer.params != base + param_offset(name, kind, units):
            raise SystemExit(f"{name} {kind}: {peer.params} parameters, expected "
                             f"{base + param_offset(name, kind, units)} (see param_offset)")
    return peers


def add_ratios(rows):
    """Per cell: ``vs_torch = ms / torch ms`` and ``rnnkit_vs = rnnkit ms / ms``."""
    for row in rows:
        same = {r["framework"]: r["ms"] for r in rows if r["cell"] == row["cell"]}
        row["vs_torch"] = row["ms"] / same["torch"] if "torch" in same else None
        row["rnnkit_vs"] = same["rnnkit"] / row["ms"] if "rnnkit" in same else None
    return rows


def time_train(shape, kinds, frameworks, time_ms):
    batch_size, num_steps, input_size, units = shape
    x, y = book_batch(batch_size, num_steps, input_size)
    rows = []
    for kind in kinds:
        peers = build_checked(frameworks, kind, x, y, units)
        medians = time_ms({name: peer.train_step for name, peer in peers.items()})
        for name, peer in peers.items():
            ms = medians[name] / peer.steps_per_call
            rows.append(dict(cell=kind, framework=name, params=peer.params, ms=ms))
            print(f"  {kind:5s} {name:15s} {ms:10.2f} ms", flush=True)
    return add_ratios(rows)


def time_inference(shape, batch_size, kinds, frameworks, time_ms):
    _, num_steps, input_size, units = shape
    x, y = book_batch(batch_size, num_steps, input_size)
    rows = []
    for kind in kinds:
        peers = build_checked(frameworks, kind, x, y, units, train=False)
        medians = time_ms({name: peer.forward for name, peer in peers.items()})
        for name, ms in medians.items():
            rows.append(dict(cell=kind, framework=name, ms=ms, seq_per_s=batch_size / ms * 1e3))
    return add_ratios(rows)


COMPILED_BPTT = {"rnnkit": "auto", "rnnkit-explicit": "explicit", "rnnkit-autodiff": "autodiff"}


def memory(sizes, frameworks):
    """Section d: rnnkit's compiled bytes and every framework's peak-RSS growth, per T."""
    batch_size, _, input_size, units = sizes.long
    shapes = [(batch_size, t, input_size, units) for t in sizes.memory_steps]
    compiled, rss = [], []
    # One device: XLA's figures for the step that sees the whole batch.
    for name in (n for n in frameworks if n in COMPILED_BPTT):
        bptt = COMPILED_BPTT[name]
        for shape in shapes:
            compiled.append(dict(framework=name, T=shape[1],
                                 **peer_costs.compiled_bytes("lstm", shape, bptt=bptt)))
    for name in frameworks:  # the one-device step is one jitted function: it can compile alone
        modes = ("run", "compile") if name == "rnnkit-1dev" else ("run",)
        for mode in modes:
            for shape in shapes:
                got = peer_costs.rss_growth(name, shape, mode=mode, steps=sizes.rss_steps)
                rss.append(dict(got, T=shape[1]))
    return dict(compiled=per_step(compiled, "total"), rss=per_step(rss, "growth_kb"))


def per_step(rows, key):
    """Add ``key / T`` and the slope ``d key / d T`` from the previous T of the same series."""
    for i, row in enumerate(rows):
        row["per_T"] = row[key] / row["T"]
        prev = rows[i - 1] if i else None
        same = prev and all(prev.get(k) == row.get(k) for k in ("framework", "mode"))
        row["slope"] = (row[key] - prev[key]) / (row["T"] - prev["T"]) if same else None
    return rows


def flops(sizes, kinds, sections):
    """Section f: the matmul peak, and per workload FLOPs, fraction of peak and the floor."""
    peak = peer_costs.matmul_gflops(sizes.matmul, timer_one(sizes, sizes.steps))
    workloads = [("book", kind, sizes.book, sizes.steps) for kind in kinds]
    workloads.append(("long", "lstm", sizes.long, sizes.long_steps))
    measured = {(w, r["cell"]): r["ms"] for w, s in (("book", "a"), ("long", "b"))
                for r in sections.get(s, []) if r["framework"] == "rnnkit"}
    rows = []
    for workload, kind, shape, steps in workloads:
        time_ms = timer_one(sizes, steps)
        ms = measured.get((workload, kind))
        if ms is None:
            x, y = book_batch(*shape[:3])
            ms = time_ms(BUILDERS["rnnkit"](kind, x, y, shape[3]).train_step)
        gflop = peer_costs.train_flops(kind, shape) / 1e9
        devices = rk.parallel.batch_devices(shape[0])  # those of the default step
        floor = peer_costs.recurrent_floor_ms(kind, shape, time_ms, devices)
        rows.append(dict(workload=workload, cell=kind, devices=len(devices), gflop=gflop,
                         rnnkit_ms=ms,
                         gflops=gflop / ms * 1e3, peak_fraction=gflop / ms * 1e3 / peak,
                         floor_ms=floor, over_floor=ms / floor))
    return dict(peak_gflops=peak, matmul=sizes.matmul, rows=rows)


def table(title, columns, rows):
    """Print ``rows`` (dicts) under ``title``; ``columns`` is ``[(key, header, format)]``."""
    cells = [[("-" if r.get(k) is None else f"{r[k]:{f}}") for k, _, f in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(columns)]
    print(f"\n{title}")
    print("  " + "  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
    for c in cells:
        print("  " + "  ".join(v.rjust(w) for v, w in zip(c, widths)))


TRAIN_COLUMNS = [("cell", "cell", "s"), ("framework", "framework", "s"), ("params", "params", "d"),
                 ("ms", "ms", ".2f"), ("vs_torch", "ms/torch", ".2f"),
                 ("rnnkit_vs", "rnnkit÷this", ".2f")]


def report_book(rows, sizes):
    table(f"(a) train step, (B, T, I, H) = {sizes.book}, median ms of {sizes.steps} x "
          f"{sizes.rounds} interleaved rounds", TRAIN_COLUMNS, rows)
    print("  params equal rnnkit's but for bias layouts (peer_models.param_offset): torch "
          "basic/lstm +G*H (b_ih + b_hh), flax gru -3H (no recurrent bias)")


def report_long(rows, sizes):
    table(f"(b) LSTM train step, (B, T, I, H) = {sizes.long}, median ms of {sizes.long_steps} x "
          f"{sizes.rounds} interleaved rounds", TRAIN_COLUMNS, rows)


def report_inference(rows, sizes):
    table(f"(c) inference to logits, B = {sizes.infer_batch}, (T, I, H) = {sizes.book[1:]}",
          TRAIN_COLUMNS[:2] + [("ms", "ms", ".2f"), ("seq_per_s", "seq/s", ".0f")]
          + TRAIN_COLUMNS[4:], rows)


def report_memory(result, sizes):
    mb = 2.0**20
    batch_size, _, input_size, units = sizes.long
    table(f"(d) rnnkit LSTM train step, B={batch_size} I={input_size} H={units}: XLA "
          "memory_analysis",
          [("framework", "framework", "s"), ("T", "T", "d"), ("temp", "temp MB", ".2f"),
           ("argument", "arg MB", ".2f"), ("output", "out MB", ".2f"), ("total", "total MB", ".2f"),
           ("per_T", "bytes/T", ".0f"), ("slope", "d bytes/dT", ".0f")],
          [dict(r, **{k: r[k] / mb for k in ("temp", "argument", "output", "total")})
           for r in result["compiled"]])
    table(f"(d) peak-RSS (VmHWM) growth of {sizes.rss_steps} LSTM train steps in a fresh process"
          " (mode compile: the jit compile alone)",
          [("framework", "framework", "s"), ("mode", "mode", "s"), ("T", "T", "d"),
           ("growth", "growth MB", ".1f"), ("per_T", "kB/T", ".1f"), ("slope", "d kB/dT", ".1f")],
          [dict(r, growth=r["growth_kb"] / 1024) for r in result["rss"]])


def report_compile(rows, sizes):
    table("(e) compile time of jit(value_and_grad(book model)): lower() + compile()",
          [("cell", "cell", "s"), ("loop", "loop", "s"), ("T", "T", "d"),
           ("lower_s", "lower s", ".2f"), ("compile_s", "compile s", ".2f"),
           ("total_s", "total s", ".2f"), ("stopped_after_s", "stopped after s", "d")], rows)
    for kind in dict.fromkeys(r["cell"] for r in rows):
        dyn = [r for r in rows if r["cell"] == kind and r["loop"] == "dynamic"]
        print(f"  {kind}: dynamic_rnn compile time T={dyn[-1]['T']} / T={dyn[0]['T']} = "
              f"{dyn[-1]['total_s'] / dyn[0]['total_s']:.2f}")


def report_flops(result, sizes):
    print(f"\n(f) float32 matmul peak ({sizes.matmul}x{sizes.matmul} @ {sizes.matmul}x"
          f"{sizes.matmul}, jax): {result['peak_gflops']:.1f} GFLOP/s")
    table("(f) rnnkit default train step: matmul FLOPs, fraction of peak, sequential-matmul floor",
          [("workload", "workload", "s"), ("cell", "cell", "s"), ("devices", "devices", "d"),
           ("gflop", "GFLOP/step", ".4f"),
           ("rnnkit_ms", "rnnkit ms", ".2f"), ("gflops", "GFLOP/s", ".1f"),
           ("peak_pct", "% peak", ".1f"), ("floor_ms", "floor ms", ".2f"),
           ("over_floor", "rnnkit/floor", ".2f")],
          [dict(r, peak_pct=100 * r["peak_fraction"]) for r in result["rows"]])


REPORTS = {"a": report_book, "b": report_long, "c": report_inference, "d": report_memory,
           "e": report_compile, "f": report_flops}


def run(args, sizes, path):
    """Run the chosen sections in order, printing each table and rewriting the JSON after each."""
    kinds, frameworks = args.cells.split(","), args.frameworks.split(",")
    payload = dict(machine=machine(), versions=versions(), smoke=args.smoke,
                   sizes=dataclasses.asdict(sizes), frameworks=frameworks,
                   loadavg_start=os.getloadavg(), sections={})
    print(f"machine: {payload['machine']}\nversions: {payload['versions']}\n"
          f"load average: {payload['loadavg_start']}", flush=True)
    results = payload["sections"]
    runners = {
        "a": lambda: time_train(sizes.book, kinds, frameworks, timer(sizes, sizes.steps)),
        "b": lambda: time_train(sizes.long, ["lstm"], frameworks,
                                timer(sizes, sizes.long_steps)),
        "c": lambda: time_inference(sizes.book, sizes.infer_batch, kinds, frameworks,
                                    timer(sizes, sizes.steps)),
        "d": lambda: memory(sizes, [f for f in frameworks
                                   if f not in ("keras-tob", "rnnkit-fit")]),
        "e": lambda: peer_costs.compile_times(sizes, kinds, args.skip_static_long,
                                              args.static_limit),
        "f": lambda: flops(sizes, kinds, results),
    }
    for name in (s for s in "abcdef" if s in args.sections.split(",")):
        results[name] = runners[name]()
        REPORTS[name](results[name], sizes)
        payload["loadavg_end"] = os.getloadavg()
        write_json(path, payload)
    print(f"\nload average: {payload.get('loadavg_end')}\nwrote {path}")


def versions():
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="a,b,c,d,e,f")
    parser.add_argument("--cells", default="basic,lstm,gru")
    parser.add_argument("--frameworks", default=",".join(DEFAULT_FRAMEWORKS),
                        help=f"comma-separated, from: {', '.join(BUILDERS)}")
    static_long = parser.add_mutually_exclusive_group()
    static_long.add_argument("--skip-static-long", action="store_true",
                             help="(e): skip static_rnn at the longest T (slow to compile)")
    static_long.add_argument("--static-limit", type=int, default=None, metavar="SECONDS",
                             help="(e): compile static_rnn at the longest T in a fresh "
                             "process and stop it after SECONDS (recorded as stopped)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 2 steps: tests only")
    parser.add_argument("--json", default=None, help="default benchmarks/results/peers.json "
                        "(peers-smoke.json with --smoke)")
    args = parser.parse_args(argv)
    if args.static_limit is not None and args.static_limit <= 0:
        parser.error(f"--static-limit: expected a positive number of seconds, got "
                     f"{args.static_limit}")
    rk.use_cpu_cores()  # as rnnkit train does: one CPU device per core, for the split step
    for flag, value, allowed in (("--sections", args.sections, REPORTS),
                                 ("--cells", args.cells, GATES),
                                 ("--frameworks", args.frameworks, BUILDERS)):
        unknown = [v for v in value.split(",") if v not in allowed]
        if unknown:
            parser.error(f"{flag}: unknown {unknown}; expected some of {', '.join(allowed)}")
    results_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    name = "peers-smoke.json" if args.smoke else "peers.json"
    run(args, SMOKE if args.smoke else Sizes(), args.json or os.path.join(results_dir, name))


if __name__ == "__main__":
    sys.exit(main())
