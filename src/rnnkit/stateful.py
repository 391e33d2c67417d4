"""Truncated BPTT over long sequences: chunks of ``T`` steps, the state carried across chunks.

A batch of long sequences ``[B, L, I]`` is cut into ``L // T`` consecutive chunks. Each chunk
starts from the state the previous one ended with, its gradient stopped, so backpropagation
runs back at most ``T`` steps while the forward pass sees the whole history::

    state = initial_state or zeros        # a new batch of long sequences starts from zeros
    for k in range(L // T):
        state = zeros where reset[:, k], else stop_gradient(state)
        predictions[k], state = model(x[:, k*T:(k+1)*T], initial_state=state)
        losses[k] = loss(predictions[k], y[:, k*T:(k+1)*T])

A model here is called as ``model(inputs [B, T, I], *, key, bptt, initial_state) ->
(outputs [B, T, O], final_state)`` and has ``zero_state(batch_size, dtype)``, as
``rnnkit.timeseries.SequenceRegressor``. The last ``L % T`` steps are left out.
"""

import numbers

import jax
import jax.numpy as jnp
import optax

from rnnkit.masks import select
from rnnkit.timeseries import mean_squared_error


def chunks(x, chunk):
    """``x [B, L, ...]`` -> ``[L // chunk, B, chunk, ...]``, ``out[k, b, t] == x[b, k*chunk + t]``.

    The last ``L % chunk`` steps are left out.
    """
    if x.ndim < 2:
        raise ValueError(f"x: expected [B, L, ...], got shape {x.shape}")
    length = x.shape[1]
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1:
        raise ValueError(f"chunk: expected a positive int, got {chunk!r}")
    if chunk > length:
        raise ValueError(f"chunk: expected at most the sequence length L={length}, got "
                         f"T={chunk}; pass a shorter chunk or longer sequences")
    count = length // chunk
    cut = x[:, : count * chunk].reshape((x.shape[0], count, chunk) + x.shape[2:])
    return cut.swapaxes(0, 1)


def chunked_rnn(model, inputs, chunk, *, initial_state=None, reset=None, key=None, bptt="auto"):
    """Run ``model`` over ``inputs [B, L, I]`` chunk by chunk, carrying the state.

    The forward values are those of one pass over the first ``(L // chunk) * chunk`` steps (with
    no ``reset``); gradients stop at every chunk boundary.

    Args:
      initial_state: the state before the first chunk (zeros when None); its gradient is stopped.
      reset: optional bool ``[B, L // chunk]``: True where sequence ``b`` starts anew at chunk
        ``k`` (its state is zeroed before the chunk).
      key: PRNG key for dropout (chunk ``k`` gets ``fold_in(key, k)``); bptt: ``dynamic_rnn``'s.
    Returns:
      ``(outputs [B, (L // chunk) * chunk, O], final_state)``.
    """
    xs, state, reset = _prepare(model, inputs, chunk, initial_state, reset)

    def body(state, part):
        k, x_k, reset_k = part
        out, state = model(x_k, key=_fold(key, k), bptt=bptt,
                           initial_state=_start_chunk(state, reset_k))
        return state, out

    state, outs = jax.lax.scan(body, state, (jnp.arange(xs.shape[0]), xs, reset))
    return _unchunk(outs), state  # outs: [L // T, B, T, O]


def chunk_losses(model, inputs, targets, chunk, *, loss=mean_squared_error, initial_state=None,
                 reset=None, key=None, bptt="auto"):
    """Each chunk's loss for one model: ``(losses [L // chunk], final_state)``.

    ``jax.grad`` of ``losses.sum()`` is the truncated-BPTT gradient of the whole batch with the
    weights held fixed. ``targets [B, L, O]``; ``loss(predictions, targets)`` is a scalar; the
    other arguments are ``chunked_rnn``'s.
    """
    xs, state, reset = _prepare(model, inputs, chunk, initial_state, reset)
    ys = chunks(jnp.asarray(targets), chunk)

    def body(state, part):
        k, x_k, y_k, reset_k = part
        value, state = _chunk_loss(model, x_k, y_k, _start_chunk(state, reset_k), _fold(key, k),
                                   loss, bptt)
        return state, value

    state, losses = jax.lax.scan(body, state, (jnp.arange(xs.shape[0]), xs, ys, reset))
    return losses, state


