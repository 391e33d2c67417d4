"""What the encoder-decoder tasks (``dates``, ``spell``) share: their data's shape, the loss,
validation by greedy decoding, the epoch line, the plots and ``rnnkit evaluate``.

A metrics row holds the teacher-forced training loss and token accuracy (``train_loss``,
``train_acc``, of the epoch's last batch, and their epoch means), the validation loss and the
headline ``exact_match``: the fraction of validation examples whose greedy decoding is the
target exactly, EOS included. The test line reports greedy decoding and beam search of width
``TEST_BEAM``.
"""

import functools
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnkit.plots import plot_learning_curves
from rnnkit.progress import write_json
from rnnkit.seq2seq import EncoderDecoder, exact_matches, loss_and_accuracy, sequence_loss
from rnnkit.seq2seq import sequence_mask, translate_ids
from rnnkit.steps import epoch_batches

CHUNK_SIZE = 1000  # examples per jitted evaluation call (the last chunk padded)
TEST_BEAM = 5


class Encoded(NamedTuple):
    """One split of an encoder-decoder task."""

    sources: list  # what each example is, in words (the input string; "test[3]" for an image)
    inputs: np.ndarray  # [N, T] ids, or [N, T, I] features
    lengths: object  # [N] int32, or None: every input step is valid
    targets: np.ndarray  # [N, L] ids, each ending with EOS, then PAD
    target_lengths: np.ndarray  # [N] int32, EOS counted
    texts: list  # the target strings

    @property
    def num_examples(self):
        return len(self.texts)

    def arrays(self):
        """The arrays a training batch is cut from (the loss's ``*batch``)."""
        parts = (self.inputs, self.lengths, self.targets, self.target_lengths)
        return tuple(a for a in parts if a is not None)


class Evaluation(NamedTuple):
    loss: float  # mean cross-entropy per target token, teacher forced
    exact_match: float  # fraction of examples decoded exactly
    decoded: list  # the decoded strings


def build_model(config, source_size, target_size, *, source_tokens, key):
    """The encoder-decoder a task's ``config`` describes."""
    return EncoderDecoder(source_size, target_size, config.units, cell=config.cell,
                          layers=config.layers, activation=config.activation,
                          embedding_size=config.embedding_size, source_tokens=source_tokens,
                          key=key)


@functools.partial(jax.jit, static_argnames=("max_length", "beam"))
def _chunk(model, inputs, lengths, targets, target_lengths, *, max_length, beam):
    """The summed loss and token count (rows with target length 0 count nothing), and the
    decoded ids of one chunk."""
    logits = model(inputs, targets, sequence_length=lengths)
    count = jnp.sum(sequence_mask(target_lengths, targets.shape[1]))
    loss_sum = sequence_loss(logits, targets, target_lengths) * count
    decoded = translate_ids(model, inputs, lengths, max_length=max_length, beam=beam)
    return loss_sum, count, decoded.ids


def evaluate(model, split, vocab, *, max_length, beam=1, chunk_size=CHUNK_SIZE):
    """Loss, exact match and decoded strings of ``model`` on an ``Encoded`` split."""
    model = jax.device_put(model, jax.devices()[0])  # one device, even after split training
    loss_sum, count, hits, decoded = 0.0, 0, 0, []
    n = split.num_examples
    for start in range(0, n, chunk_size):
        rows = np.arange(start, start + chunk_size)
        valid = rows < n
        rows = np.where(valid, rows, start)  # pad with copies of the chunk's first row
        lengths = None if split.lengths is None else split.lengths[rows]
        target_lengths = np.where(valid, split.target_lengths[rows], 0)
        part_loss, part_count, ids = _chunk(model, split.inputs[rows], lengths,
                                            split.targets[rows], target_lengths,
                                            max_length=max_length, beam=beam)
        ids = np.asarray(ids)[valid]
        loss_sum, count = loss_sum + float(part_loss), count + int(part_count)
        hits += int(np.sum(exact_matches(ids, split.targets[rows[valid]])))
        decoded += vocab.decode(ids)
    return Evaluation(loss_sum / max(count, 1), hits / max(n, 1), decoded)


