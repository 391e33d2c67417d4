"""The chapter's time series: the data, and an RNN that predicts the next value at every step.

The series is ``t sin(t) / 3 + 2 sin(5 t)`` for ``t`` in ``[0, 30]``, sampled every 0.1. A
training instance is ``n_steps + 1`` consecutive samples; the inputs are the first ``n_steps``
and the targets the same values one step later (sequence to sequence)::

    X, y = next_batch(rng, 50, 20)                 # [50, 20, 1] each; y[:, t] == X[:, t + 1]
    model = build_regressor(key=key)               # 100 relu units, reshape trick, Dense(1)
    predictions, state = model(X)                  # [50, 20, 1]
    loss = mse(model, X, y)                        # what Adam minimises

Generation (``rnnkit.generate``) and truncated BPTT over long sequences (``rnnkit.stateful``)
build on ``SequenceRegressor``.
"""

import numbers

import jax
import jax.numpy as jnp
import numpy as np

from rnnkit.cells import Dense
from rnnkit.model import build_cell
from rnnkit.pytree import pytree_dataclass, set_fields
from rnnkit.unroll import dynamic_rnn
from rnnkit.wrappers import DropoutWrapper, MultiRNNCell, OutputProjectionWrapper

T_MIN, T_MAX, RESOLUTION = 0.0, 30.0, 0.1
MAX_STEPS = round((T_MAX - T_MIN) / RESOLUTION)  # 300: an instance of n_steps + 1 samples fits
PROJECTIONS = ("wrapper", "reshape")


def time_series(t):
    """The book's series, ``t sin(t) / 3 + 2 sin(5 t)``, elementwise on a NumPy array."""
    t = np.asarray(t)
    return t * np.sin(t) / 3 + 2 * np.sin(t * 5)


def next_batch(rng, batch_size, n_steps):
    """``batch_size`` random instances of ``n_steps`` steps, as the book draws them.

    ``t0 = rng.random((B, 1)) * (T_MAX - T_MIN - n_steps * RESOLUTION)``; the samples are at
    ``t0 + k * RESOLUTION`` for ``k = 0 .. n_steps``.

    Args:
      rng: a ``np.random.Generator`` (anything with ``random(shape)``: a ``RandomState`` too).
      batch_size: ``B``; n_steps: ``T``, at most ``MAX_STEPS`` (300).
    Returns:
      ``(X, y)``, float32 ``[B, T, 1]`` each: inputs ``ys[:, :-1]`` and targets ``ys[:, 1:]``.
    """
    _check_count("batch_size", batch_size)
    _check_count("n_steps", n_steps, MAX_STEPS)
    t0 = rng.random((batch_size, 1)) * (T_MAX - T_MIN - n_steps * RESOLUTION)
    ts = t0 + np.arange(0.0, n_steps + 1) * RESOLUTION  # [B, T + 1]
    ys = time_series(ts)
    inputs, targets = ys[:, :-1], ys[:, 1:]
    return (inputs.reshape(-1, n_steps, 1).astype(np.float32),
            targets.reshape(-1, n_steps, 1).astype(np.float32))


def windows(seed, count, n_steps):
    """A fixed set of ``count`` instances (``next_batch`` from ``default_rng(seed)``): a held-out
    set, or, with a large ``n_steps``, long contiguous sequences for truncated BPTT."""
    return next_batch(np.random.default_rng(seed), count, n_steps)


def instance(t_start=12.2, n_steps=20):
    """The book's test instance, ``t_instance = linspace(t_start, t_start + RESOLUTION * (n_steps
    + 1), n_steps + 1)`` (its spacing is ``RESOLUTION * (n_steps + 1) / n_steps``, as in the book).

    Returns:
      ``(X_new, y_new)``, float32 ``[1, n_steps, 1]`` each.
    """
    _check_count("n_steps", n_steps)
    t = np.linspace(t_start, t_start + RESOLUTION * (n_steps + 1), n_steps + 1)
    ys = time_series(t).astype(np.float32)
    return ys[:-1].reshape(1, n_steps, 1), ys[1:].reshape(1, n_steps, 1)


