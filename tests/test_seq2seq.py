"""The encoder-decoder's building blocks: the vocabulary, the embedding, the masked sequence
loss, the encoder with sequence_length, teacher forcing against stepping, the explicit BPTT
against autodiff for the whole model, and a small model that learns from string pairs."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnkit as rk
from rnnkit import seq2seq
from rnnkit.embedding import Embedding
from rnnkit.loops import Loop, choose_loop
from rnnkit.seq2seq import EncoderDecoder, sequence_loss, shift_right, translate
from rnnkit.vocab import EOS, PAD, SOS, Vocabulary

WORDS = "zero one two three four five six seven eight nine".split()


# -- vocabulary ------------------------------------------------------------------------------

def test_vocabulary_encodes_with_padding_and_eos_and_decodes_back():
    vocab = Vocabulary("ab-")
    assert vocab.size == 6 and (PAD, SOS, EOS) == (0, 1, 2)
    ids, lengths = vocab.encode(["ab", "b-a-", "a"], eos=True)
    assert ids.tolist() == [[3, 4, EOS, PAD, PAD], [4, 5, 3, 5, EOS], [3, EOS, PAD, PAD, PAD]]
    assert lengths.tolist() == [3, 5, 2] and ids.dtype == lengths.dtype == np.int32
    assert vocab.decode(ids) == ["ab", "b-a-", "a"]
    ids, lengths = vocab.encode(["ab", "a"], max_length=4)
    assert ids.tolist() == [[3, 4, 0, 0], [3, 0, 0, 0]] and lengths.tolist() == [2, 1]


def test_decode_stops_at_the_first_eos():
    vocab = Vocabulary("ab")
    assert vocab.decode([[3, EOS, 4, 4], [SOS, 4, 3, EOS], [4, 4, 4, 4]]) == ["a", "ba", "bbbb"]
    assert vocab.decode(np.array([4, 3, PAD, 3])) == "ba"


def test_from_strings_sorts_the_characters():
    assert Vocabulary.from_strings(["cab", "bad"]).chars == "abcd"


@pytest.mark.parametrize("strings, kwargs, message", [
    (["ab", "aXb"], {}, r"strings\[1\] 'aXb': character 'X' at position 2 is not in the test "
                        r"alphabet \('ab'\)"),
    (["ab", ""], {}, r"strings\[1\]: an empty string"),
    (["abab"], dict(max_length=3), r"4 characters, more than the 3 allowed"),
    (["abb"], dict(max_length=3, eos=True), r"3 characters, more than the 2 allowed"),
    ("ab", {}, r"expected a list of strings, got one string"),
    ([3], {}, r"strings\[0\]: expected a string, got int"),
    ([], {}, r"expected at least one string"),
])
def test_encode_refuses_bad_strings_in_one_line(strings, kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        Vocabulary("ab", name="the test alphabet").encode(strings, **kwargs)
    assert "\n" not in str(error.value)


# -- layers and loss -------------------------------------------------------------------------

def test_embedding_looks_up_rows_and_its_gradient_adds_up_per_id():
    embedding = Embedding(5, 3, key=jax.random.key(0))
    ids = jnp.array([[1, 4, 1], [0, 1, 2]])
    np.testing.assert_array_equal(embedding(ids), embedding.table[np.asarray(ids)])
    weights = jax.random.normal(jax.random.key(1), (2, 3, 3))
    grad = jax.grad(lambda e: jnp.sum(e(ids) * weights))(embedding).table
    one_hot = jax.nn.one_hot(ids, 5)  # [2, 3, 5]
    np.testing.assert_allclose(grad, jnp.einsum("btv,bte->ve", one_hot, weights), rtol=1e-6)
    assert np.all(np.asarray(grad[3]) == 0)


def test_sequence_loss_is_the_mean_over_positions_up_to_eos():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 5)).astype(np.float32)
    targets = np.array([[3, 4, EOS, 0], [4, EOS, 0, 0], [3, 3, 4, EOS]], np.int32)
    lengths = np.array([3, 2, 4], np.int32)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    picked = [log_p[b, t, targets[b, t]] for b in range(3) for t in range(lengths[b])]
    expected = -np.mean(picked)
    np.testing.assert_allclose(sequence_loss(logits, targets, lengths), expected, rtol=1e-6)


def test_nothing_after_eos_reaches_the_loss_or_its_gradient():
    """NaN logits and any target ids after each EOS change neither the loss nor the finite
    gradient, which is zero there."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2, 5, 6)).astype(np.float32)
    targets = np.array([[3, EOS, 0, 0, 0], [4, 5, 3, EOS, 0]], np.int32)
    lengths = np.array([2, 4], np.int32)
    clean = sequence_loss(logits, targets, lengths)
    poisoned = logits.copy()
    poisoned[0, 2:] = np.nan
    poisoned[1, 4:] = np.inf
    other_targets = targets.copy()
    other_targets[0, 2:] = 5
    value, grad = jax.value_and_grad(sequence_loss)(poisoned, other_targets, lengths)
    np.testing.assert_allclose(value, clean, rtol=1e-6)
    assert np.all(np.isfinite(grad))
    assert np.all(np.asarray(grad)[0, 2:] == 0) and np.all(np.asarray(grad)[1, 4:] == 0)


def test_teacher_forcing_reads_sos_then_the_target_shifted_right():
    targets = jnp.array([[5, 6, EOS], [7, EOS, PAD]])
    assert shift_right(targets).tolist() == [[SOS, 5, 6], [SOS, 7, EOS]]


# -- the model -------------------------------------------------------------------------------

