"""A character vocabulary: strings to padded id arrays and back, with PAD, SOS and EOS.

The chapter's rule for outputs of varying length, made concrete: a target ends with an
end-of-sequence token, and everything after it is ignored (by ``seq2seq.sequence_loss``, which
masks it, and by ``decode``, which stops there)::

    target          "2019-04-22"  ->  2 0 1 9 - 0 4 - 2 2 EOS PAD PAD   length 11 (EOS counted)
    decoder inputs  (teacher forcing) SOS 2 0 1 9 - 0 4 - 2 2 EOS PAD   the target shifted right

Ids 0, 1, 2 are PAD, SOS and EOS in every vocabulary; the characters follow from 3.
"""

import numpy as np

PAD, SOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<sos>", "<eos>")


class Vocabulary:
    """Characters and their ids (``PAD``, ``SOS``, ``EOS`` first).

    Args:
      chars: the characters, one string or an iterable of one-character strings; duplicates
        are dropped, the order is kept (``from_strings`` sorts them).
      name: what the vocabulary reads, for error messages ("the dates task's inputs").
    """

    def __init__(self, chars, *, name="the vocabulary"):
        chars = list(dict.fromkeys(chars))
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(f"chars: expected one-character strings, got {bad[0]!r}")
        if not chars:
            raise ValueError("chars: expected at least one character, got none")
        self.chars = "".join(chars)
        self.name = name
        self._ids = {c: i + len(SPECIALS) for i, c in enumerate(chars)}

    @classmethod
    def from_strings(cls, strings, *, name="the vocabulary"):
        """The vocabulary of every character in ``strings``, sorted."""
        return cls(sorted(set().union(*map(set, _strings(strings, "strings")))), name=name)

    @property
    def size(self):
        """Ids in all, specials included: the embedding's and the output layer's size."""
        return len(self._ids) + len(SPECIALS)

    def __len__(self):
        return self.size

    def __repr__(self):
        return f"Vocabulary({self.chars!r})"

    def check(self, string, label="input", *, max_length=None):
        """Raises a ValueError unless ``string`` is a non-empty string of this vocabulary's
        characters, at most ``max_length`` of them. ``label`` names it in the message."""
        if not isinstance(string, str):
            raise ValueError(f"{label}: expected a string, got {type(string).__name__}")
        if not string:
            raise ValueError(f"{label}: an empty string; expected at least one character")
        for position, char in enumerate(string, start=1):
            if char not in self._ids:
                raise ValueError(f"{label} {_quote(string)}: character {char!r} at position "
                                 f"{position} is not in {self.name} ({self.chars!r})")
        if max_length is not None and len(string) > max_length:
            raise ValueError(f"{label} {_quote(string)}: {len(string)} characters, more than "
                             f"the {max_length} allowed")

    def encode(self, strings, *, eos=False, max_length=None, label="strings"):
        """Ids ``[N, L]`` (int32, PAD after each string) and lengths ``[N]`` (int32).

        Args:
          strings: an iterable of non-empty strings of this vocabulary's characters.
          eos: append EOS to each (targets); the lengths then count it.
          max_length: ``L`` (strings, with their EOS, longer than that are refused); default:
            the longest.
          label: names the strings in error messages (``label[i]``).
        Raises:
          ValueError: naming the string, the character and its position (counted from 1),
            or the length.
        """
        strings = _strings(strings, label)
        if not strings:
            raise ValueError(f"{label}: expected at least one string, got none")
        limit = None if max_length is None else max_length - int(eos)
        for i, string in enumerate(strings):
            self.check(string, f"{label}[{i}]", max_length=limit)
        lengths = np.array([len(s) + int(eos) for s in strings], np.int32)
        width = int(lengths.max()) if max_length is None else max_length
        ids = np.full((len(strings), width), PAD, np.int32)
        for row, string in enumerate(strings):
            ids[row, :len(string)] = [self._ids[c] for c in string]
            if eos:
                ids[row, len(string)] = EOS
        return ids, lengths

    def decode(self, ids):
        """``ids [N, L]`` (or one row ``[L]``) -> strings: each row's characters up to its
        first EOS or PAD; SOS is skipped."""
        ids = np.asarray(ids)
        if ids.ndim == 1:
            return self.decode(ids[None])[0]
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"ids: expected integer ids [N, L], got {ids.dtype} "
                             f"{list(ids.shape)}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"ids: expected ids in 0..{self.size - 1}, got "
                             f"{ids.min()}..{ids.max()}")
        table = np.array(["", "", "", *self.chars], object)
        out = []
        for row in ids:
            ends = np.flatnonzero((row == EOS) | (row == PAD))
            row = row[:ends[0]] if len(ends) else row
            out.append("".join(table[row]))
        return out


def _quote(string, limit=40):
    return repr(string) if len(string) <= limit else repr(string[:limit]) + "..."


def _strings(strings, label):
    if isinstance(strings, str):
        raise ValueError(f"{label}: expected a list of strings, got one string ({strings!r:.40})"
                         f"; wrap it in a list")
    return list(strings)
