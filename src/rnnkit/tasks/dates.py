"""Date translation as a task: "April 22, 2019" -> "2019-04-22", character by character.

``rnnkit train --task dates`` trains an encoder-decoder (``rnnkit.seq2seq``): a GRU reads the
date's characters (embedded), a GRU decoder starts from its final state and writes the ISO
date, trained with teacher forcing; Adam (``rnnkit.config.DatesConfig``). Inputs are exactly
``date.strftime("%B %d, %Y")`` and targets ``date.isoformat()``, for dates drawn uniformly
from 1000-01-01 to 9999-12-31: training dates from the seed, validation from ``seed + 1``, test
from ``seed + 2``. Its headline is ``exact_match``: validation dates decoded greedily to
exactly their target. ``rnnkit predict RUN "April 22, 2019"`` prints ``input, translation,
log-probability`` per input (``--beam N``: beam search).
"""

import datetime
from typing import NamedTuple

import numpy as np

from rnnkit.config import DatesConfig
from rnnkit.datasets import DatasetError
from rnnkit.seq2seq import translate_ids
from rnnkit.tasks.translation import EncoderDecoderTask, Encoded, beam_option, build_model
from rnnkit.vocab import Vocabulary

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
FIRST, LAST = datetime.date(1000, 1, 1), datetime.date(9999, 12, 31)
INPUT_FORMAT = "%B %d, %Y"
INPUT_LENGTH = len("September 30, 9999")  # the longest input: 18 characters
OUTPUT_LENGTH = len("9999-12-31") + 1  # with EOS
SOURCE = Vocabulary(sorted(set("".join(MONTHS)) | set("0123456789, ")),
                    name="the dates task's characters")
TARGET = Vocabulary("0123456789-", name="ISO dates' characters")
SPLITS = {"train": 0, "validation": 1, "test": 2}  # split -> offset of its seed


def random_dates(count, seed):
    """``count`` dates drawn uniformly (by day) from 1000-01-01 to 9999-12-31."""
    days = np.random.default_rng(seed).integers(FIRST.toordinal(), LAST.toordinal() + 1, count)
    return [datetime.date.fromordinal(int(day)) for day in days]


def date_pairs(dates):
    """``(inputs, targets)``: each date as ``strftime("%B %d, %Y")`` and as ``isoformat()``."""
    return [d.strftime(INPUT_FORMAT) for d in dates], [d.isoformat() for d in dates]


def encode_pairs(inputs, targets):
    ids, lengths = SOURCE.encode(inputs, max_length=INPUT_LENGTH, label="inputs")
    target_ids, target_lengths = TARGET.encode(targets, eos=True, max_length=OUTPUT_LENGTH,
                                               label="targets")
    return Encoded(list(inputs), ids, lengths, target_ids, target_lengths, list(targets))


def make_split(config, split):
    dates = random_dates(getattr(config, f"{split}_size"), config.seed + SPLITS[split])
    return encode_pairs(*date_pairs(dates))


class DatesData(NamedTuple):
    train: Encoded
    validation: Encoded
    test: Encoded


class DatesTask(EncoderDecoderTask):
    name = "dates"
    summary = ("translate dates in words to ISO format (\"April 22, 2019\" -> \"2019-04-22\"): "
               "an encoder-decoder of characters, greedy or beam-search decoding")
    config_class = DatesConfig
    target_vocab = TARGET
    max_length = OUTPUT_LENGTH + 5  # room for a model that does not stop in time
    what = "dates"

    def load_data(self, config, *, data_dir=None, download=False, recorded=None, run=None,
                  split=None, log=print):
        if split is not None and split not in SPLITS:
            raise DatasetError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")
        data = {name: make_split(config, name) for name in ([split] if split else SPLITS)}
        log(f"Dates from {FIRST} to {LAST}: {config.train_size:,} training (seed "
            f"{config.seed}), {config.validation_size:,} validation, {config.test_size:,} test")
        return (data[split] if split else DatesData(**data)), None

    def init_model(self, config, *, key):
        return build_model(config, SOURCE.size, TARGET.size, source_tokens=True, key=key)

    def predict(self, model, config, inputs, options):
        """``rnnkit predict``: per input, ``input<TAB>translation<TAB>log-probability``.

        Raises:
          ValueError: an input that is empty, longer than 18 characters, or has a character
            that is not in a month's name, a digit, a comma or a space (named, with its
            position).
        """
        inputs = list(inputs)
        for i, string in enumerate(inputs):
            SOURCE.check(string, f"input {i + 1}", max_length=INPUT_LENGTH)
        ids, lengths = SOURCE.encode(inputs, max_length=INPUT_LENGTH)
        decoded = translate_ids(model, ids, lengths, max_length=self.max_length,
                                beam=beam_option(options))
        for string, text, score in zip(inputs, TARGET.decode(decoded.ids),
                                       np.asarray(decoded.scores)):
            yield f"{string}\t{text}\t{score:.4f}"
