"""The encoder-decoder: an encoder RNN reads the input, a decoder RNN writes the output.

What it computes, in training (teacher forcing: the decoder reads the true previous token)::

    _, state = dynamic_rnn(encoder, embed(inputs), sequence_length=lengths)   # final state
    outputs, _ = dynamic_rnn(decoder.cell, embed_out([SOS] + targets[:-1]), initial_state=state)
    logits = decoder.projection(outputs)                                      # [B, L, V]
    loss = cross-entropy at each position up to each target's EOS, nothing after it

and at inference, where the decoder reads its own previous output, one step at a time until it
emits EOS (``rnnkit.decode``: greedy or beam search). With ``source_tokens=False`` the encoder
reads feature vectors ``[B, T, I]`` instead of token ids: sequence-to-vector-to-sequence, as an
image-captioning model (the ``spell`` task reads an MNIST digit's rows and spells its class).

Both training loops are whole sequences known in advance, so both run on the explicit BPTT
where the cells allow it (``docs/seq2seq.md``); the projection is applied after the loop.
"""

import functools

import jax
import jax.numpy as jnp
import optax

from rnnkit import decode
from rnnkit.cells import Dense
from rnnkit.checks import check_size
from rnnkit.embedding import Embedding
from rnnkit.model import build_cell
from rnnkit.pytree import build, pytree_dataclass, set_fields
from rnnkit.unroll import dynamic_rnn
from rnnkit.vocab import PAD, SOS
from rnnkit.wrappers import MultiRNNCell


@pytree_dataclass
class Decoder:
    """The decoder: the previous token's embedding -> ``cell`` -> ``projection`` to logits.

    Satisfies ``rnnkit.decode.StepDecoder``: ``step(tokens [B], state) -> (log_probs [B, V],
    state)``.
    """

    embedding: Embedding
    cell: object
    projection: Dense

    def __init__(self, embedding, cell, projection):
        wanted = getattr(cell, "input_size", None)
        if wanted is not None and wanted != embedding.embedding_size:
            raise ValueError(f"embedding: the cell reads {wanted} features, the embedding "
                             f"gives {embedding.embedding_size}")
        if projection.input_size != cell.output_size:
            raise ValueError(f"projection: expected input_size == the cell's output_size "
                             f"{cell.output_size}, got {projection.input_size}")
        set_fields(self, embedding=embedding, cell=cell, projection=projection)

    def __call__(self, inputs, initial_state, *, key=None, bptt="auto"):
        """Teacher forcing: ``inputs [B, L]`` (SOS, then the targets shifted right) -> logits
        ``[B, L, V]``, starting from ``initial_state`` (the encoder's final state)."""
        outputs, _ = dynamic_rnn(self.cell, self.embedding(inputs), initial_state=initial_state,
                                 key=key, bptt=bptt)
        return self.projection(outputs)  # [B, L, V]: one matmul for all steps, after the loop

    def step(self, tokens, state):
        """One step at inference: ``tokens [B]`` -> ``(log_probs [B, V], new_state)``."""
        output, state = self.cell(self.embedding(tokens), state)
        return jax.nn.log_softmax(self.projection(output), axis=-1), state


@pytree_dataclass
class EncoderDecoder:
    """An encoder cell, whose final state starts a ``Decoder``.

    Args:
      source_size: the source vocabulary's size (or, with ``source_tokens=False``, the
        features per input step ``I``); target_size: the target vocabulary's size ``V``.
      num_units: ``H`` of every layer of both RNNs; layers: layers of each (a
        ``MultiRNNCell`` when above 1); cell: "gru", "lstm" or "basic" (whose
        ``activation`` may be another than tanh).
      embedding_size: ``E`` of the source and the target embeddings.
      source_tokens: False for a source of feature vectors (no source embedding).
      key: PRNG key for every weight.
    """

    embedding: object  # Embedding of the source tokens, or None (feature vectors)
    encoder: object  # a cell
    decoder: Decoder

    def __init__(self, source_size, target_size, num_units, *, cell="gru", layers=1,
                 activation="tanh", embedding_size=32, source_tokens=True, key):
        source_size, target_size = check_size("source_size", source_size), check_size(
            "target_size", target_size)
        check_size("layers", layers)
        keys = dict(zip(("source", "target", "encoder", "decoder", "projection"),
                        jax.random.split(key, 5)))
        embedding = (Embedding(source_size, embedding_size, key=keys["source"])
                     if source_tokens else None)
        first_input = embedding_size if source_tokens else source_size
        encoder = _stack(cell, activation, first_input, num_units, layers, keys["encoder"])
        decoder = Decoder(Embedding(target_size, embedding_size, key=keys["target"]),
                          _stack(cell, activation, embedding_size, num_units, layers,
                                 keys["decoder"]),
                          Dense(num_units, target_size, key=keys["projection"]))
        set_fields(self, embedding=embedding, encoder=encoder, decoder=decoder)

    @classmethod
    def from_parts(cls, encoder, decoder, *, embedding=None):
        """An encoder-decoder of given parts; the encoder's state must fit the decoder's cell."""
        if encoder.state_size != decoder.cell.state_size:
            raise ValueError(f"encoder: its state ({encoder.state_size}) must have the "
                             f"decoder cell's state sizes ({decoder.cell.state_size})")
        return build(cls, embedding=embedding, encoder=encoder, decoder=decoder)

    def encode(self, inputs, sequence_length=None, *, key=None, bptt="auto"):
        """``inputs [B, T]`` ids (or ``[B, T, I]`` features) -> the encoder's final state."""
        x = inputs if self.embedding is None else self.embedding(inputs)  # [B, T, E]
        _, state = dynamic_rnn(self.encoder, x, sequence_length=sequence_length, key=key,
                               bptt=bptt)
        return state

    def __call__(self, inputs, targets, *, sequence_length=None, key=None, bptt="auto"):
        """Teacher forcing: ``targets [B, L]`` (each ending with EOS) -> logits ``[B, L, V]``,
        position ``t`` predicting ``targets[:, t]``."""
        encoder_key, decoder_key = (None, None) if key is None else jax.random.split(key)
        state = self.encode(inputs, sequence_length, key=encoder_key, bptt=bptt)
        return self.decoder(shift_right(targets), state, key=decoder_key, bptt=bptt)


