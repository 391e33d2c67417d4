"""``rnnkit``: train a task's model (the book's MNIST RNN by default), evaluate a run, predict.

    rnnkit train [--task NAME] [--cell lstm ...]   a new run in runs/<timestamp> (or --out)
    rnnkit train --resume RUN [--epochs N]         continue RUN from its latest checkpoint
    rnnkit tasks                                   the tasks, one line each
    rnnkit evaluate RUN [--split test]             the task's metrics on a split
    rnnkit predict RUN INPUT...                    per input: the input, then the prediction
    rnnkit generate RUN --steps N                  extend a sequence (the time-series task)
    rnnkit runs [DIR]                              the runs in DIR, newest first
    rnnkit gradients --out DIR                     gradient flow through time, per cell

The ``train`` flags are built from the task's configuration fields (``TrainConfig`` for MNIST). Usage errors, bad values, missing
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

from jax.errors import JaxRuntimeError

from rnnkit import distributed
from rnnkit.atomic import atomic_write
from rnnkit.checkpoint import CheckpointError, latest_checkpoint
from rnnkit.config import ConfigError, GradientFlowConfig
from rnnkit.datasets import DatasetError
from rnnkit.distributed import DistributedError, ProcessLost
from rnnkit.gradient_flow import run as run_gradient_flow
from rnnkit.parallel import use_cpu_cores
from rnnkit.progress import MetricsError
from rnnkit.rundir import RunFolderError, hold
from rnnkit.runs import format_runs, list_runs
from rnnkit.tasks import DEFAULT, TASKS, get_task, task_of
from rnnkit.tasks.timeseries import generate_run, plot_generated
from rnnkit.train import TrainingDiverged, fit, read_data_source, read_run_config, restore

_FLAG_TYPES = {int: (int, "N"), float: (float, "X"), str: (str, "NAME"), str | None: (str, "DIR")}
_CONFIG_FIELDS = {f.name for task in TASKS.values()
                  for f in dataclasses.fields(task.config_class)}


class UsageError(Exception):
    """A command line that argparse or the config rejected; printed as one line, exit 2."""


class Interrupted(Exception):
    """Ctrl-C stopped a training; the message says what the run folder kept. Exit 130."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def add_config_flags(parser, config_class):
    """One flag per field of ``config_class`` but ``task``; only the flags given end up in the
    namespace."""
    for field in dataclasses.fields(config_class):
        if field.name == "task":
            continue
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


def build_parser(task=DEFAULT):
    """The command line's parser; ``train`` takes the flags of ``task``'s configuration."""
    parser = _Parser(prog="rnnkit", description="Train the book's RNNs (the MNIST classifier by "
                     "default; rnnkit tasks lists the others), evaluate a run, predict. Errors "
                     "exit with status 2 (1: diverged, 130: interrupted).")
    from importlib.metadata import version  # the installed distribution's version, as pip's

    parser.add_argument("--version", action="version", version=f"rnnkit {version('rnnkit')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train a task's model (default: the book's MNIST "
                                "RNN)", description="Train a task's model. Without flags: the "
                                "book's MNIST classifier, an RNN that reads each image as 28 rows "
                                "of 28 pixels. The flags below are those of the task given with "
                                "--task (rnnkit train --task NAME --help).")
    train.add_argument("--task", choices=tuple(TASKS), default=task,
                       help=f"the task (default: {DEFAULT}; rnnkit tasks lists them)")
    add_config_flags(train, get_task(task).config_class)
    train.add_argument("--resume", metavar="RUN", help="continue RUN from its newest intact "
                       "checkpoint (start it over if it stopped before its first) with RUN's "
                       "config.json, on the data it was trained on (RUN/data.json); "
                       "of the other flags only --epochs (to extend the run), --data-dir (the "
                       "same data, moved), --download and --devices may differ from it")
    _add_launch_flags(train)
    train.set_defaults(handler=_train)
    tasks = commands.add_parser("tasks", help="list the tasks rnnkit train --task can train")
    tasks.set_defaults(handler=_tasks)
    evaluate = commands.add_parser("evaluate", help="a run's metrics on a split (MNIST: loss, "
                                   "accuracy and confusion matrix)")
    evaluate.add_argument("run", metavar="RUN", help="run folder written by rnnkit train")
    evaluate.add_argument("--split", choices=("train", "validation", "test"), default="test",
                          help="data split to evaluate (default: test)")
    _add_data_flags(evaluate)
    evaluate.set_defaults(handler=_evaluate)
    predict = commands.add_parser("predict", help="the model's prediction for each input: one "
                                  "line each, the input then the prediction, tab-separated")
    predict.add_argument("run", metavar="RUN", help="run folder written by rnnkit train")
    predict.add_argument("files", metavar="INPUT", nargs="+", help="MNIST: PNG (any size, "
                         "converted to 28x28 grayscale) or .npy of shape [28, 28], [784], "
                         "[N, 784], [N, 28, 28]; timeseries: .npy or .csv windows of the run's "
                         "n_steps values; dates: dates in words (\"April 22, 2019\"); spell: "
                         "as MNIST; reber: strings of the letters BEPSTVX (one line each: the "
                         "string, good or bad, the verdict's probability)")
    predict.add_argument("--invert", action="store_true", help="MNIST: invert the pixels (MNIST "
                         "digits are white on black; pass this for dark digits on light)")
    predict.add_argument("--beam", type=int, metavar="N", help="dates, spell: decode by beam "
                         "search of width N (default: greedy decoding)")
    predict.set_defaults(handler=_predict)
    generate = commands.add_parser("generate", help="extend a seed sequence with a time-series "
                                   "run's model, feeding each prediction back in")
    generate.add_argument("run", metavar="RUN", help="run folder of rnnkit train --task timeseries")
    generate.add_argument("--steps", type=int, default=300, metavar="N",
                          help="values to generate (default: 300)")
    generate.add_argument("--from", dest="seed", choices=("zeros", "series"), default="zeros",
                          help="the seed: n_steps zeros, or n_steps values of the series from "
                          "t = 10 (default: zeros)")
    generate.set_defaults(handler=_generate)
    gradients = commands.add_parser(
        "gradients", help="gradient flow through time: ||dL/dh_t|| of BasicRNN, LSTM and GRU "
        "on a task that needs a long memory, before and after the same training",
        description="Train BasicRNN, LSTM and GRU for the same budget to remember the first "
        "step's class over --n-steps steps of noise; write each step's gradient norm at "
        "initialisation and after training (gradient_norms.csv, gradient_norms.png) and each "
        "cell's held-out accuracy (accuracy.csv) into --out.")
    add_config_flags(gradients, GradientFlowConfig)
    gradients.set_defaults(handler=_gradients)
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