def make_truncated_bptt_step(optimizer, chunk, *, loss=mean_squared_error, bptt="auto"):
    """A jitted training step on a batch of long sequences, one optimizer update per chunk.

    ``step(model, opt_state, inputs [B, L, I], targets [B, L, O], *, key=None,
    initial_state=None, reset=None) -> (model, opt_state, losses [L // chunk], final_state)``
    runs one ``lax.scan`` over the chunks with ``(model, opt_state, state)`` as its carry: chunk
    ``k``'s gradient (truncated at its start) updates the model that runs chunk ``k + 1``. Pass
    ``final_state`` as the next call's ``initial_state`` to continue the same sequences.

    Args:
      optimizer: an ``optax.GradientTransformation``; chunk: ``T``; loss, bptt: as in
        ``chunk_losses``.
    """

    def step(model, opt_state, inputs, targets, *, key=None, initial_state=None, reset=None):
        xs, state, reset = _prepare(model, inputs, chunk, initial_state, reset)
        ys = chunks(jnp.asarray(targets), chunk)
        grad_fn = jax.value_and_grad(_chunk_loss, has_aux=True)

        def body(carry, part):
            model, opt_state, state = carry
            k, x_k, y_k, reset_k = part
            (value, state), grads = grad_fn(model, x_k, y_k, _start_chunk(state, reset_k),
                                            _fold(key, k), loss, bptt)
            updates, opt_state = optimizer.update(grads, opt_state, model)
            return (optax.apply_updates(model, updates), opt_state, state), value

        (model, opt_state, state), losses = jax.lax.scan(
            body, (model, opt_state, state), (jnp.arange(xs.shape[0]), xs, ys, reset))
        return model, opt_state, losses, state

    return jax.jit(step)


def _chunk_loss(model, x_k, y_k, state, key, loss, bptt):
    predictions, state = model(x_k, key=key, bptt=bptt, initial_state=state)
    return loss(predictions, y_k), state


def _prepare(model, inputs, chunk, initial_state, reset):
    """Time-major chunks ``[K, B, T, I]``, the first state, and ``reset`` as ``[K, B]`` or None."""
    inputs = jnp.asarray(inputs)
    if inputs.ndim != 3:
        raise ValueError(f"inputs: expected [B, L, I], got shape {inputs.shape}")
    xs = chunks(inputs, chunk)
    batch, count = inputs.shape[0], xs.shape[0]
    if reset is not None:
        reset = jnp.asarray(reset)
        if reset.shape != (batch, count) or reset.dtype != jnp.bool_:
            raise ValueError(f"reset: expected bool [B, L // chunk] = [{batch}, {count}], got "
                             f"{reset.dtype} {reset.shape}")
        reset = reset.T  # [K, B]
    if initial_state is None:
        initial_state = model.zero_state(batch, inputs.dtype)
    return xs, initial_state, reset


def _start_chunk(state, reset_k):
    """The state a chunk starts from: the truncation (no gradient into earlier chunks), then
    zeros for the sequences that start anew."""
    state = jax.lax.stop_gradient(state)
    if reset_k is None:
        return state
    return select(~reset_k, state, jax.tree.map(jnp.zeros_like, state))


def _fold(key, k):
    return None if key is None else jax.random.fold_in(key, k)


def _unchunk(outs):
    """``[K, B, T, ...]`` -> ``[B, K*T, ...]``."""
    count, batch, steps = outs.shape[:3]
    return outs.swapaxes(0, 1).reshape((batch, count * steps) + outs.shape[3:])
