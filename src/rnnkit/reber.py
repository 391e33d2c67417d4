"""The chapter's exercise: strings of the embedded Reber grammar against near-misses.

A Reber string walks a small automaton from ``B`` to ``E``. An embedded Reber string wraps one
as ``B T <reber> T E`` or ``B P <reber> P E``: its second letter must come back as its
second-to-last, across a Reber string of any length. A near-miss is a valid string with one
letter replaced, kept only if the recogniser (``is_valid``) rejects it. The classifier is the
book's: a GRU reads the one-hot letters (``sequence_length`` stops it at each string's end) and
a dense layer on its final state gives one logit, ``p(good) = sigmoid(logit)``::

    inputs, lengths = encode(strings)                 # [B, T, 7], [B]
    _, state = dynamic_rnn(cell, inputs, sequence_length=lengths)
    logit = dense(top_hidden(state))                  # [B, 1]
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnkit.cells import Dense
from rnnkit.model import build_cell, top_hidden
from rnnkit.pytree import pytree_dataclass, set_fields
from rnnkit.unroll import dynamic_rnn
from rnnkit.wrappers import MultiRNNCell

CHARS = "BEPSTVX"  # the alphabet; letter i is one-hot unit i

# A grammar is a tuple of states; a state, the (letter or grammar, next state) it may take,
# one chosen uniformly; None ends the walk. The book's two grammars:
REBER_GRAMMAR = (
    (("B", 1),),
    (("T", 2), ("P", 3)),
    (("S", 2), ("X", 4)),
    (("T", 3), ("V", 5)),
    (("X", 3), ("S", 6)),
    (("P", 4), ("V", 6)),
    (("E", None),),
)
EMBEDDED_REBER_GRAMMAR = (
    (("B", 1),),
    (("T", 2), ("P", 3)),
    ((REBER_GRAMMAR, 4),),
    ((REBER_GRAMMAR, 5),),
    (("T", 6),),
    (("P", 6),),
    (("E", None),),
)


def generate_string(rng, grammar=EMBEDDED_REBER_GRAMMAR):
    """A random string of ``grammar``, each choice uniform (``rng``: a NumPy Generator)."""
    state, parts = 0, []
    while state is not None:
        choices = grammar[state]
        production, state = choices[rng.integers(len(choices))]
        parts.append(production if isinstance(production, str)
                     else generate_string(rng, production))
    return "".join(parts)


def _ends(grammar, string, start):
    """The positions at which a walk of ``grammar`` begun at ``string[start]`` can end."""
    ends, todo, seen = set(), [(0, start)], set()
    while todo:
        state, position = todo.pop()
        if (state, position) in seen:
            continue
        seen.add((state, position))
        if state is None:
            ends.add(position)
            continue
        for production, following in grammar[state]:
            if isinstance(production, str):
                if string.startswith(production, position):
                    todo.append((following, position + len(production)))
            else:
                todo.extend((following, end) for end in _ends(production, string, position))
    return ends


def is_valid(string, grammar=EMBEDDED_REBER_GRAMMAR):
    """Whether ``string`` is a whole string of ``grammar`` (the recogniser)."""
    return len(string) in _ends(grammar, string, 0)


def near_miss(rng, grammar=EMBEDDED_REBER_GRAMMAR, chars=CHARS):
    """A valid string with one letter replaced by another of ``chars``, drawn again until
    the result is not itself valid."""
    while True:
        good = generate_string(rng, grammar)
        i = rng.integers(len(good))
        letter = rng.choice([c for c in chars if c != good[i]])
        bad = good[:i] + letter + good[i + 1:]
        if not is_valid(bad, grammar):
            return bad


def dataset(size, rng):
    """``(strings, labels [size])``: ``size // 2`` valid strings (label 1) and the rest
    near-misses (label 0), shuffled."""
    good = size // 2
    strings = ([generate_string(rng) for _ in range(good)]
               + [near_miss(rng) for _ in range(size - good)])
    labels = np.array([1] * good + [0] * (size - good), np.int32)
    order = rng.permutation(size)
    return [strings[i] for i in order], labels[order]


def check_strings(strings):
    """Raises a ValueError naming the first empty string or letter outside ``CHARS``."""
    for string in strings:
        if not string:
            raise ValueError(f"an empty string: expected letters from {CHARS}")
        bad = sorted(set(string) - set(CHARS))
        if bad:
            raise ValueError(f"{string}: {', '.join(map(repr, bad))} not in the alphabet "
                             f"{CHARS} (upper case)")


def encode(strings, n_steps=None):
    """``(one-hot inputs [N, T, 7] float32, lengths [N] int32)``, zero past each string's
    length; ``T`` is ``n_steps`` or the longest string's length."""
    check_strings(strings)
    lengths = np.array([len(s) for s in strings], np.int32)
    n_steps = int(lengths.max()) if n_steps is None else n_steps
    if lengths.max() > n_steps:
        raise ValueError(f"n_steps: expected at least the longest string's {lengths.max()} "
                         f"letters, got {n_steps}")
    inputs = np.zeros((len(strings), n_steps, len(CHARS)), np.float32)
    for row, string in enumerate(strings):
        inputs[row, np.arange(len(string)), [CHARS.index(c) for c in string]] = 1.0
    return inputs, lengths


