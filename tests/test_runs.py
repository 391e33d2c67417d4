"""A run folder's TensorBoard events, read back with the TFRecord framing, equal metrics.jsonl
(after a resume too, and one that redoes epochs), and ``rnnkit runs`` lists runs newest first."""

import contextlib
import io
import json
import os
import re
import struct
import sys

import numpy as np
import pytest
from tensorboardX.crc32c import crc32c
from tensorboardX.proto.event_pb2 import Event

from rnnkit.cli import main
from rnnkit.config import TrainConfig
from rnnkit.runs import COLUMNS, list_runs
from rnnkit.progress import METRIC_FIELDS
from rnnkit.tensorboard import EVENT_FILE, tag, write_events
from support import TINY, quiet_fit

# The classifier's TensorBoard tags and the metrics row fields they come from.
SCALARS = {tag(field): field for field in METRIC_FIELDS if field not in ("epoch", "seconds")}


def read_events(path):
    """The events of a TensorBoard file, each record's length and data checked by its CRC."""
    data, events, at = path.read_bytes(), [], 0
    while at < len(data):
        header = data[at:at + 8]
        (length,) = struct.unpack("<Q", header)
        payload = data[at + 12:at + 12 + length]
        crcs = struct.unpack("<II", data[at + 8:at + 12] + data[at + 12 + length:at + 16 + length])
        assert crcs == (masked_crc(header), masked_crc(payload))
        events.append(Event.FromString(payload))
        at += 16 + length
    return events


def masked_crc(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def scalars(events):
    """``{tag: [(step, value), ...]}`` of the summary events."""
    series = {}
    for event in events:
        for value in event.summary.value:
            series.setdefault(value.tag, []).append((event.step, value.simple_value))
    return series


def expected_scalars(rows):
    """What the events should hold: each finite metric at step = epoch, rounded to float32."""
    return {tag: [(row["epoch"], float(np.float32(row[field])))
                  for row in rows if np.isfinite(row[field])] for tag, field in SCALARS.items()}


def metrics_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_events_equal_metrics(run_dir):
    events = read_events(run_dir / EVENT_FILE)
    assert events[0].file_version == "brain.Event:2"
    rows = metrics_rows(run_dir)
    assert [e.step for e in events[1:]] == [row["epoch"] for row in rows]
    assert scalars(events) == expected_scalars(rows)
    return events


def rows_like_fit(values, seconds=(1.5, 2.0, 2.5)):
    """Metrics rows whose every metric is ``values[i]`` in epoch i + 1."""
    return [dict(epoch=i + 1, **{field: value for field in SCALARS.values()}, seconds=s)
            for i, (value, s) in enumerate(zip(values, seconds))]


# --- TensorBoard events -----------------------------------------------------------------------

def test_the_events_of_a_run_and_its_resumption_equal_its_metrics(tmp_path):
    run = tmp_path / "run"
    quiet_fit(TINY.replace(epochs=2), run)
    first = (run / EVENT_FILE).read_bytes()
    assert_events_equal_metrics(run)
    quiet_fit(TINY.replace(epochs=3), run, resume=True)
    events = assert_events_equal_metrics(run)
    # appended, not rewritten: a TensorBoard already reading the file sees the new epochs
    assert (run / EVENT_FILE).read_bytes().startswith(first)
    start, seconds = events[0].wall_time, np.cumsum([r["seconds"] for r in metrics_rows(run)])
    # wall times are doubles near 1.8e9 s, resolved to about 2.4e-7 s
    np.testing.assert_allclose([e.wall_time - start for e in events[1:]], seconds, rtol=0,
                               atol=1e-6)
    test_acc = json.loads((run / "final.json").read_text())["test_acc"]
    assert list_runs(tmp_path) == [("run", "mnist", "basic 1x8 lr=0.001 batch=10", "3/3",
                                    f"val_acc {metrics_rows(run)[-1]['val_acc'] * 100:.2f}%",
                                    f"test_acc {test_acc * 100:.2f}%", "finished")]


def test_a_resume_that_redoes_an_epoch_rewrites_the_events_without_duplicates(tmp_path):
    quiet_fit(TINY.replace(epochs=2), tmp_path)
    for ext in ("json", "safetensors"):  # as if killed after the events of epoch 2
        (tmp_path / "checkpoints" / f"epoch-0002.{ext}").unlink()
    quiet_fit(TINY.replace(epochs=3), tmp_path, resume=True)
    assert_events_equal_metrics(tmp_path)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_write_events_appends_new_epochs_and_rewrites_dropped_ones(tmp_path):
    path = tmp_path / EVENT_FILE
    rows = rows_like_fit([0.5, float("nan"), 0.25])
    write_events(tmp_path, rows[:1])
    inode, start = path.stat().st_ino, read_events(path)[0].wall_time
    write_events(tmp_path, rows[:1])  # nothing new: the file stays as it is
    write_events(tmp_path, rows)
    assert path.stat().st_ino == inode
    events = read_events(path)
    assert [(e.step, e.wall_time - start) for e in events] == [(0, 0), (1, 1.5), (2, 3.5),
                                                               (3, 6.0)]
    assert scalars(events) == {tag: [(1, 0.5), (3, 0.25)] for tag in SCALARS}  # no NaN
    redone = rows_like_fit([0.5, 0.75])
    write_events(tmp_path, redone)
    events = read_events(path)
    assert events[0].wall_time == start and scalars(events) == expected_scalars(redone)
    assert sorted(p.name for p in tmp_path.iterdir()) == [EVENT_FILE]


def test_a_write_cut_short_is_completed_and_a_foreign_file_replaced(tmp_path):
    path, rows = tmp_path / EVENT_FILE, rows_like_fit([0.5, 0.25])
    write_events(tmp_path, rows)
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])
    write_events(tmp_path, rows)
    assert path.read_bytes() == whole
    path.write_bytes(b"not an event file")
    write_events(tmp_path, rows)
    assert scalars(read_events(path)) == expected_scalars(rows)