@pytree_dataclass
class SequenceRegressor:
    """An RNN that outputs one prediction per time step: ``[B, T, I] -> [B, T, O]``.

    Two ways to project the cell's outputs ``h [B, T, H]`` to ``O`` values, as in the book:

    - ``SequenceRegressor(OutputProjectionWrapper(cell, O, key=k))``, projection "wrapper":
      the book's ``OutputProjectionWrapper``, ``y_t = h_t w + b`` at every step.
    - ``SequenceRegressor(cell, Dense(H, O, key=k))``, projection "reshape": the book's reshape
      trick, one ``Dense`` over all steps at once: ``(h.reshape(B*T, H) w + b).reshape(B, T, O)``.

    Both are computed the same way: the recurrent cell runs alone through ``dynamic_rnn``, then
    the projection is applied to all ``B * T`` outputs. For the wrapper this is the wrapper's own
    result, since its projection does not feed back into the state; and it lets the recurrence
    run on the explicit BPTT, which ``choose_loop`` does not give an ``OutputProjectionWrapper``
    unrolled whole (it is not a split cell, so "auto" would take autodiff).
    """

    cell: object  # the recurrent cell; an OutputProjectionWrapper for the "wrapper" projection
    dense: object  # Dense(H, O) for the "reshape" projection, else None

    def __init__(self, cell, dense=None):
        wrapped = isinstance(cell, OutputProjectionWrapper)
        if wrapped == (dense is not None):
            raise ValueError("dense: expected a Dense layer with a bare cell (the reshape trick) "
                             "or None with an OutputProjectionWrapper cell, got "
                             f"{type(dense).__name__} with {type(cell).__name__}")
        if dense is not None and dense.input_size != cell.output_size:
            raise ValueError(f"dense: expected input_size == the cell's output_size "
                             f"{cell.output_size}, got {dense.input_size}")
        set_fields(self, cell=cell, dense=dense)

    projection = property(lambda self: "reshape" if self.dense is not None else "wrapper")
    rnn = property(lambda self: self.cell if self.dense is not None else self.cell.cell)
    input_size = property(lambda self: self.rnn.input_size)
    output_size = property(lambda self: self.cell.output_size if self.dense is None
                           else self.dense.output_size)

    def zero_state(self, batch_size, dtype=jnp.float32):
        return self.rnn.zero_state(batch_size, dtype)

    def project(self, outputs):
        """The cell's outputs ``[..., H]`` -> predictions ``[..., O]``."""
        if self.dense is not None:
            return self.dense(outputs)
        return outputs @ self.cell.w + self.cell.b

    def __call__(self, inputs, *, key=None, bptt="auto", initial_state=None):
        """``inputs [B, T, I]`` -> ``(predictions [B, T, O], final_state)``.

        ``key`` switches dropout on (training); ``bptt`` and ``initial_state`` are
        ``dynamic_rnn``'s, for the recurrent cell alone (``self.rnn``).
        """
        outputs, state = dynamic_rnn(self.rnn, inputs, key=key, bptt=bptt,
                                     initial_state=initial_state)  # [B, T, H]
        if self.dense is None:
            return self.project(outputs), state
        batch, steps, units = outputs.shape
        flat = self.project(outputs.reshape(batch * steps, units))  # [B*T, O]: one matmul
        return flat.reshape(batch, steps, -1), state

    def step(self, inputs, state):
        """One time step without dropout: ``inputs [B, I]`` -> ``(prediction [B, O], state)``."""
        output, state = self.rnn(inputs, state)
        return self.project(output), state


def build_regressor(kind="basic", *, units=100, layers=1, activation="relu",
                    projection="reshape", keep_prob=1.0, key):
    """The book's time-series model: ``layers`` cells of ``units`` on one input, projected to 1.

    Args:
      kind: "basic", "lstm" or "gru"; activation: the basic cell's (the book's 1.8: "relu";
        its deep RNN: "tanh"); projection: "reshape" (``Dense``) or "wrapper"
        (``OutputProjectionWrapper``); see ``SequenceRegressor``.
      layers: above 1, a ``MultiRNNCell``; keep_prob: below 1, each layer is wrapped in
        ``DropoutWrapper(cell, input_keep_prob=keep_prob)`` (active only when a key is passed).
      key: PRNG key. The same key gives the same weights for both projections.
    """
    _check_count("units", units)
    _check_count("layers", layers)
    if projection not in PROJECTIONS:
        raise ValueError(f"projection: expected one of {', '.join(PROJECTIONS)}, "
                         f"got {projection!r}")
    if (isinstance(keep_prob, bool) or not isinstance(keep_prob, numbers.Real)
            or not 0.0 < keep_prob <= 1.0):
        raise ValueError(f"keep_prob: expected a number in (0, 1], got {keep_prob!r}")
    *cell_keys, out_key = jax.random.split(key, layers + 1)
    sizes = [1] + [units] * layers
    cells = [build_cell(kind, n_in, units, activation=activation, key=k)
             for n_in, k in zip(sizes, cell_keys)]
    if keep_prob < 1.0:
        cells = [DropoutWrapper(c, input_keep_prob=keep_prob) for c in cells]
    cell = cells[0] if layers == 1 else MultiRNNCell(cells)
    if projection == "wrapper":
        return SequenceRegressor(OutputProjectionWrapper(cell, 1, key=out_key))
    return SequenceRegressor(cell, Dense(units, 1, key=out_key))


def mean_squared_error(predictions, targets):
    """The book's loss, ``mean((predictions - targets)^2)`` over every element."""
    if jnp.shape(predictions) != jnp.shape(targets):  # no silent broadcasting
        raise ValueError(f"targets: expected the predictions' shape {jnp.shape(predictions)}, "
                         f"got {jnp.shape(targets)}")
    return jnp.mean(jnp.square(predictions - targets))


def mse(model, inputs, targets, *, key=None, bptt="auto"):
    """The model's MSE on ``inputs [B, T, I]`` against ``targets [B, T, O]`` (a scalar)."""
    predictions, _ = model(inputs, key=key, bptt=bptt)
    return mean_squared_error(predictions, targets)


def _check_count(name, value, most=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if most is not None and value > most:
        raise ValueError(f"{name}: the series has {most} steps of {RESOLUTION} from t={T_MIN:g} "
                         f"to {T_MAX:g}; expected at most {most}, got {value}")
