"""The encoder-decoder tasks from the command line: the dates data (exactly strftime and
isoformat, uniform, seeded), a tiny dates run (metrics, final test figures, evaluate, predict
greedy and --beam), bad input as one line and exit 2, and the spell task on the embedded
MNIST subset."""

import contextlib
import datetime
import io
import json

import numpy as np
import pytest

from rnnkit.cli import main
from rnnkit.config import DatesConfig
from rnnkit.tasks import get_task
from rnnkit.tasks.dates import INPUT_LENGTH, MONTHS, SOURCE, TARGET, date_pairs, random_dates
from rnnkit.vocab import EOS

TINY = ["--units", "16", "--embedding-size", "8", "--train-size", "200", "--validation-size",
        "50", "--test-size", "30", "--batch-size", "50", "--epochs", "2"]


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def test_inputs_are_strftime_and_targets_isoformat_of_uniform_dates():
    dates = random_dates(20000, 0)
    assert min(dates) >= datetime.date(1000, 1, 1) and max(dates) <= datetime.date(9999, 12, 31)
    years = np.array([d.year for d in dates])
    assert abs(years.mean() - 5499.5) < 60 and years.min() < 1010 and years.max() > 9990
    inputs, targets = date_pairs(dates[:50])
    for d, x, y in zip(dates, inputs, targets):
        assert x == d.strftime("%B %d, %Y") == f"{MONTHS[d.month - 1]} {d.day:02d}, {d.year}"
        assert y == d.isoformat()
    assert random_dates(5, 7) == random_dates(5, 7) != random_dates(5, 8)


def test_the_splits_come_from_their_own_seeds():
    task, config = get_task("dates"), DatesConfig(train_size=40, validation_size=40,
                                                  test_size=40)
    data, source = task.load_data(config, log=lambda line: None)
    assert source is None
    assert len({tuple(split.texts) for split in data}) == 3
    assert data.test.texts == [d.isoformat() for d in random_dates(40, config.seed + 2)]
    again, _ = task.load_data(config, split="validation", log=lambda line: None)
    assert again.texts == data.validation.texts
    np.testing.assert_array_equal(again.targets, data.validation.targets)
    assert np.all(data.train.targets[:, 10] == EOS) and np.all(data.train.target_lengths == 11)


def test_every_month_and_day_fits_the_vocabulary():
    longest = [datetime.date(9999, month, 28).strftime("%B %d, %Y") for month in range(1, 13)]
    ids, lengths = SOURCE.encode(longest, max_length=INPUT_LENGTH)
    assert SOURCE.decode(ids) == longest and lengths.max() == INPUT_LENGTH
    assert TARGET.decode(TARGET.encode(["9999-12-31"], eos=True)[0]) == ["9999-12-31"]


@pytest.fixture(scope="module")
def dates_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dates") / "run"
    status, stdout, stderr = run("train", "--task", "dates", *TINY, "--out", out)
    assert status == 0, stderr
    return out, stdout


def test_a_dates_run_reports_exact_match(dates_run):
    out, stdout = dates_run
    assert stdout.count("Exact match:") == 2
    assert "Test exact match (30 dates): greedy " in stdout and ", beam 5 " in stdout
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(last) == {"epoch", "train_loss", "train_acc", "train_loss_mean",
                         "train_acc_mean", "val_loss", "exact_match", "seconds"}
    assert last["epoch"] == 2 and 0 <= last["exact_match"] <= 1 and last["val_loss"] > 0
    final = json.loads((out / "final.json").read_text())
    assert {"test_exact_match", "test_exact_match_beam5", "test_loss"} <= set(final)
    assert (out / "learning_curves.png").is_file()
    status, stdout, _ = run("runs", out.parent)
    assert status == 0 and "exact_match" in stdout and "dates" in stdout


def test_predict_prints_each_input_and_its_translation(dates_run):
    out, _ = dates_run
    inputs = ["April 22, 2019", "July 04, 1776"]
    for flags in ([], ["--beam", "3"]):
        status, stdout, stderr = run("predict", out, *inputs, *flags)
        assert status == 0, stderr
        lines = stdout.splitlines()
        assert [line.split("\t")[0] for line in lines] == inputs
        for line in lines:
            translation, score = line.split("\t")[1:]
            assert set(translation) <= set("0123456789-") and float(score) <= 0


def test_evaluate_reports_greedy_and_beam(dates_run):
    out, _ = dates_run
    status, stdout, stderr = run("evaluate", out, "--split", "validation")
    assert status == 0, stderr
    assert "validation: 50 dates" in stdout and "exact match: greedy" in stdout
    saved = json.loads((out / "evaluate_validation.json").read_text())
    assert {"exact_match", "exact_match_beam5", "wrong"} <= set(saved)


@pytest.mark.parametrize("argv, message", [
    (["Apr!l 22, 2019"], "input 1 'Apr!l 22, 2019': character '!' at position 4 is not in"),
    (["April 22, 2019", "22/04/2019"], "input 2 '22/04/2019': character '/' at position 3"),
    ([""], "input 1: an empty string"),
    (["September 30, 2019 AD"], "21 characters, more than the 18 allowed"),
    (["--beam", "0", "April 22, 2019"], "--beam: expected a beam width >= 1, got 0"),
    (["--beam", "x", "April 22, 2019"], "--beam: invalid int value"),
])
def test_bad_input_is_one_line_and_exit_2(dates_run, argv, message):
    out, _ = dates_run
    status, stdout, stderr = run("predict", out, *argv)
    assert status == 2 and stdout == ""
    assert stderr.count("\n") == 1 and message in stderr, stderr


def test_beam_is_refused_for_a_task_that_does_not_decode(dates_run, monkeypatch):
    out, _ = dates_run
    monkeypatch.setattr(type(get_task("dates")), "decodes", False)  # as the other tasks
    status, _, stderr = run("predict", out, "--beam", "2", "April 22, 2019")
    assert status == 2 and "--beam: the dates task does not decode sequences" in stderr


def test_the_spell_task_spells_digits(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "none"))  # the embedded subset
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "spell"
    status, stdout, stderr = run("train", "--task", "spell", "--units", "16", "--epochs", "1",
                                 "--out", out)
    assert status == 0, stderr
    assert "Test exact match (500 digits): greedy" in stdout
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= last["exact_match"] <= 1
    digits = tmp_path / "digits.npy"
    data, _ = get_task("spell").load_data(get_task("spell").config_class(), split="test",
                                          log=lambda line: None)
    np.save(digits, data.inputs[:2].reshape(2, 784))
    status, stdout, stderr = run("predict", out, digits, "--beam", "2")
    assert status == 0, stderr
    names = [line.split("\t")[0] for line in stdout.splitlines()]
    assert names == [f"{digits}[0]", f"{digits}[1]"]
    words = [line.split("\t")[1] for line in stdout.splitlines()]
    assert all(set(word) <= set("efghinorstuvwxz") for word in words)
