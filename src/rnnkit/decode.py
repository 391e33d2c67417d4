"""Decoding: a decoder writes a sequence token by token, reading its own previous output, until
it emits EOS: greedily, or by beam search. Both are jitted ``lax.while_loop``s of at most
``max_length`` steps that stop as soon as every sequence of the batch has emitted EOS.

Greedy decoding, as pseudocode (beam search keeps the ``width`` best partial sequences instead
of one, and returns the best of them)::

    token = SOS
    for t in range(max_length):
        log_probs, state = decoder.step(token, state)     # [B, V]
        token = argmax(log_probs)  (PAD once finished)    # never PAD or SOS otherwise
        score += log_probs[token]  (nothing once finished)
        finished |= token == EOS

Every result has the same shape: ``Decoded(ids [B, max_length], lengths [B], scores [B])``;
``ids`` hold PAD after each EOS, ``lengths`` count the tokens up to and with EOS (``max_length``
for a sequence that did not end), ``scores`` are each sequence's log-probability (the sum of its
tokens' log-probabilities, EOS included), whatever ranked it.
"""

import functools
import math
import numbers
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from rnnkit.vocab import EOS, PAD, SOS


class StepDecoder(Protocol):
    """What decoding needs of a decoder (``rnnkit.seq2seq.Decoder`` is one)."""

    def step(self, tokens: jax.Array, state: Any) -> tuple[jax.Array, Any]:
        """``tokens [B]`` int -> ``(log_probs [B, V], new_state)``; ``state`` a pytree of
        ``[B, ...]`` arrays."""


class Decoded(NamedTuple):
    ids: jax.Array  # [B, max_length] int32, PAD after EOS
    lengths: jax.Array  # [B] int32, EOS counted
    scores: jax.Array  # [B] float, the sequence's log-probability


def check_options(width, max_length, length_penalty=0.0):
    """Raises a ValueError naming the first of ``width``, ``max_length``, ``length_penalty``
    that is not a positive int (or a finite number >= 0 for the penalty)."""
    for name, value in (("width", width), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if (isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real)
            or not math.isfinite(length_penalty) or length_penalty < 0):
        raise ValueError(f"length_penalty: expected a finite number >= 0, got "
                         f"{length_penalty!r}")


def greedy_decode(decoder: StepDecoder, state, *, max_length):
    """The most likely token at each step, from ``state`` (the encoder's final state, ``[B,
    ...]``), until EOS or ``max_length`` tokens. Returns ``Decoded``."""
    check_options(1, max_length)
    return _greedy(decoder, state, max_length=int(max_length))


def beam_search(decoder: StepDecoder, state, *, width, max_length, length_penalty=0.0):
    """The best of ``width`` hypotheses kept at each step (TF's ``BeamSearchDecoder``).

    At each step every unfinished hypothesis is extended by every token, a finished one only
    by PAD (its score unchanged), and the ``width`` best candidates are kept, ranked by
    ``log_probability / length ** length_penalty`` (0: the log-probability itself; 1: the mean
    log-probability per token, which favours longer outputs). ``width=1`` is greedy decoding.
    Returns ``Decoded`` of the best hypothesis of each row.
    """
    check_options(width, max_length, length_penalty)
    return _beam(decoder, state, width=int(width), max_length=int(max_length),
                 length_penalty=float(length_penalty))


def _emittable(log_probs):
    """``log_probs [..., V]`` with PAD and SOS impossible: a decoder emits neither."""
    ids = jnp.arange(log_probs.shape[-1])
    return jnp.where((ids == PAD) | (ids == SOS), -jnp.inf, log_probs)


def _score_dtype(decoder, tokens, state):
    """The dtype of the decoder's log-probabilities (scores are summed in it)."""
    return jax.eval_shape(decoder.step, tokens, state)[0].dtype


def _batch_size(state):
    return jax.tree.leaves(state)[0].shape[0]