class EncoderDecoderTask:
    """The shared part of a task whose model is an ``EncoderDecoder``. A subclass sets
    ``target_vocab``, ``max_length`` (tokens a decoding may write, EOS included), ``what``
    (its examples, in words), and ``load_data``, ``init_model`` and ``predict``."""

    metrics = ("loss", "acc")
    validation_fields = ("val_loss", "exact_match")
    headline = "exact_match"
    decodes = True  # rnnkit predict takes --beam

    def loss(self, model, *batch, key=None, bptt="auto"):
        inputs, lengths, targets, target_lengths = (batch if len(batch) == 4
                                                    else (batch[0], None, *batch[1:]))
        loss, accuracy = loss_and_accuracy(model, inputs, lengths, targets, target_lengths,
                                           key=key, bptt=bptt)
        return loss, (accuracy,)

    def train_arrays(self, config, data, epoch):
        train = data.train
        index = np.stack(epoch_batches(config.seed, epoch, train.num_examples,
                                       config.batch_size))
        return train.arrays(), index

    def evaluate(self, model, split, beam=1):
        return evaluate(model, split, self.target_vocab, max_length=self.max_length, beam=beam)

    def validate(self, model, data):
        result = self.evaluate(model, data.validation)
        return {"val_loss": result.loss, "exact_match": result.exact_match}

    def test(self, model, data):
        greedy = self.evaluate(model, data.test)
        beam = self.evaluate(model, data.test, beam=TEST_BEAM)
        line = (f"Test exact match ({data.test.num_examples:,} {self.what}): greedy "
                f"{greedy.exact_match * 100:.2f}%, beam {TEST_BEAM} {beam.exact_match * 100:.2f}%")
        return {"test_loss": greedy.loss, "test_exact_match": greedy.exact_match,
                f"test_exact_match_beam{TEST_BEAM}": beam.exact_match}, line

    def epoch_line(self, row):
        return (f"{row['epoch']}\tTraining loss: {row['train_loss']:.6f}\tToken acc: "
                f"{row['train_acc']:.6f}\tValidation loss: {row['val_loss']:.6f}\t"
                f"Exact match: {row['exact_match'] * 100:.2f}%")

    def plot(self, run_dir, history, model, data):
        plot_learning_curves(history, Path(run_dir) / "learning_curves.png",
                             metrics=(("loss", "Loss (teacher forcing)", "loss"),
                                      ("acc", "Token accuracy (training), exact match "
                                       "(validation)", "exact_match")))

    def evaluate_run(self, model, config, data, split, run_dir, log=print):
        """``rnnkit evaluate``: loss and exact match (greedy and beam search) of a split, and
        the first examples it got wrong."""
        greedy = self.evaluate(model, data)
        beam = self.evaluate(model, data, beam=TEST_BEAM)
        wrong = [(s, t, g, b) for s, t, g, b in zip(data.sources, data.texts, greedy.decoded,
                                                    beam.decoded) if g != t or b != t]
        log(f"{split}: {data.num_examples:,} {self.what}\tloss: {greedy.loss:.6f}\t"
            f"exact match: greedy {greedy.exact_match * 100:.2f}%, beam {TEST_BEAM} "
            f"{beam.exact_match * 100:.2f}%")
        for source, target, g, b in wrong[:20]:
            log(f"  {source}\ttarget {target}\tgreedy {g}\tbeam {b}")
        path = Path(run_dir) / f"evaluate_{split}.json"
        write_json(path, {"split": split, "loss": greedy.loss,
                          "exact_match": greedy.exact_match,
                          f"exact_match_beam{TEST_BEAM}": beam.exact_match,
                          "wrong": [{"input": s, "target": t, "greedy": g, "beam": b}
                                    for s, t, g, b in wrong]})
        return f"saved to {path}"


def beam_option(options):
    """The beam width ``rnnkit predict --beam`` asks for (1: greedy decoding)."""
    return getattr(options, "beam", None) or 1