@pytree_dataclass
class StringClassifier:
    """A cell read over one-hot letters up to each string's length, then ``Dense(H, 1)``."""

    cell: object
    dense: Dense

    def __init__(self, cell, dense):
        if dense.input_size != cell.output_size or dense.output_size != 1:
            raise ValueError(f"dense: expected {cell.output_size} inputs (the cell's "
                             f"output_size) and 1 output, got {dense.input_size} and "
                             f"{dense.output_size}")
        set_fields(self, cell=cell, dense=dense)

    def __call__(self, inputs, lengths, *, key=None, bptt="auto"):
        """``inputs [B, T, 7]``, ``lengths [B]`` -> logits ``[B]`` (positive: good)."""
        _, state = dynamic_rnn(self.cell, inputs, sequence_length=lengths, key=key, bptt=bptt)
        return self.dense(top_hidden(state))[:, 0]


def build_classifier(cell="gru", units=30, layers=1, *, activation="tanh", key):
    """The book's classifier: ``layers`` cells ("gru", "lstm" or "basic" with ``activation``)
    of ``units`` units on the alphabet's one-hot letters (a ``MultiRNNCell`` when stacked),
    then one logit."""
    *cell_keys, dense_key = jax.random.split(key, layers + 1)
    sizes = [len(CHARS)] + [units] * layers
    cells = [build_cell(cell, n_in, units, activation=activation, key=k)
             for n_in, k in zip(sizes, cell_keys)]
    stack = cells[0] if layers == 1 else MultiRNNCell(cells)
    return StringClassifier(stack, Dense(units, 1, key=dense_key))


def scores(logits, labels):
    """Sigmoid cross-entropy ``[B]`` and hits ``[B]`` (float 0/1) of ``logits [B]``."""
    xentropy = optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
    return xentropy, ((logits > 0) == (labels > 0)).astype(jnp.float32)


def loss_and_accuracy(model, inputs, lengths, labels, *, key=None, bptt="auto"):
    """``(loss, accuracy)``: the batch means of ``scores``; the loss is what Adam minimises."""
    xentropy, correct = scores(model(inputs, lengths, key=key, bptt=bptt), labels)
    return jnp.mean(xentropy), jnp.mean(correct)


@jax.jit
def _logits(model, inputs, lengths):
    return model(inputs, lengths)


def probabilities(model, strings):
    """``p(good) [N]`` (NumPy) of each of ``strings`` (a ValueError names a bad one)."""
    return np.asarray(jax.nn.sigmoid(_logits(model, *encode(strings))))


def evaluate(model, inputs, lengths, labels):
    """``(mean loss, accuracy, p(good) [N])`` of ``model`` on encoded strings."""
    logits = _logits(model, inputs, lengths)
    xentropy, correct = scores(logits, jnp.asarray(labels))
    return float(jnp.mean(xentropy)), float(jnp.mean(correct)), np.asarray(jax.nn.sigmoid(logits))
