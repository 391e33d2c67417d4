"""Vector to sequence as a task: spell an MNIST digit's class ("seven") from its image.

``rnnkit train --task spell``: an encoder GRU reads the image's 28 rows of 28 pixels
(sequence to vector, as the book's classifier), and a decoder GRU, started from that one final
state, writes the class's English name letter by letter until EOS: the image-captioning shape
at MNIST's scale (``rnnkit.config.SpellConfig``). The digits are MNIST's, found as ``rnnkit
train`` finds them (the embedded 5,000-digit subset on an offline machine). Headline:
``exact_match`` of the validation digits' greedy spelling. ``rnnkit predict RUN digit.png``
prints ``file, word, log-probability`` per image (``--beam N``: beam search).
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnkit.config import SpellConfig, TrainConfig
from rnnkit.evaluate import load_digits
from rnnkit.model import N_INPUTS, N_STEPS
from rnnkit.seq2seq import translate_ids
from rnnkit.tasks.mnist import MnistTask
from rnnkit.tasks.translation import EncoderDecoderTask, Encoded, beam_option, build_model
from rnnkit.vocab import Vocabulary

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TARGET = Vocabulary.from_strings(WORDS, name="the digits' names")
SPLITS = ("train", "validation", "test")


class SpellData(NamedTuple):
    train: Encoded
    validation: Encoded
    test: Encoded


def encode_digits(data, split):
    """An ``Encoded`` split of a ``DataSet``: images as ``[N, 28, 28]`` rows, labels as words."""
    words = [WORDS[label] for label in data.labels]
    targets, target_lengths = TARGET.encode(words, eos=True, label="words")
    images = np.asarray(data.images, np.float32).reshape(-1, N_STEPS, N_INPUTS)
    sources = [f"{split}[{i}]" for i in range(len(words))]
    return Encoded(sources, images, None, targets, target_lengths, words)


class SpellTask(EncoderDecoderTask):
    name = "spell"
    summary = ("spell an MNIST digit's class as a word (\"seven\") from its image: vector to "
               "sequence, an encoder over the rows and a decoder writing letters until EOS")
    config_class = SpellConfig
    target_vocab = TARGET
    max_length = max(map(len, WORDS)) + 3  # with EOS, and room for a model that goes on
    what = "digits"

    def load_data(self, config, *, data_dir=None, download=False, recorded=None, run=None,
                  split=None, log=print):
        """MNIST as ``rnnkit train`` loads it (``MnistTask.load_data``), the labels spelled."""
        mnist = TrainConfig(data_dir=config.data_dir, download=config.download,
                            validation_size=config.validation_size, seed=config.seed)
        data, source = MnistTask().load_data(mnist, data_dir=data_dir, download=download,
                                             recorded=recorded, run=run, split=split, log=log)
        if split is not None:
            return encode_digits(data, split), source
        return SpellData(*(encode_digits(getattr(data, s), s) for s in SPLITS)), source

    def init_model(self, config, *, key):
        return build_model(config, N_INPUTS, TARGET.size, source_tokens=False, key=key)

    def predict(self, model, config, inputs, options):
        """``rnnkit predict``: per image (PNG, or ``.npy`` of one or more digits, as MNIST's
        predict reads them), ``file<TAB>word<TAB>log-probability``."""
        for file in inputs:
            if not Path(file).exists():
                raise ValueError(f"{file}: no such file")
            images = load_digits(file, invert=getattr(options, "invert", False))
            decoded = translate_ids(model, images.reshape(-1, N_STEPS, N_INPUTS),
                                    max_length=self.max_length, beam=beam_option(options))
            words = TARGET.decode(decoded.ids)
            for i, (word, score) in enumerate(zip(words, np.asarray(decoded.scores))):
                name = file if len(words) == 1 else f"{file}[{i}]"
                yield f"{name}\t{word}\t{score:.4f}"
