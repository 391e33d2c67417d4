"""The embedded Reber task: the recogniser against every string the grammar makes, the data,
the classifier's padding, and the book's run end to end (train, predict, evaluate, bad input)."""

import contextlib
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnkit import reber
from rnnkit.cli import main

GOOD, BAD = "BPBTSSSSSSSXXTTVPXVPXTTTTTVVEPE", "BPBTSSSSSSSXXTTVPXVPXTTTTTVVETE"


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def every_string(grammar, max_length):
    """Every string of ``grammar`` of at most ``max_length`` letters, by expanding each
    choice of every state (no recogniser involved)."""
    def walk(state, prefix):
        if state is None:
            yield prefix
            return
        for production, following in grammar[state]:
            ends = [production] if isinstance(production, str) else every_string(
                production, max_length - len(prefix))
            for part in ends:
                if len(prefix) + len(part) <= max_length:
                    yield from walk(following, prefix + part)
    return set(walk(0, ""))


def test_the_recogniser_accepts_exactly_the_grammars_strings():
    """Up to 12 letters: every string the grammar makes is accepted, and of their one-letter
    changes exactly those the grammar also makes."""
    for grammar in (reber.REBER_GRAMMAR, reber.EMBEDDED_REBER_GRAMMAR):
        strings = every_string(grammar, 12)
        assert len(strings) > 20 and all(reber.is_valid(s, grammar) for s in strings)
        for s in strings:
            for i in range(len(s)):
                for letter in reber.CHARS:
                    changed = s[:i] + letter + s[i + 1:]
                    assert reber.is_valid(changed, grammar) == (changed in strings), changed
    assert not reber.is_valid("") and not reber.is_valid("BTBPVVET")


def test_the_books_strings():
    for s in "BTXXTTVPXTVPXTTVPSE BPVPSE BTXSE BPVVE BTSXSE BPTVPXTTTVVE".split():
        assert reber.is_valid(s, reber.REBER_GRAMMAR) and not reber.is_valid(s)
    for s in "BTBPVVETE BTBTSSSSSSSXXVVETE BPBTSSSXXTTTTVPSEPE".split():
        assert reber.is_valid(s)
    assert reber.is_valid(GOOD) and not reber.is_valid(BAD)


def test_the_data_is_balanced_seeded_and_labelled_by_the_recogniser():
    strings, labels = reber.dataset(1001, np.random.default_rng(7))
    assert labels.sum() == 500 and len(strings) == 1001
    assert all(reber.is_valid(s) == bool(y) for s, y in zip(strings, labels))
    assert len({len(s) for s in strings}) > 10  # variable lengths
    again, _ = reber.dataset(1001, np.random.default_rng(7))
    assert again == strings
    misses = [reber.near_miss(np.random.default_rng(i)) for i in range(50)]
    assert not any(map(reber.is_valid, misses))


def test_encode_one_hot_with_lengths():
    inputs, lengths = reber.encode(["BTE", "BPBTXSEPE"])
    assert inputs.shape == (2, 9, 7) and lengths.tolist() == [3, 9]
    assert inputs[0, :3].argmax(axis=1).tolist() == [0, 4, 1]  # B, T, E in "BEPSTVX"
    assert np.all(inputs[0, 3:] == 0) and np.all(inputs.sum(axis=2)[1] == 1)
    for strings, needle in ((["BTE", ""], "an empty string"), (["BTQE"], "'Q' not in"),
                            (["bte"], "'b', 'e', 't' not in the alphabet BEPSTVX")):
        with pytest.raises(ValueError, match=needle):
            reber.encode(strings)


@pytest.mark.parametrize("cell", ["gru", "lstm", "basic"])
def test_the_padding_never_reaches_the_logit(cell):
    """A string's logit is the same alone, padded with zeros, and padded with NaN."""
    model = reber.build_classifier(cell, 5, key=jax.random.key(0))
    inputs, lengths = reber.encode(["BTBPVVETE", "BPBTXSEPE", "BTBTSSSSSSSXXVVETE"])
    padded = np.concatenate([inputs, np.full((3, 4, 7), np.nan, np.float32)], axis=1)
    short = model(jnp.asarray(inputs[:2, :9]), jnp.asarray(lengths[:2]))
    for x in (inputs, padded):
        logits = model(jnp.asarray(x), jnp.asarray(lengths))
        assert np.all(np.isfinite(logits))
        np.testing.assert_allclose(logits[:2], short, rtol=1e-6)


@pytest.fixture(scope="module")
def book_run(tmp_path_factory):
    """The book's run, the task's defaults: a 30-unit GRU, 10 epochs (about 30 s)."""
    out = tmp_path_factory.mktemp("reber") / "run"
    status, stdout, stderr = run("train", "--task", "reber", "--out", out)
    assert status == 0, stderr
    return out, stdout


def test_the_books_run_reaches_the_target(book_run):
    out, stdout = book_run
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(last) == {"epoch", "train_loss", "train_accuracy", "train_loss_mean",
                         "train_accuracy_mean", "val_loss", "val_accuracy", "seconds"}
    assert last["epoch"] == 10 and last["val_accuracy"] >= 0.999
    assert json.loads((out / "final.json").read_text())["test_accuracy"] >= 0.999
    assert stdout.count("Accuracy:") == 10 and (out / "learning_curves.png").is_file()


def test_predict_gets_the_two_tricky_strings_right(book_run):
    status, stdout, _ = run("predict", book_run[0], BAD, GOOD, "BTBPVVETE")
    lines = [line.split("\t") for line in stdout.splitlines()]
    assert status == 0 and [line[:2] for line in lines] == [[BAD, "bad"], [GOOD, "good"],
                                                            ["BTBPVVETE", "good"]]
    assert all(0.5 < float(line[2]) <= 1.0 for line in lines)


@pytest.mark.parametrize("strings, needle", [
    (["BTBPVVETE", "BTBQ"], "BTBQ: 'Q' not in the alphabet BEPSTVX"),
    ([""], "an empty string: expected letters from BEPSTVX"),
])
def test_bad_strings_are_one_line_and_exit_2(book_run, strings, needle):
    status, stdout, stderr = run("predict", book_run[0], *strings)
    assert status == 2 and stdout == "" and stderr.count("\n") == 1 and needle in stderr


def test_evaluate_lists_the_strings_it_got_wrong(book_run):
    status, stdout, _ = run("evaluate", book_run[0], "--split", "test")
    saved = json.loads((book_run[0] / "evaluate_test.json").read_text())
    assert status == 0 and "test: 5,000 strings" in stdout
    assert saved["accuracy"] >= 0.999 and len(saved["wrong"]) == round(
        5000 * (1 - saved["accuracy"]))
