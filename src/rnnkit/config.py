"""Training configurations: one frozen dataclass per task, whose defaults are the book's experiment.

Every field carries its help text (and choices, or the least value of an integer) in its
metadata; ``rnnkit train --task NAME`` builds one flag per field from them (``batch_size`` ->
``--batch-size``), and ``config.json`` in a run folder is ``to_dict()``. ``validate()`` is the
one place where values are checked, for the CLI and ``fit``. This module depends on nothing
but the standard library and the activations' names.
"""

import dataclasses
import math
import operator

from rnnkit.activations import ACTIVATIONS

DATASETS = ("mnist", "fashion-mnist")
CELLS = ("basic", "lstm", "gru")
# How gradients flow back through time (``dynamic_rnn``'s ``bptt``; ``rnnkit.loops``).
BPTT_MODES = ("auto", "explicit", "autodiff", "cudnn")
BPTT_ALIASES = {"fused": "explicit"}  # an older name, still accepted


class ConfigError(ValueError):
    """A configuration value is invalid; ``field`` names it (``batch_size``)."""

    def __init__(self, field, message):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


def _field(default, help, **extra):
    return dataclasses.field(default=default, metadata={"help": help, **extra})


def _task_field(name):
    return dataclasses.field(default=name, metadata={"help": "the task (rnnkit tasks lists them)",
                                                     "choices": (name,)})