def _stack(kind, activation, input_size, num_units, layers, key):
    keys = jax.random.split(key, layers)
    cells = [build_cell(kind, input_size if i == 0 else num_units, num_units,
                        activation=activation, key=k) for i, k in enumerate(keys)]
    return cells[0] if layers == 1 else MultiRNNCell(cells)


def shift_right(targets):
    """The decoder's inputs under teacher forcing: SOS, then ``targets [B, L]`` but the last."""
    start = jnp.full(targets.shape[:1] + (1,), SOS, targets.dtype)
    return jnp.concatenate([start, targets[:, :-1]], axis=1)


def sequence_mask(lengths, max_length):
    """``[B, L]`` bool: True at the positions ``t < lengths[b]`` (up to and with EOS)."""
    return jnp.arange(max_length)[None, :] < jnp.asarray(lengths)[:, None]


def sequence_loss(logits, targets, lengths):
    """Mean softmax cross-entropy over the valid positions of every sequence: those up to and
    including each target's EOS (``t < lengths[b]``); any output after EOS is ignored, even
    NaN there (TF1's ``sequence_loss`` with weights from the lengths).

    Args:
      logits: ``[B, L, V]``; targets: int ``[B, L]``; lengths: int ``[B]``, EOS counted.
    """
    mask = sequence_mask(lengths, targets.shape[1])
    xentropy = optax.softmax_cross_entropy_with_integer_labels(
        jnp.where(mask[..., None], logits, 0.0), targets)  # [B, L]
    return jnp.sum(jnp.where(mask, xentropy, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def token_accuracy(logits, targets, lengths):
    """The fraction of valid positions (as in ``sequence_loss``) whose argmax is the target."""
    mask = sequence_mask(lengths, targets.shape[1])
    hits = jnp.where(mask, jnp.argmax(logits, axis=-1) == targets, False)
    return jnp.sum(hits) / jnp.maximum(jnp.sum(mask), 1)


def loss_and_accuracy(model, inputs, sequence_length, targets, target_lengths, *, key=None,
                      bptt="auto"):
    """``(sequence_loss, token_accuracy)`` of a batch under teacher forcing; the loss is what
    the optimizer minimises. ``sequence_length`` may be None (every input step is valid)."""
    logits = model(inputs, targets, sequence_length=sequence_length, key=key, bptt=bptt)
    return (sequence_loss(logits, targets, target_lengths),
            token_accuracy(logits, targets, target_lengths))


def exact_matches(ids, targets):
    """``[B]`` bool: whether each decoded row ``ids [B, L]`` (PAD after EOS, as decoding
    writes it) is its target ``targets [B, L']`` (EOS, then PAD) exactly, EOS included."""
    width = max(ids.shape[1], targets.shape[1])
    ids, targets = (jnp.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=PAD)
                    for a in (jnp.asarray(ids), jnp.asarray(targets)))
    return jnp.all(ids == targets, axis=1)


@functools.partial(jax.jit, static_argnames=("max_length", "beam", "length_penalty"))
def _translate_ids(model, inputs, sequence_length, *, max_length, beam, length_penalty):
    state = model.encode(inputs, sequence_length)
    if beam == 1:
        return decode.greedy_decode(model.decoder, state, max_length=max_length)
    return decode.beam_search(model.decoder, state, width=beam, max_length=max_length,
                              length_penalty=length_penalty)


def translate_ids(model, inputs, sequence_length=None, *, max_length, beam=1,
                  length_penalty=0.0):
    """Encode ``inputs`` and decode, in one jitted call: greedy (``beam=1``) or beam search.

    Args:
      inputs: ``[B, T]`` ids (or ``[B, T, I]`` features); sequence_length: ``[B]`` or None.
      max_length, beam, length_penalty: as ``rnnkit.decode.beam_search``'s ``max_length``,
        ``width`` and ``length_penalty``.
    Returns:
      ``rnnkit.decode.Decoded(ids [B, max_length], lengths [B], scores [B])``.
    """
    decode.check_options(beam, max_length, length_penalty)
    return _translate_ids(model, inputs, sequence_length, max_length=max_length, beam=beam,
                          length_penalty=float(length_penalty))


def translate(model, source, target, strings, *, max_length=100, beam=1, length_penalty=0.0):
    """Strings in, strings out: ``strings`` encoded with the ``source`` vocabulary, decoded
    (greedy, or beam search of width ``beam``) with ``target`` up to each EOS.

    Raises:
      ValueError: a string that is empty or has a character outside ``source``, naming it, the
        character and its position.
    """
    ids, lengths = source.encode(strings, label="strings")
    decoded = translate_ids(model, ids, lengths, max_length=max_length, beam=beam,
                            length_penalty=length_penalty)
    return target.decode(decoded.ids)


__all__ = ["Decoder", "EncoderDecoder", "exact_matches", "loss_and_accuracy", "sequence_loss",
           "sequence_mask", "shift_right", "token_accuracy", "translate", "translate_ids"]