def test_without_tensorboardx_no_events_are_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX.proto.event_pb2", None)
    write_events(tmp_path, rows_like_fit([0.5]))
    assert not list(tmp_path.iterdir())


# --- rnnkit runs ------------------------------------------------------------------------------

def runs_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["runs", *map(str, argv)])
    return status, out.getvalue(), err.getvalue()


def make_run(folder, age, config=None, rows=(), final=None):
    """A run folder written by hand, its config.json ``age`` seconds old."""
    folder.mkdir()
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config.to_dict())
        (folder / "config.json").write_text(text)
        then = 1_700_000_000 - age
        os.utime(folder / "config.json", (then, then))
    (folder / "metrics.jsonl").write_text("".join(
        row if isinstance(row, str) else json.dumps(row) + "\n" for row in rows))
    if final is not None:
        (folder / "final.json").write_text(json.dumps(final))


def test_runs_lists_every_folder_newest_first_and_says_what_it_cannot_read(tmp_path):
    three = rows_like_fit([0.5, 0.75, 0.875])
    make_run(tmp_path / "lstm", 50, TrainConfig(cell="lstm", layers=2, epochs=3), three,
             {"epoch": 3, "test_acc": 0.8125})
    make_run(tmp_path / "fashion", 10, TrainConfig(dataset="fashion-mnist", cell="gru",
                                                   units=64, lr=0.01, batch_size=50), three[:1])
    make_run(tmp_path / "relu", 40, TrainConfig(activation="relu"))
    make_run(tmp_path / "extended", 30, TrainConfig(epochs=5), three, {"epoch": 2, "test_acc": 1})
    make_run(tmp_path / "torn", 20, TrainConfig(), [three[0], "{oops\n"])
    make_run(tmp_path / "broken", 60, "{oops")
    (tmp_path / "notes").mkdir()  # not a run: it sorts by the folder's own time
    os.utime(tmp_path / "notes", (1_700_000_000 - 70,) * 2)
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "README.txt").write_text("not a run")
    status, out, err = runs_cli(tmp_path)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    table = [re.split(r"\s{2,}", line.strip()) for line in lines]
    assert table[0] == list(COLUMNS)
    assert table[1:] == [
        ["fashion", "fashion-mnist", "gru 1x64 lr=0.01 batch=50", "1/10", "val_acc 50.00%", "-",
         "stopped at epoch 1"],
        ["torn", "-", "-", "-", "-", "-", "unreadable: metrics.jsonl line 2 is not a metrics row"],
        ["extended", "mnist", "basic 1x150 lr=0.001 batch=150", "3/5", "val_acc 87.50%", "-",
         "stopped at epoch 3"],
        ["relu", "mnist", "basic/relu 1x150 lr=0.001 batch=150", "0/10", "-", "-",
         "no epoch yet"],
        ["lstm", "mnist", "lstm 2x150 lr=0.001 batch=150", "3/3", "val_acc 87.50%",
         "test_acc 81.25%",
         "finished"],
        ["broken", "-", "-", "-", "-", "-", "unreadable: config.json is not JSON"],
        ["notes", "-", "-", "-", "-", "-", "unreadable: no config.json"],
    ]
    # aligned: the statuses start in one column, and the test accuracies end 2 spaces before it
    (status_at,) = {line.index(row[-1]) for line, row in zip(lines, table)}
    assert all(line[status_at - 3] != " " and line[status_at - 2:status_at] == "  "
               for line in lines)


def test_runs_in_an_empty_or_missing_folder(tmp_path):
    assert runs_cli(tmp_path) == (0, f"no runs in {tmp_path}\n", "")
    (tmp_path / "file").touch()
    for missing, why in ((tmp_path / "nope", "no such folder"),
                         (tmp_path / "file", "not a folder")):
        status, out, err = runs_cli(missing)
        assert (status, out) == (2, "")
        assert err == f"rnnkit: error: {missing}: {why} of runs\n"


@pytest.mark.parametrize("config, why", [(b"[1, 2]", "config.json is not a JSON object"),
                                         (b"\xff{}", "config.json is not text")])
def test_runs_says_why_a_config_cannot_be_read(tmp_path, config, why):
    make_run(tmp_path / "odd", 0)
    (tmp_path / "odd" / "config.json").write_bytes(config)
    (row,) = list_runs(tmp_path)
    assert row == ("odd", "-", "-", "-", "-", "-", f"unreadable: {why}")