def small_model(cell="gru", seed=0, **kwargs):
    return EncoderDecoder(7, 6, 5, cell=cell, embedding_size=3, key=jax.random.key(seed),
                          **kwargs)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([4, 1, 3], np.int32)
    ids = rng.integers(3, 7, (3, 4)).astype(np.int32)
    ids[np.arange(4)[None] >= lengths[:, None]] = PAD
    targets = np.array([[3, 4, EOS, PAD], [5, 3, 4, EOS], [EOS, PAD, PAD, PAD]], np.int32)
    return ids, lengths, targets, np.array([3, 4, 1], np.int32)


@pytest.mark.parametrize("cell", ["basic", "gru", "lstm"])
def test_the_encoder_stops_at_each_length(cell):
    """Each row's final state is that of the row alone, unpadded, whatever the padding holds."""
    model = small_model(cell)
    ids, lengths, _, _ = batch()
    encode = jax.jit(lambda m, ids, lengths: m.encode(ids, lengths))
    states = encode(model, ids, lengths)
    garbage = np.where(ids == PAD, 5, ids)
    np.testing.assert_array_equal(jax.tree.leaves(encode(model, garbage, lengths)),
                                  jax.tree.leaves(states))
    for row, length in enumerate(lengths):
        alone = encode(model, ids[row:row + 1, :length], None)
        for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(states)):
            np.testing.assert_allclose(a[0], b[row], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", ["basic", "gru", "lstm"])
def test_teacher_forcing_equals_stepping_the_decoder(cell):
    model = small_model(cell, layers=2)
    ids, lengths, targets, _ = batch()
    logits = jax.jit(lambda m: m(ids, targets, sequence_length=lengths))(model)  # [B, L, V]
    state, token = model.encode(ids, lengths), jnp.full(3, SOS)
    step = jax.jit(lambda m, token, state: m.decoder.step(token, state))
    for t in range(targets.shape[1]):
        log_probs, state = step(model, token, state)
        np.testing.assert_allclose(log_probs, jax.nn.log_softmax(logits[:, t]), rtol=1e-5,
                                   atol=1e-5)
        token = targets[:, t]


@pytest.mark.parametrize("cell", ["basic", "gru", "lstm"])
def test_the_explicit_bptt_trains_the_model_as_autodiff_does(cell):
    """Both loops of the model (the encoder with lengths, the decoder from the encoder's
    state) run on the explicit BPTT, and the whole loss's gradients equal autodiff's."""
    ids, lengths, targets, target_lengths = batch()
    with jax.enable_x64(True):
        model = jax.tree.map(lambda w: w.astype(jnp.float64), small_model(cell, layers=2))
        grads = {mode: jax.jit(jax.grad(lambda m, mode=mode: seq2seq.loss_and_accuracy(
            m, ids, lengths, targets, target_lengths, bptt=mode)[0]))(model)
            for mode in ("explicit", "autodiff")}
        for a, b in zip(jax.tree.leaves(grads["explicit"]), jax.tree.leaves(grads["autodiff"])):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        assert any(np.abs(np.asarray(g)).max() > 1e-3 for g in jax.tree.leaves(grads["explicit"]))
    for cells, has_lengths in ((model.encoder, True), (model.decoder.cell, False)):
        assert choose_loop(cells, dtype=jnp.float32, has_lengths=has_lengths,
                           gpu=False) == (Loop.EXPLICIT, Loop.EXPLICIT)


def test_from_parts_checks_that_the_states_fit():
    model = small_model()
    other = small_model("lstm")
    with pytest.raises(ValueError, match="encoder: its state"):
        EncoderDecoder.from_parts(other.encoder, model.decoder, embedding=model.embedding)
    same = EncoderDecoder.from_parts(model.encoder, model.decoder, embedding=model.embedding)
    ids, lengths, targets, _ = batch()
    np.testing.assert_array_equal(same(ids, targets, sequence_length=lengths),
                                  model(ids, targets, sequence_length=lengths))


def test_a_small_model_learns_string_pairs():
    """Number words to digits ("four two" -> "42"), 100 pairs, 100 Adam steps: every
    pair translated exactly, greedy and beam search alike; strings outside the vocabulary are
    one-line errors."""
    pairs = [(" ".join(WORDS[int(d)] for d in str(n)), str(n)) for n in range(100)]
    source = Vocabulary.from_strings(a for a, _ in pairs)
    target = Vocabulary.from_strings(b for _, b in pairs)
    x, x_len = source.encode([a for a, _ in pairs])
    y, y_len = target.encode([b for _, b in pairs], eos=True)
    model = EncoderDecoder(source.size, target.size, 64, key=jax.random.key(0))
    optimizer = optax.adam(0.02)

    @jax.jit
    def step(model, opt_state):
        loss, grads = jax.value_and_grad(
            lambda m: seq2seq.loss_and_accuracy(m, x, x_len, y, y_len)[0])(model)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(model, updates), opt_state, loss

    opt_state = optimizer.init(model)
    for _ in range(100):
        model, opt_state, loss = step(model, opt_state)
    assert loss < 0.01
    inputs = [a for a, _ in pairs]
    assert translate(model, source, target, inputs, max_length=4) == [b for _, b in pairs]
    assert translate(model, source, target, inputs, max_length=4, beam=3) == [b for _, b in pairs]
    with pytest.raises(ValueError, match=r"character '!' at position 5"):
        translate(model, source, target, ["four!"])
    assert rk.EncoderDecoder is EncoderDecoder and rk.Vocabulary is Vocabulary