def _add_launch_flags(parser):
    """How this process runs: its CPU devices and its place in a run of several processes
    (not part of the run's configuration: a run may resume with others)."""
    parser.add_argument("--cpu-devices", type=int, metavar="N", help="CPU devices JAX gives "
                        "this process (default: JAX_NUM_CPU_DEVICES or XLA_FLAGS' "
                        "--xla_force_host_platform_device_count if set, else one per core)")
    parser.add_argument("--coordinator", metavar="HOST:PORT", help="train in several "
                        "processes (docs/parallel.md): process 0's address, where it runs the "
                        "coordinator; every process gets the same")
    parser.add_argument("--num-processes", type=int, metavar="N", help="the processes of the "
                        "run, with --coordinator")
    parser.add_argument("--process-id", type=int, metavar="I", help="this process's number, 0 "
                        "to N-1, with --coordinator; process 0 writes the run folder")
    parser.add_argument("--distributed-timeout", type=float, default=60, metavar="S",
                        help="seconds to wait for every process to join, and for one that "
                        "falls silent before the others stop (default: 60)")


def main(argv=None):
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    status = _run(argv)
    if status:  # a process that stops a distributed run early takes the others with it
        distributed.leave(status)
    return status


def _run(argv):
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        args = build_parser(_task_in(argv)).parse_args(argv)
        return args.handler(args) or 0
    except SystemExit as e:  # --help
        return e.code
    except UsageError as e:
        return _fail(e, 2)
    except ConfigError as e:
        flag = "--" + e.field.replace("_", "-") if e.field in _CONFIG_FIELDS else e.field
        return _fail(f"{flag}: {e.detail}", 2)
    except (CheckpointError, DatasetError, DistributedError, MetricsError, RunFolderError) as e:
        return _fail(e, 2)
    except (ProcessLost, TrainingDiverged) as e:
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


def _task_in(argv):
    """The task whose flags ``rnnkit train`` takes: ``--task NAME``, else the task of the run
    that ``--resume RUN`` names, else the default (an unknown name is argparse's to refuse)."""
    if not argv or argv[0] != "train":
        return DEFAULT
    for i, arg in enumerate(argv):
        if arg.startswith("--task="):
            return arg.split("=", 1)[1] if arg.split("=", 1)[1] in TASKS else DEFAULT
        if arg == "--task" and i + 1 < len(argv):
            return argv[i + 1] if argv[i + 1] in TASKS else DEFAULT
    for i, arg in enumerate(argv):
        run = (arg.split("=", 1)[1] if arg.startswith("--resume=")
               else argv[i + 1] if arg == "--resume" and i + 1 < len(argv) else None)
        if run is not None:
            try:
                return read_run_config(run).task
            except (OSError, ConfigError):
                return DEFAULT  # the handler names what is wrong with the run
    return DEFAULT


def _start(args):
    """Before JAX's first computation: this process's CPU devices (on a GPU, data parallelism
    uses the GPUs), and its place in a run of several processes, if it is in one."""
    if args.cpu_devices is not None:
        if args.cpu_devices < 1:
            raise UsageError(f"--cpu-devices: expected at least 1, got {args.cpu_devices}")
        use_cpu_cores(args.cpu_devices)
    elif not ("JAX_NUM_CPU_DEVICES" in os.environ or "--xla_force_host_platform_device_count"
              in os.environ.get("XLA_FLAGS", "")):  # the user's count, else one per core
        use_cpu_cores()
    launch = (args.coordinator, args.num_processes, args.process_id)
    if any(value is not None for value in launch) or distributed.detected():
        distributed.initialize(*launch, timeout=args.distributed_timeout)


