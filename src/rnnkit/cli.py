"""``rnnkit``: train the book's MNIST RNN, evaluate a run, predict digits from files.

    rnnkit train [--cell lstm --units 150 ...]     a new run in runs/<timestamp> (or --out)
    rnnkit train --resume RUN [--epochs N]         continue RUN from its latest checkpoint
    rnnkit evaluate RUN [--split test]             loss, accuracy and confusion matrix
    rnnkit predict RUN FILE...                     class and probabilities of PNG/.npy digits

The ``train`` flags are built from ``TrainConfig``'s fields. Usage errors, bad values, missing
data or runs print one line ``rnnkit: error: ...`` on stderr and exit with status 2; a diverged
training exits with status 1.
"""

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

from rnnkit.checkpoint import CheckpointError
from rnnkit.config import ConfigError, TrainConfig
from rnnkit.datasets import DatasetError, load
from rnnkit.evaluate import confusion_matrix, evaluate, format_confusion_matrix, load_digits
from rnnkit.evaluate import predict_probabilities
from rnnkit.model import N_OUTPUTS
from rnnkit.plots import plot_confusion_matrix
from rnnkit.progress import write_json
from rnnkit.train import TrainingDiverged, fit, read_run_config, restore

_FLAG_TYPES = {int: (int, "N"), float: (float, "X"), str: (str, "NAME"), str | None: (str, "DIR")}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


class UsageError(Exception):
    """A command line that argparse or the config rejected; printed as one line, exit 2."""


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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train a sequence classifier (the book's RNN)",
                                description="Train an RNN that reads each image as 28 rows of "
                                "28 pixels. Without flags: the book's experiment.")
    add_config_flags(train)
    train.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint "
                       "with RUN's config.json; of the other flags only --epochs (to extend the "
                       "run), --data-dir, --download and --bptt may differ from it")
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
    return parser


def _add_data_flags(parser):
    parser.add_argument("--data-dir", help="folder with the data set's IDX files "
                        "(default: the run's --data-dir, then $RNNKIT_DATA/<dataset>, ...)")
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
    except (FileNotFoundError, CheckpointError, DatasetError) as e:
        return _fail(e, 2)
    except TrainingDiverged as e:
        return _fail(e, 1)
    except KeyboardInterrupt:
        return _fail("interrupted; continue a run with: rnnkit train --resume RUN", 130)
    except BrokenPipeError:  # e.g. `rnnkit evaluate RUN | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _fail(message, status):
    print(f"rnnkit: error: {message}", file=sys.stderr)
    return status


def _load_data(config, data_dir=None, download=False):
    data_dir = config.data_dir if data_dir is None else data_dir
    loaded, description = load(
        config.dataset, data_dir, download=download or config.download,
        validation_size=config.validation_size, seed=config.seed)
    print(description)
    return loaded


def _train(args):
    given = {name: value for name, value in vars(args).items() if name in _CONFIG_FIELDS}
    if args.resume is None:
        config = TrainConfig(**given).validate()
        out_dir = config.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    else:
        if "out" in given:
            raise UsageError("--out: not allowed with --resume; the run folder is RUN")
        config = read_run_config(args.resume).replace(**given).validate()
        out_dir = args.resume
    fit(config, _load_data(config), out_dir=out_dir, resume=args.resume is not None)


def _evaluate(args):
    state, config = restore(args.run)
    data = getattr(_load_data(config, args.data_dir, args.download), args.split)
    metrics = evaluate(state.model, data.images, data.labels)
    predicted = predict_probabilities(state.model, data.images).argmax(axis=1)
    matrix = confusion_matrix(data.labels, predicted, N_OUTPUTS)
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
    state, _ = restore(args.run)
    inputs = [(file, _read_digits(file, args.invert)) for file in args.files]
    print("input\tclass\tprobability\t" + "\t".join(f"p({c})" for c in range(N_OUTPUTS)))
    for file, images in inputs:
        probabilities = predict_probabilities(state.model, images)
        for i, p in enumerate(probabilities):
            name = file if len(probabilities) == 1 else f"{file}[{i}]"
            print(f"{name}\t{p.argmax()}\t{p.max():.4f}\t" + "\t".join(f"{q:.4f}" for q in p))


def _read_digits(file, invert):
    if not Path(file).is_file():
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