@functools.partial(jax.jit, static_argnames=("max_length",))
def _greedy(decoder, state, *, max_length):
    batch = _batch_size(state)

    def body(carry):
        t, tokens, state, finished, ids, lengths, scores = carry
        log_probs, state = decoder.step(tokens, state)
        log_probs = _emittable(log_probs)  # [B, V]
        token = jnp.where(finished, PAD, jnp.argmax(log_probs, axis=-1).astype(jnp.int32))
        picked = jnp.take_along_axis(log_probs, token[:, None], axis=1)[:, 0]
        scores = scores + jnp.where(finished, 0.0, picked)
        lengths = lengths + (~finished).astype(jnp.int32)
        ids = ids.at[:, t].set(token)
        return t + 1, token, state, finished | (token == EOS), ids, lengths, scores

    start = jnp.full((batch,), SOS, jnp.int32)
    carry = (0, start, state, jnp.zeros(batch, bool),
             jnp.full((batch, max_length), PAD, jnp.int32), jnp.zeros(batch, jnp.int32),
             jnp.zeros(batch, _score_dtype(decoder, start, state)))
    _, _, _, _, ids, lengths, scores = jax.lax.while_loop(_running(max_length), body, carry)
    return Decoded(ids, lengths, scores)


def _running(max_length):
    def cond(carry):
        t, finished = carry[0], carry[3]
        return (t < max_length) & ~jnp.all(finished)
    return cond


@functools.partial(jax.jit, static_argnames=("width", "max_length", "length_penalty"))
def _beam(decoder, state, *, width, max_length, length_penalty):
    batch = _batch_size(state)
    rows = jnp.arange(batch)[:, None] * width  # [B, 1]: each row's first hypothesis

    def body(carry):
        t, tokens, state, finished, ids, lengths, scores = carry
        log_probs, state = decoder.step(tokens, state)  # [B*K, V]
        vocab = log_probs.shape[-1]
        log_probs = _emittable(log_probs).reshape(batch, width, vocab)
        stay = jnp.where(jnp.arange(vocab) == PAD, 0.0, -jnp.inf)  # a finished one: PAD only
        log_probs = jnp.where(finished[..., None], stay, log_probs)
        total = (scores[..., None] + log_probs).reshape(batch, width * vocab)
        grown = lengths + (~finished).astype(jnp.int32)  # [B, K]: each parent's new length
        rank = total / _normaliser(jnp.repeat(grown, vocab, axis=1), length_penalty)
        _, best = jax.lax.top_k(rank, width)  # [B, K], best first
        parent, token = best // vocab, (best % vocab).astype(jnp.int32)
        ids = jnp.take_along_axis(ids, parent[..., None], axis=1).at[:, :, t].set(token)
        scores = jnp.take_along_axis(total, best, axis=1)
        # an impossible candidate (score -inf, taken when fewer than K are possible) counts
        # as finished, so that it never holds up the early exit
        finished = (jnp.take_along_axis(finished, parent, axis=1) | (token == EOS)
                    | (scores == -jnp.inf))
        state = jax.tree.map(lambda s: s[(rows + parent).reshape(-1)], state)
        return (t + 1, token.reshape(-1), state, finished, ids,
                jnp.take_along_axis(grown, parent, axis=1), scores)

    state = jax.tree.map(lambda s: jnp.repeat(s, width, axis=0), state)  # [B*K, ...]
    start = jnp.full((batch * width,), SOS, jnp.int32)
    dtype = _score_dtype(decoder, start, state)
    # Only hypothesis 0 is alive at first; the others are finished with score -inf, so they
    # lose to any real candidate and never hold up the early exit.
    alive = jnp.arange(width) == 0
    carry = (0, start, state, jnp.broadcast_to(~alive, (batch, width)),
             jnp.full((batch, width, max_length), PAD, jnp.int32),
             jnp.zeros((batch, width), jnp.int32),
             jnp.broadcast_to(jnp.where(alive, 0.0, -jnp.inf).astype(dtype), (batch, width)))
    _, _, _, _, ids, lengths, scores = jax.lax.while_loop(_running(max_length), body, carry)
    return Decoded(ids[:, 0], lengths[:, 0], scores[:, 0])  # top_k keeps the best first


def _normaliser(lengths, length_penalty):
    if length_penalty == 0.0:
        return 1.0
    return jnp.maximum(lengths, 1).astype(jnp.float32) ** length_penalty
