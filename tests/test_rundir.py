"""The run folder's rules: one process at a time (an OS lock that dies with its process), new
runs only into new, empty or rnnkit-marked folders, and a resume without metrics.jsonl."""

import errno
import os
import signal
import tempfile

import pytest

from rnnkit import rundir
from rnnkit.config import ConfigError
from rnnkit.rundir import RunFolderError, check_new, hold, read_history
from support import held_by_another_process




def test_a_run_folder_is_held_by_one_process_and_freed_when_it_is_killed(tmp_path):
    with held_by_another_process(tmp_path) as holder:
        with pytest.raises(RunFolderError, match=f"^{tmp_path} is in use by another rnnkit "
                                                 f"process \\(pid {holder.pid}\\); wait"):
            with hold(tmp_path):
                pass
        holder.send_signal(signal.SIGKILL)  # its lock file stays; its lock goes with it
        holder.wait(timeout=60)
        assert (tmp_path / ".lock").exists()
        with hold(tmp_path):
            assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
    assert list(tmp_path.iterdir()) == []  # removed on release


def test_one_process_cannot_hold_a_folder_twice(tmp_path):
    with hold(tmp_path):
        with pytest.raises(RunFolderError, match=f"\\(pid {os.getpid()}\\)"):
            with hold(tmp_path):
                pass
    with hold(tmp_path):  # released, also after the failed attempt
        pass


def test_hold_names_a_missing_or_unwritable_folder(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="missing: no such run folder"):
        with hold(tmp_path / "missing"):
            pass
    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if str(dir) == str(tmp_path):
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(RunFolderError, match=f"^{tmp_path}: the run folder is not writable "
                                             f"\\(Read-only file system\\); make it writable"):
        with hold(tmp_path):
            pass


def test_a_new_run_goes_only_into_a_new_empty_or_marked_folder(tmp_path):
    assert check_new(tmp_path / "new") is False
    assert check_new(tmp_path) is False
    (tmp_path / ".lock").write_text("")  # a lock file alone is no run
    assert check_new(tmp_path) is False
    (tmp_path / rundir.MARKER).write_text("")
    (tmp_path / "config.json").write_text("{}")
    assert check_new(tmp_path) is True  # a run stopped before its first checkpoint
    (tmp_path / "checkpoints").mkdir()
    for name in ("epoch-0002.json", "epoch-0002.safetensors", "final.json"):
        (tmp_path / "checkpoints" / name).write_text("")
    with pytest.raises(ConfigError, match=r"^out: .* already holds a run \(stopped after epoch "
                                          r"2\); continue it with rnnkit train --resume"):
        check_new(tmp_path)


def test_a_folder_of_other_files_is_refused_by_name(tmp_path):
    for name in ("notes.txt", "data.csv", "b", "c", "d"):
        (tmp_path / name).write_text("mine")
    with pytest.raises(ConfigError, match=r"^out: .* is not empty and holds no rnnkit run: it "
                                          r"holds b, c, d and 2 more; .*nothing was written"):
        check_new(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="file is a file, not a folder"):
        check_new(tmp_path / "file")


def test_new_run_writes_nothing_into_a_folder_that_is_not_rnnkits(tmp_path):
    (tmp_path / "config.json").write_text("my own config")
    with pytest.raises(ConfigError, match="holds config.json;"):
        with rundir.new_run(tmp_path, log=print):
            pass
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_resume_without_metrics_keeps_the_lost_epochs_as_empty_rows(tmp_path):
    lines = []
    rows = read_history(tmp_path, 2, log=lines.append)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(value is None for row in rows for name, value in row.items() if name != "epoch")
    assert lines == [f"{tmp_path / 'metrics.jsonl'} is missing: resuming from the checkpoint "
                     f"all the same; the metrics of epochs 1 to 2 are lost (their rows hold "
                     f"only the epoch)"]