def _train(args):
    _start(args)
    task = get_task(args.task)
    given = {name: value for name, value in vars(args).items()
             if name in _CONFIG_FIELDS and name != "task"}
    if args.resume is None:
        config = task.config_class(**given).validate()
        out_dir, recorded = config.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S"), None
    else:
        if "out" in given:
            raise UsageError("--out: not allowed with --resume; the run folder is RUN")
        saved = read_run_config(args.resume)
        if saved.task != task.name:
            raise UsageError(f"--task: the run in {args.resume} is of the {saved.task} task, "
                             f"got {task.name}")
        # devices: as many as fit this machine, unless given
        config = saved.replace(**{"devices": 0, **given}).validate()
        out_dir, recorded = args.resume, read_data_source(args.resume)
    datasets, source = task.load_data(config, data_dir=given.get("data_dir"),
                                      recorded=recorded, run=args.resume,
                                      log=print if distributed.is_main() else _quiet)
    with _interrupts_at_safe_points() as interrupted:
        try:
            fit(config, datasets, out_dir=out_dir, resume=args.resume is not None,
                data_source=source, stop=interrupted, task=task)
        except KeyboardInterrupt:
            raise Interrupted(_what_was_kept(out_dir)) from None
        except JaxRuntimeError as e:  # of several processes, one is gone
            raise distributed.lost(e, shlex.quote(str(out_dir))) or e from None
        if interrupted():  # during the test evaluation, after the last checkpoint
            raise Interrupted(_what_was_kept(out_dir))
    distributed.finish()


def _quiet(*args):
    """A log that drops its lines: only process 0 of a distributed run prints."""


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


def _tasks(args):
    width = max(map(len, TASKS))
    for name, task in TASKS.items():
        print(f"{name:<{width}}  {task.summary}")


def _evaluate(args):
    with hold(args.run):  # it writes its files into the run folder
        state, config = restore(args.run, log=_note)
        task = task_of(config.to_dict())
        data, _ = task.load_data(config, data_dir=args.data_dir, download=args.download,
                                 recorded=read_data_source(args.run), run=args.run,
                                 split=args.split)
        done = task.evaluate_run(state.model, config, data, args.split, args.run)
    print(done)


def _predict(args):
    if args.beam is not None and args.beam < 1:
        raise UsageError(f"--beam: expected a beam width >= 1, got {args.beam}")
    state, config = restore(args.run, log=_note)
    task = task_of(config.to_dict())
    if args.beam is not None and not getattr(task, "decodes", False):
        raise UsageError(f"--beam: the {task.name} task does not decode sequences (beam search "
                         f"is for the encoder-decoder tasks: rnnkit tasks)")
    try:
        lines = list(task.predict(state.model, config, args.files, args))
    except ValueError as e:  # an input that cannot be read or does not fit the model
        raise UsageError(e) from e
    print("\n".join(lines))


def _generate(args):
    if args.steps < 1:
        raise UsageError(f"--steps: expected an integer >= 1, got {args.steps}")
    config = read_run_config(args.run)
    if config.task != "timeseries":
        raise UsageError(f"{args.run}: a run of the {config.task} task; generate extends the "
                         f"sequences of a timeseries run (rnnkit train --task timeseries)")
    with hold(args.run):  # it writes its files into the run folder
        state, config = restore(args.run, log=_note)
        values = generate_run(state.model, config, args.seed, args.steps)
        run = Path(args.run)
        table = run / f"generated_{args.seed}.csv"
        with atomic_write(table) as out:
            out.write(("step,value\n" + "".join(f"{i},{v:.6f}\n" for i, v in
                                                enumerate(values.tolist()))).encode())
        picture = run / f"generated_{args.seed}.png"
        plot_generated(values, config.n_steps, picture, f"{args.steps} values generated after "
                       f"the seed ({args.seed})")
    print(f"{len(values) - config.n_steps} values after a seed of {config.n_steps} "
          f"({args.seed}) saved to {table} and {picture}")


def _gradients(args):
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(GradientFlowConfig)
             if hasattr(args, f.name)}
    try:
        config = GradientFlowConfig(**given).validate()
    except ConfigError as e:
        raise UsageError(f"--{e.field.replace('_', '-')}: {e.detail}") from e
    if config.out is None:
        raise UsageError("--out: expected the folder to write the norms, the plot and the "
                         "accuracies into (rnnkit gradients --out DIR)")
    out = Path(config.out)
    run_gradient_flow(config, out)
    print(f"gradient_norms.csv, gradient_norms.png and accuracy.csv saved to {out}")


def _runs(args):
    rows = list_runs(args.folder)
    if not rows:
        print(f"no runs in {args.folder}")
        return
    print(format_runs(rows), end="")


if __name__ == "__main__":
    sys.exit(main())
