"""Greedy decoding and beam search: beam width 1 is greedy; beam search as wide as the
vocabulary finds what an exhaustive search over every sequence up to length 3 finds; nothing
after EOS; a batch decodes as its rows one by one; early stop; length normalisation; one
compilation for repeated calls; bad options."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnkit import decode
from rnnkit.pytree import pytree_dataclass, set_fields
from rnnkit.seq2seq import EncoderDecoder, shift_right, translate_ids
from rnnkit.vocab import EOS, PAD, SOS


def tiny_model(seed, *, target_size=5, cell="gru", sharpen=4.0):
    """A random encoder-decoder with a sharpened output layer (so that the best sequence is
    not simply the greedy one), source vocabulary of 6, target vocabulary ``target_size``."""
    model = EncoderDecoder(6, target_size, 8, cell=cell, embedding_size=4,
                           key=jax.random.key(seed))
    projection = model.decoder.projection
    return jax.tree.map(lambda w: w * sharpen if w is projection.w else w, model)


def source_batch(seed, batch=6, steps=5):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, steps + 1, batch).astype(np.int32)
    ids = rng.integers(3, 6, (batch, steps)).astype(np.int32)
    ids[np.arange(steps)[None, :] >= lengths[:, None]] = PAD
    return ids, lengths


@jax.jit
def _encode(model, ids, lengths):
    return model.encode(ids, lengths)


def encoded(model, seed, batch=6):
    return _encode(model, *source_batch(seed, batch))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_width_one_is_greedy(cell, length_penalty):
    for seed in range(2):
        model = tiny_model(seed, target_size=7, cell=cell)
        state = encoded(model, seed, batch=8)
        greedy = decode.greedy_decode(model.decoder, state, max_length=9)
        beam = decode.beam_search(model.decoder, state, width=1, max_length=9,
                                  length_penalty=length_penalty)
        np.testing.assert_array_equal(beam.ids, greedy.ids)
        np.testing.assert_array_equal(beam.lengths, greedy.lengths)
        np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-6)


@jax.jit
def _teacher_forced_log_probs(decoder, targets, state):
    return jax.nn.log_softmax(decoder(shift_right(targets), state))


def log_probs_of(decoder, state, sequences):
    """The log-probability of each of ``sequences`` (tuples of ids, each ending at its EOS or
    not) from one row's ``state``, the decoder reading the true previous tokens (teacher
    forcing equals stepping the decoder: tests/test_seq2seq.py)."""
    width = max(map(len, sequences))
    targets = np.array([s + (PAD,) * (width - len(s)) for s in sequences], np.int32)
    states = jax.tree.map(lambda s: jnp.repeat(s, len(sequences), axis=0), state)
    log_probs = _teacher_forced_log_probs(decoder, targets, states)
    picked = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    lengths = np.array([len(s) for s in sequences])
    return np.where(np.arange(width)[None] < lengths[:, None], picked, 0.0).sum(axis=1)


def all_sequences(tokens, max_length):
    """Every distinct output of up to ``max_length`` tokens: those that end with EOS, and those
    of ``max_length`` tokens without it."""
    found = set()
    for sequence in itertools.product(tokens, repeat=max_length):
        end = sequence.index(EOS) + 1 if EOS in sequence else max_length
        found.add(sequence[:end])
    return sorted(found)


def test_beam_as_wide_as_the_vocabulary_finds_the_exhaustive_best():
    """Target vocabulary PAD, SOS, EOS, a, b (5): after two steps at most 4 unfinished
    hypotheses exist, so a beam of 5 keeps the best sequence's prefix (a finished hypothesis
    ranked above it would itself beat the best): beam search must find the exhaustive best."""
    greedy_missed = 0
    for seed in range(4):
        model = tiny_model(seed)
        state = encoded(model, seed, batch=4)
        beam = decode.beam_search(model.decoder, state, width=5, max_length=3)
        greedy = decode.greedy_decode(model.decoder, state, max_length=3)
        sequences = all_sequences((EOS, 3, 4), 3)
        for row in range(4):
            row_state = jax.tree.map(lambda s, r=row: s[r:r + 1], state)
            scored = dict(zip(sequences, log_probs_of(model.decoder, row_state, sequences)))
            best = max(scored, key=scored.get)
            found = tuple(int(t) for t in beam.ids[row, :int(beam.lengths[row])])
            assert found == best, (seed, row, found, best)
            np.testing.assert_allclose(beam.scores[row], scored[best], rtol=1e-5)
            assert np.all(np.asarray(beam.ids[row, len(best):]) == PAD)
            greedy_found = tuple(int(t) for t in greedy.ids[row, :int(greedy.lengths[row])])
            np.testing.assert_allclose(greedy.scores[row], scored[greedy_found], rtol=1e-5)
            greedy_missed += greedy_found != best
    assert greedy_missed > 0  # the test can tell beam search from greedy decoding


@pytest.mark.parametrize("width", [1, 3])
def test_nothing_is_emitted_after_eos(width):
    seen_eos = seen_unfinished = False
    for seed in range(4):
        model = tiny_model(seed, target_size=6, sharpen=1.0)
        if seed % 2:  # EOS unlikely: some rows do not end within max_length
            projection = model.decoder.projection
            model = jax.tree.map(lambda w: w.at[EOS].add(-3.0) if w is projection.b else w,
                                 model)
        state = encoded(model, seed, batch=16)
        out = decode.beam_search(model.decoder, state, width=width, max_length=6)
        ids, lengths = np.asarray(out.ids), np.asarray(out.lengths)
        for row, length in zip(ids, lengths):
            eos = np.flatnonzero(row == EOS)
            if len(eos):
                assert length == eos[0] + 1 and len(eos) == 1
                seen_eos = True
            else:
                assert length == 6
                seen_unfinished = True
            assert np.all(row[length:] == PAD)
            assert not np.any(np.isin(row[:length], (PAD, SOS)))
    assert seen_eos and seen_unfinished


@pytest.mark.parametrize("width", [1, 4])
def test_a_batch_decodes_as_its_rows_one_by_one(width):
    model = tiny_model(7, target_size=7, sharpen=2.0)
    ids, lengths = source_batch(3, batch=5)
    batch = translate_ids(model, ids, lengths, max_length=8, beam=width)
    for row in range(5):
        alone = translate_ids(model, ids[row:row + 1], lengths[row:row + 1], max_length=8,
                              beam=width)
        np.testing.assert_array_equal(alone.ids[0], batch.ids[row])
        assert int(alone.lengths[0]) == int(batch.lengths[row])
        np.testing.assert_allclose(alone.scores[0], batch.scores[row], rtol=1e-5)


@pytree_dataclass
class Table:
    """A decoder whose log-probabilities depend only on the step and the previous token:
    ``log_probs = table[t, previous]``; its state is the step. Each step is counted."""

    table: jax.Array  # [T, V, V]

    def __init__(self, probabilities):
        with np.errstate(divide="ignore"):
            set_fields(self, table=jnp.log(jnp.asarray(probabilities, jnp.float32)))

    def step(self, tokens, state):
        jax.debug.callback(STEPS.append, state[0])
        return self.table[state, tokens], state + 1


STEPS = []


def table(rows):
    """``[T, V, V]`` probabilities over PAD, SOS, EOS, a, b: ``rows[t][previous]`` is the
    distribution after ``previous`` ("<sos>", "a", "b") at step ``t``; others uniform."""
    names = {"<sos>": SOS, "a": 3, "b": 4}
    out = np.full((len(rows), 5, 5), 0.2)
    for t, row in enumerate(rows):
        for previous, probabilities in row.items():
            out[t, names[previous]] = [0.0, 0.0, *probabilities]
    return out


def test_length_normalisation_prefers_the_better_mean():
    """EOS at once: log 0.5 = -0.69; "a" then EOS: log 0.45 + log 0.9 = -0.90, per token
    -0.45. Raw scores pick the empty output, normalised scores the one-letter one."""
    probabilities = table([{"<sos>": (0.5, 0.45, 0.05)}, {"a": (0.9, 0.05, 0.05)},
                           {"a": (1.0, 0.0, 0.0)}])
    decoder, state = Table(probabilities), jnp.zeros(1, jnp.int32)
    raw = decode.beam_search(decoder, state, width=3, max_length=3)
    normalised = decode.beam_search(decoder, state, width=3, max_length=3, length_penalty=1.0)
    assert raw.ids[0].tolist() == [EOS, PAD, PAD]
    np.testing.assert_allclose(raw.scores[0], np.log(0.5), rtol=1e-6)
    assert normalised.ids[0].tolist() == [3, EOS, PAD]
    np.testing.assert_allclose(normalised.scores[0], np.log(0.45 * 0.9), rtol=1e-6)


@pytest.mark.parametrize("width", [1, 3])
def test_decoding_stops_once_every_row_has_emitted_eos(width):
    """Every row emits "a" then EOS: two steps run, not the 50 allowed."""
    probabilities = table([{"<sos>": (0.0, 1.0, 0.0)}, {"a": (1.0, 0.0, 0.0)}] + [{}] * 48)
    STEPS.clear()
    out = decode.beam_search(Table(probabilities), jnp.zeros(4, jnp.int32), width=width,
                             max_length=50)
    jax.effects_barrier()
    assert out.ids[:, :3].tolist() == [[3, EOS, PAD]] * 4
    assert out.lengths.tolist() == [2] * 4 and out.scores.tolist() == [0.0] * 4
    assert len(STEPS) == 2


def test_a_second_call_does_not_recompile():
    from rnnkit.seq2seq import _translate_ids

    model = tiny_model(1)
    ids, lengths = source_batch(1)
    for beam in (1, 3):
        translate_ids(model, ids, lengths, max_length=6, beam=beam)
    before = _translate_ids._cache_size()
    other = jax.tree.map(lambda w: w + 1, model)  # new weights, same shapes
    ids, lengths = source_batch(2)
    for beam in (1, 3):
        translate_ids(other, ids, lengths, max_length=6, beam=beam)
    assert _translate_ids._cache_size() == before


@pytest.mark.parametrize("options, message", [
    (dict(width=0, max_length=5), "width: expected a positive int, got 0"),
    (dict(width=2, max_length=0), "max_length: expected a positive int, got 0"),
    (dict(width=2.0, max_length=5), "width: expected a positive int, got 2.0"),
    (dict(width=2, max_length=5, length_penalty=-1), "length_penalty: expected a finite"),
    (dict(width=2, max_length=5, length_penalty=float("nan")), "length_penalty"),
])
def test_bad_options_are_one_line_errors(options, message):
    model = tiny_model(0)
    with pytest.raises(ValueError, match=message):
        decode.beam_search(model.decoder, encoded(model, 0), **options)
