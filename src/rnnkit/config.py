"""The training configuration: one frozen dataclass whose defaults are the book's MNIST experiment.

Every field carries its help text (and choices) in its metadata; ``rnnkit train`` builds one flag
per field from them (``batch_size`` -> ``--batch-size``), and ``config.json`` in a run folder is
``to_dict()``. ``validate()`` is the one place where values are checked, for the CLI and ``fit``.
"""

import dataclasses
import math
import operator

from rnnkit.activations import ACTIVATIONS
from rnnkit.parallel import batch_devices

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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters and data of a training run; the defaults train the book's RNN on MNIST."""

    dataset: str = _field("mnist", "data set to train on", choices=DATASETS)
    data_dir: str | None = _field(
        None, "folder with the four IDX files (.gz or raw); default: $RNNKIT_DATA/<dataset>, "
        "then ~/.cache/rnnkit/<dataset>, then, for MNIST without --download, the embedded "
        "5,000-digit subset (4,000 train / 500 validation / 500 test)")
    download: bool = _field(False, "download the data set if it is not found")
    cell: str = _field("basic", "memory cell: BasicRNNCell, LSTMCell or GRUCell", choices=CELLS)
    units: int = _field(150, "neurons per layer (the book's n_neurons)")
    layers: int = _field(1, "stacked layers (a MultiRNNCell when above 1)")
    activation: str = _field("tanh", "activation of the basic cell", choices=tuple(ACTIVATIONS))
    epochs: int = _field(10, "passes over the training set (the book's n_epochs)")
    batch_size: int = _field(150, "examples per training step")
    lr: float = _field(0.001, "Adam learning rate")
    seed: int = _field(42, "seed of the initial weights and of the batch shuffling")
    out: str | None = _field(None, "run folder for config, metrics, plots and checkpoints; "
                             "default: runs/<timestamp>")
    validation_size: int = _field(5000, "training images held out for validation")
    bptt: str = _field("auto", "how gradients flow back through time: the explicit BPTT "
                       "(explicit; 'fused' is an older name of it), jax.grad of the scan "
                       "(autodiff), cuDNN's LSTM on a GPU (cudnn), or cuDNN where it applies "
                       "and else the explicit BPTT for the built-in cells (auto)",
                       choices=BPTT_MODES + tuple(BPTT_ALIASES))
    devices: int = _field(0, "devices each batch is split across (data parallelism); 0: as many "
                          "of JAX's devices as divide the batch evenly with at least 16 "
                          "examples each (rnnkit train gives JAX one CPU device per core)")

    def __post_init__(self):
        # The alias "fused" is stored as "explicit", so a run saved with either name resumes.
        if isinstance(self.bptt, str):
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
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                raise ConfigError(f.name, f"expected one of {', '.join(choices)}, got {value!r}")
        for name in ("units", "layers", "epochs", "batch_size"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_int("validation_size", self.validation_size, minimum=1)
        _check_int("devices", self.devices, minimum=0)
        if (isinstance(self.lr, bool) or not isinstance(self.lr, (int, float))
                or not math.isfinite(self.lr) or self.lr <= 0):
            raise ConfigError("lr", f"expected a positive finite number, got {self.lr!r}")
        if self.cell != "basic" and self.activation != "tanh":
            raise ConfigError("activation", f"only the basic cell takes an activation; "
                              f"{self.cell} uses its own gates (got {self.activation!r})")
        if self.bptt == "cudnn" and self.cell != "lstm":
            raise ConfigError("bptt", f"'cudnn' trains LSTM cells (on a GPU with cuDNN); got "
                              f"cell {self.cell!r} (use auto)")
        for name in ("data_dir", "out"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ConfigError(name, f"expected a path or None, got {getattr(self, name)!r}")
        if num_train_examples is not None and self.batch_size > num_train_examples:
            raise ConfigError("batch_size", f"expected at most the {num_train_examples} training "
                              f"examples, got {self.batch_size}; lower it")
        return self

    def with_devices(self, available):
        """The config with ``devices`` resolved against the ``available`` devices (a list).

        Raises:
          ConfigError: more devices asked for than available, or a count that does not divide
            ``batch_size``.
        """
        if self.devices == 0:
            return self.replace(devices=len(batch_devices(self.batch_size, available)))
        if self.devices > len(available):
            hint = (" (rnnkit train gives JAX one CPU device per core; from Python, call "
                    "rnnkit.parallel.use_cpu_cores() before any JAX computation)"
                    if available[0].platform == "cpu" else "")
            raise ConfigError("devices", f"expected at most the {len(available)} "
                              f"{available[0].platform} devices JAX sees, got "
                              f"{self.devices}{hint}")
        if self.batch_size % self.devices:
            raise ConfigError("devices", f"expected a count that divides batch_size "
                              f"{self.batch_size} evenly, got {self.devices}")
        return self


def _check_int(name, value, *, minimum):
    try:
        ok = not isinstance(value, bool) and operator.index(value) >= minimum
    except TypeError:
        ok = False
    if not ok:
        raise ConfigError(name, f"expected an integer >= {minimum}, got {value!r}")