class RunConfig:
    """What every task's configuration shares: conversion to and from ``config.json``, and
    ``validate``. A subclass is a frozen dataclass whose first field is ``task``."""

    def __post_init__(self):
        # The alias "fused" is stored as "explicit", so a run saved with either name resumes.
        if isinstance(getattr(self, "bptt", None), str):
            object.__setattr__(self, "bptt", BPTT_ALIASES.get(self.bptt, self.bptt))

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """The config saved by ``to_dict``; missing fields take their defaults, unknown ones fail."""
        if not isinstance(values, dict):
            raise ConfigError("config", f"expected a JSON object, got {type(values).__name__}")
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(unknown[0], f"unknown configuration field (known: "
                              f"{', '.join(f.name for f in dataclasses.fields(cls))})")
        return cls(**values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def validate(self, num_train_examples=None):
        """Checks every field; with ``num_train_examples``, also that one batch fits the data.

        Returns the config itself, so ``config = TrainConfig(...).validate()`` reads naturally.
        Raises:
          ConfigError: naming the field, what was expected and what it got.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise ConfigError(f.name, f"expected one of {', '.join(choices)}, got {value!r}")
            if "minimum" in f.metadata:
                _check_int(f.name, value, minimum=f.metadata["minimum"])
            if f.type is float and f.name == "lr":
                _check_positive("lr", value)
            if f.type == (str | None) and value is not None and not isinstance(value, str):
                raise ConfigError(f.name, f"expected a path or None, got {value!r}")
        if getattr(self, "cell", "basic") != "basic" and getattr(self, "activation", "tanh") \
                not in ("tanh", self.default("activation")):
            raise ConfigError("activation", f"only the basic cell takes an activation; "
                              f"{self.cell} uses its own gates (got {self.activation!r})")
        if getattr(self, "bptt", None) == "cudnn" and self.cell != "lstm":
            raise ConfigError("bptt", f"'cudnn' trains LSTM cells (on a GPU with cuDNN); got "
                              f"cell {self.cell!r} (use auto)")
        self.check()
        if num_train_examples is not None and self.batch_size > num_train_examples:
            raise ConfigError("batch_size", f"expected at most the {num_train_examples} training "
                              f"examples, got {self.batch_size}; lower it")
        return self

    def check(self):
        """Checks of a task's own fields, after the common ones (none here)."""

    @classmethod
    def default(cls, name):
        """The default of the field ``name``, or None if the class has no such field."""
        return next((f.default for f in dataclasses.fields(cls) if f.name == name), None)

    def with_devices(self, available):
        """The config with ``devices`` resolved against the ``available`` devices (a list):
        ``rnnkit.parallel.resolve_device_count``'s count.

        Raises:
          ConfigError: more devices asked for than available, a count that does not divide
            ``batch_size``, or one that several processes cannot share evenly.
        """
        from rnnkit.parallel import resolve_device_count  # noqa: PLC0415 (jax stays out of here)

        try:
            count = resolve_device_count(self.devices, self.batch_size, available)
        except ValueError as e:  # "devices: ..." or "batch_size: ..."
            field, _, detail = str(e).partition(": ")
            raise ConfigError(field, detail) from e
        return self.replace(devices=count)


@dataclasses.dataclass(frozen=True)
class TrainConfig(RunConfig):
    """The MNIST sequence classifier; the defaults train the book's RNN on MNIST."""

    task: str = _task_field("mnist")
    dataset: str = _field("mnist", "data set to train on", choices=DATASETS)
    data_dir: str | None = _field(
        None, "folder with the four IDX files (.gz or raw); default: $RNNKIT_DATA/<dataset>, "
        "then ~/.cache/rnnkit/<dataset>, then, for MNIST without --download, the embedded "
        "5,000-digit subset (4,000 train / 500 validation / 500 test)")
    download: bool = _field(False, "download the data set if it is not found")
    cell: str = _field("basic", "memory cell: BasicRNNCell, LSTMCell or GRUCell", choices=CELLS)
    units: int = _field(150, "neurons per layer (the book's n_neurons)", minimum=1)
    layers: int = _field(1, "stacked layers (a MultiRNNCell when above 1)", minimum=1)
    activation: str = _field("tanh", "activation of the basic cell", choices=tuple(ACTIVATIONS))
    concat_states: bool = _field(False, "the dense layer reads the final states of all layers "
                                 "side by side (the book's deep RNN; an LSTM's hidden states "
                                 "h), not only the top layer's")
    epochs: int = _field(10, "passes over the training set (the book's n_epochs)", minimum=1)
    batch_size: int = _field(150, "examples per training step", minimum=1)
    lr: float = _field(0.001, "Adam learning rate")
    seed: int = _field(42, "seed of the initial weights and of the batch shuffling", minimum=0)
    out: str | None = _field(None, "run folder for config, metrics, plots and checkpoints; "
                             "default: runs/<timestamp>")
    validation_size: int = _field(5000, "training images held out for validation", minimum=1)
    bptt: str = _field("auto", "how gradients flow back through time: the explicit BPTT "
                       "(explicit; 'fused' is an older name of it), jax.grad of the scan "
                       "(autodiff), cuDNN's LSTM on a GPU (cudnn), or cuDNN where it applies "
                       "and else the explicit BPTT for the built-in cells (auto)",
                       choices=BPTT_MODES + tuple(BPTT_ALIASES))
    devices: int = _field(0, "devices each batch is split across (data parallelism); 0: as many "
                          "of JAX's devices as divide the batch evenly with at least 16 "
                          "examples each (rnnkit train gives JAX one CPU device per core)",
                          minimum=0)


def _check_int(name, value, *, minimum):
    try:
        ok = not isinstance(value, bool) and operator.index(value) >= minimum
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(name, f"expected an integer >= {minimum}, got {value!r}")


def _check_positive(name, value):
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise ConfigError(name, f"expected a positive finite number, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TimeSeriesConfig(RunConfig):
    """The chapter's time series: predict ``t sin(t)/3 + 2 sin(5t)`` one step ahead; the
    defaults are the book's (100 ReLU units, Adam 0.001, batch 50, 1,500 iterations)."""

    task: str = _task_field("timeseries")
    cell: str = _field("basic", "memory cell: BasicRNNCell, LSTMCell or GRUCell", choices=CELLS)
    units: int = _field(100, "neurons per layer", minimum=1)
    layers: int = _field(1, "stacked layers (a MultiRNNCell when above 1)", minimum=1)
    activation: str = _field("relu", "activation of the basic cell", choices=tuple(ACTIVATIONS))
    projection: str = _field("reshape", "how outputs become one value per step: one Dense "
                             "layer on all steps at once (reshape, the book's reshape trick) or "
                             "an OutputProjectionWrapper on the cell (wrapper)",
                             choices=("reshape", "wrapper"))
    keep_prob: float = _field(1.0, "keep probability of dropout on each layer's inputs in "
                              "training (a DropoutWrapper; 1: no dropout)")
    n_steps: int = _field(20, "time steps per training window", minimum=1)
    epochs: int = _field(15, "epochs of --steps-per-epoch iterations (15 x 100: the book's "
                         "1,500 iterations)", minimum=1)
    steps_per_epoch: int = _field(100, "training iterations per epoch (one metrics row each)",
                                  minimum=1)
    batch_size: int = _field(50, "windows per training step", minimum=1)
    lr: float = _field(0.001, "Adam learning rate")
    seed: int = _field(42, "seed of the initial weights and of the training windows", minimum=0)
    validation_windows: int = _field(1000, "held-out windows (drawn from seed + 1) for the "
                                     "validation MSE", minimum=1)
    stateful: bool = _field(False, "train statefully: long contiguous sequences cut into "
                            "chunks of --chunk steps, each chunk starting from the previous "
                            "chunk's final state with the gradient stopped there (truncated BPTT)")
    chunk: int = _field(20, "time steps per chunk with --stateful", minimum=1)
    sequence_steps: int = _field(200, "time steps of each long sequence with --stateful",
                                 minimum=1)
    out: str | None = _field(None, "run folder for config, metrics, plots and checkpoints; "
                             "default: runs/<timestamp>")
    bptt: str = _field("auto", "how gradients flow back through time (see rnnkit train "
                       "--help)", choices=BPTT_MODES + tuple(BPTT_ALIASES))
    devices: int = _field(0, "devices each batch is split across; 0: as many as divide the "
                          "batch evenly with at least 16 examples each (1 with --stateful)",
                          minimum=0)

    def check(self):
        keep = self.keep_prob
        if (isinstance(keep, bool) or not isinstance(keep, (int, float))
                or not 0.0 < keep <= 1.0):
            raise ConfigError("keep_prob", f"expected a number in (0, 1], got {keep!r}")
        for name in ("n_steps", "sequence_steps"):
            if getattr(self, name) > 300:
                raise ConfigError(name, f"the series has 300 steps (t in [0, 30] every 0.1); "
                                  f"expected at most 300, got {getattr(self, name)}")
        if not self.stateful:
            return
        if self.chunk > self.sequence_steps:
            raise ConfigError("chunk", f"expected at most the sequence length "
                              f"--sequence-steps={self.sequence_steps}, got {self.chunk}")
        if self.sequence_steps % self.chunk:
            raise ConfigError("chunk", f"expected a divisor of --sequence-steps="
                              f"{self.sequence_steps} (each sequence is cut into whole chunks), "
                              f"got {self.chunk}")
        chunks = self.sequence_steps // self.chunk
        if self.steps_per_epoch % chunks:
            raise ConfigError("steps_per_epoch", f"with --stateful, expected a multiple of the "
                              f"{chunks} chunks of a sequence (an epoch ends with whole "
                              f"sequences), got {self.steps_per_epoch}")
        if self.devices > 1:
            raise ConfigError("devices", f"--stateful trains on one device (the carried states "
                              f"are per sequence), got {self.devices}")

    def with_devices(self, available):
        if self.stateful:  # one device: the carried states are per sequence
            processes = len({getattr(d, "process_index", 0) for d in available})
            if processes > 1:
                raise ConfigError("stateful", f"trains on one device, in one process (the "
                                  f"carried states are per sequence), got {processes} processes")
            return self.replace(devices=1)
        return super().with_devices(available)


@dataclasses.dataclass(frozen=True)
class ReberConfig(RunConfig):
    """The chapter's exercise: embedded Reber strings against near-misses, read by a 30-unit
    GRU (the book's), one logit; Adam instead of the book's Nesterov momentum."""

    task: str = _task_field("reber")
    cell: str = _field("gru", "memory cell: BasicRNNCell, LSTMCell or GRUCell", choices=CELLS)
    units: int = _field(30, "neurons per layer", minimum=1)
    layers: int = _field(1, "stacked layers (a MultiRNNCell when above 1)", minimum=1)
    activation: str = _field("tanh", "activation of the basic cell", choices=tuple(ACTIVATIONS))
    epochs: int = _field(10, "passes over the training strings", minimum=1)
    batch_size: int = _field(50, "strings per training step", minimum=1)
    lr: float = _field(0.005, "Adam learning rate")
    seed: int = _field(42, "seed of the weights, the batch shuffling and the training strings "
                       "(validation: seed + 1, test: seed + 2)", minimum=0)
    train_size: int = _field(10000, "training strings, half valid, half near-misses",
                             minimum=1)
    validation_size: int = _field(5000, "validation strings (drawn from seed + 1)", minimum=1)
    test_size: int = _field(5000, "test strings (drawn from seed + 2)", minimum=1)
    out: str | None = _field(None, "run folder for config, metrics, plots and checkpoints; "
                             "default: runs/<timestamp>")
    bptt: str = _field("auto", "how gradients flow back through time (see rnnkit train "
                       "--help)", choices=BPTT_MODES + tuple(BPTT_ALIASES))
    devices: int = _field(0, "devices each batch is split across; 0: as many as divide the "
                          "batch evenly with at least 16 examples each", minimum=0)


@dataclasses.dataclass(frozen=True)
class DatesConfig(RunConfig):
    """Date translation: "April 22, 2019" -> "2019-04-22", an encoder-decoder of characters
    (``rnnkit.seq2seq``); dates drawn uniformly from 1000-01-01 to 9999-12-31."""

    task: str = _task_field("dates")
    cell: str = _field("gru", "memory cell of the encoder and the decoder", choices=CELLS)
    units: int = _field(128, "neurons per layer of the encoder and of the decoder", minimum=1)
    layers: int = _field(1, "stacked layers of each (a MultiRNNCell when above 1)", minimum=1)
    activation: str = _field("tanh", "activation of the basic cell", choices=tuple(ACTIVATIONS))
    embedding_size: int = _field(32, "size of the character embeddings", minimum=1)
    epochs: int = _field(10, "passes over the training dates", minimum=1)
    batch_size: int = _field(100, "dates per training step", minimum=1)
    lr: float = _field(0.003, "Adam learning rate")
    seed: int = _field(42, "seed of the weights, the batch shuffling and the training dates "
                       "(validation: seed + 1, test: seed + 2)", minimum=0)
    train_size: int = _field(20000, "training dates", minimum=1)
    validation_size: int = _field(2000, "validation dates (drawn from seed + 1)", minimum=1)
    test_size: int = _field(2000, "test dates (drawn from seed + 2)", minimum=1)
    out: str | None = _field(None, "run folder for config, metrics, plots and checkpoints; "
                             "default: runs/<timestamp>")
    bptt: str = _field("auto", "how gradients flow back through time (see rnnkit train "
                       "--help)", choices=BPTT_MODES + tuple(BPTT_ALIASES))
    devices: int = _field(0, "devices each batch is split across; 0: as many as divide the "
                          "batch evenly with at least 16 examples each", minimum=0)


@dataclasses.dataclass(frozen=True)
class SpellConfig(RunConfig):
    """Vector to sequence: spell an MNIST digit's class ("seven") from its image: an encoder
    RNN reads the 28 rows, a decoder writes the word's letters until EOS."""

    task: str = _task_field("spell")
    data_dir: str | None = _field(None, "folder with MNIST's four IDX files; default: as "
                                  "rnnkit train (the embedded 5,000-digit subset if none)")
    download: bool = _field(False, "download MNIST if it is not found")
    cell: str = _field("gru", "memory cell of the encoder and the decoder", choices=CELLS)
    units: int = _field(128, "neurons per layer of the encoder and of the decoder", minimum=1)
    layers: int = _field(1, "stacked layers of each (a MultiRNNCell when above 1)", minimum=1)
    activation: str = _field("tanh", "activation of the basic cell", choices=tuple(ACTIVATIONS))
    embedding_size: int = _field(16, "size of the letter embeddings", minimum=1)
    epochs: int = _field(20, "passes over the training digits", minimum=1)
    batch_size: int = _field(100, "digits per training step", minimum=1)
    lr: float = _field(0.002, "Adam learning rate")
    seed: int = _field(42, "seed of the weights and of the batch shuffling", minimum=0)
    validation_size: int = _field(5000, "training images held out for validation (the "
                                  "embedded subset holds out 500 of its own)", minimum=1)
    out: str | None = _field(None, "run folder for config, metrics, plots and checkpoints; "
                             "default: runs/<timestamp>")
    bptt: str = _field("auto", "how gradients flow back through time (see rnnkit train "
                       "--help)", choices=BPTT_MODES + tuple(BPTT_ALIASES))
    devices: int = _field(0, "devices each batch is split across; 0: as many as divide the "
                          "batch evenly with at least 16 examples each", minimum=0)


@dataclasses.dataclass(frozen=True)
class GradientFlowConfig(RunConfig):
    """``rnnkit gradients``: BasicRNN, LSTM and GRU trained on the same budget to remember the
    first step's class over ``n_steps`` steps of noise (``rnnkit.gradient_flow``)."""

    n_steps: int = _field(100, "time steps of each sequence: the class at the first, noise "
                          "after it", minimum=2)
    classes: int = _field(4, "classes to remember (chance: 1 / classes)", minimum=2)
    noise: float = _field(0.5, "standard deviation of the noise on the class inputs after the "
                          "first step")
    units: int = _field(32, "neurons of each cell", minimum=1)
    train_steps: int = _field(2000, "Adam steps for each cell (the same budget for all)",
                              minimum=1)
    batch_size: int = _field(32, "sequences per training step (fresh ones every step)",
                             minimum=1)
    lr: float = _field(0.003, "Adam learning rate")
    clip_norm: float = _field(1.0, "global norm the gradients are clipped to before each Adam "
                              "step (0: no clipping)")
    gate_bias: float = _field(3.0, "how far the gated cells start keeping their state: the "
                              "LSTM's forget bias and minus its input gate's bias, the GRU's "
                              "update gate bias (the cells' own: forget bias 1, the others 0)")
    seed: int = _field(42, "seed of the weights and of the training sequences (the evaluation "
                       "sequences: seed + 1)", minimum=0)
    eval_size: int = _field(1000, "held-out sequences for the accuracy (the norms: the first "
                            "256 of them)", minimum=1)
    out: str | None = _field(None, "folder for gradient_norms.csv, gradient_norms.png, "
                             "accuracy.csv and gradient_flow.json (required)")

    def check(self):
        for name, least in (("noise", 0.0), ("clip_norm", 0.0), ("gate_bias", -math.inf)):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or value < least):
                at_least = " >= 0" if least == 0.0 else ""
                raise ConfigError(name, f"expected a finite number{at_least}, got {value!r}")
