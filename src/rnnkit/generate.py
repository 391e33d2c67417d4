"""Creative RNN: extend a seed sequence by feeding each prediction back in as the next input.

The book's loop re-runs the model on the last ``n_steps`` values for every new value::

    sequence = [0.] * n_steps
    for iteration in range(300):
        X_batch = np.array(sequence[-n_steps:]).reshape(1, n_steps, 1)
        y_pred = sess.run(outputs, feed_dict={X: X_batch})
        sequence.append(y_pred[0, -1, 0])

``generate(model, seed, steps)`` instead carries the RNN state: it runs the model over the seed
once, then takes one cell step per new value, in one jitted ``lax.scan`` (O(1) per value). Its
values are those of re-running the model from a zero state on the whole history each time. The
book's 20-value window is a truncation of that history: ``window=20`` reproduces it exactly (a
scan that re-runs the model on a sliding window, O(window) per value).

Which to use depends on how the model was trained. A model trained on ``T``-step windows from a
zero state (the book's ``next_batch``) has only learnt the states it reaches within ``T`` steps;
carried much further, its state leaves that range, and a relu cell's can grow without bound. For
such a model take ``window=T``, as the book does. Carrying the state suits a model trained with
its state carried across chunks (``rnnkit.stateful``).
"""

import functools
import numbers

import jax
import jax.numpy as jnp


def generate(model, seed, steps, *, window=None):
    """Extend ``seed`` by ``steps`` values, each the model's prediction of the next one.

    Args:
      model: a one-input, one-output ``rnnkit.timeseries.SequenceRegressor`` (no dropout: no key).
      seed: ``[T0]``, ``[B, T0]`` or ``[B, T0, 1]``, ``T0 >= 1``.
      steps: how many values to append (``>= 0``).
      window: None: carry the state over the whole history (for a model trained statefully).
        An int ``<= T0``: as the book, each new value is the model's last prediction on the last
        ``window`` values, from a zero state (for a model trained on windows of that length).
    Returns:
      ``[T0 + steps]`` for a ``[T0]`` seed, else ``[B, T0 + steps]``: the seed, then the values.
    """
    if model.input_size != 1 or model.output_size != 1:
        raise ValueError(f"model: generation feeds each prediction back as the next input, so "
                         f"it needs one input and one output, got input_size "
                         f"{model.input_size} and output_size {model.output_size}")
    values = jnp.asarray(seed)
    if values.ndim not in (1, 2, 3) or (values.ndim == 3 and values.shape[-1] != 1):
        raise ValueError(f"seed: expected [T0], [B, T0] or [B, T0, 1], got shape {values.shape}")
    if not jnp.issubdtype(values.dtype, jnp.floating):
        values = values.astype(jnp.float32)
    shape = (1, values.shape[0]) if values.ndim == 1 else values.shape[:2]
    batched = values.reshape(shape + (1,))  # [B, T0, 1]
    seed_steps = batched.shape[1]
    if seed_steps == 0:
        raise ValueError(f"seed: expected at least one value, got shape {values.shape}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps: expected an int >= 0, got {steps!r}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, numbers.Integral)
                               or not 1 <= window <= seed_steps):
        raise ValueError(f"window: expected None or an int in [1, {seed_steps}] (the seed's "
                         f"length T0; pass a longer seed for a longer window), got {window!r}")
    result = _generate(model, batched, int(steps), None if window is None else int(window))
    return result[0] if values.ndim == 1 else result


@functools.partial(jax.jit, static_argnums=(2, 3))
def _generate(model, seed, steps, window):
    """``seed [B, T0, 1]`` -> ``[B, T0 + steps]``."""
    if steps == 0:
        return seed[..., 0]
    if window is None:
        new = _carry_state(model, seed, steps)
    else:
        new = _rerun_window(model, seed, steps, window)
    return jnp.concatenate([seed[..., 0], new[..., 0].T], axis=1)  # new: [steps, B, 1]


def _carry_state(model, seed, steps):
    predictions, state = model(seed)  # [B, T0, 1]: the seed once, through dynamic_rnn
    first = predictions[:, -1]  # [B, 1]

    def body(carry, _):
        value, state = carry
        value, state = model.step(value, state)  # the last value in, the next one out
        return (value, state), value

    _, rest = jax.lax.scan(body, (first, state), None, length=steps - 1)  # [steps - 1, B, 1]
    return jnp.concatenate([first[None], rest])


def _rerun_window(model, seed, steps, window):
    def body(last, _):  # last: [B, window, 1], the most recent values
        value = model(last)[0][:, -1]  # [B, 1]
        return jnp.concatenate([last[:, 1:], value[:, None]], axis=1), value

    _, new = jax.lax.scan(body, seed[:, -window:], None, length=steps)
    return new
