"""TensorBoard event files in a run folder, so that ``tensorboard --logdir runs`` shows every
run's curves side by side.

``RUN/events.out.tfevents.rnnkit`` holds, at step = epoch, every metric of every row of
``metrics.jsonl`` (``tag``: ``train_loss`` -> ``train/loss``, ``val_acc`` -> ``val/acc``, a task's
other validation metric ``mse`` -> ``val/mse``). ``write_events`` derives the whole file from the rows: it appends what
is new (what a TensorBoard already reading the file expects) and rewrites the file only when it
holds epochs the rows no longer have (a resumed run redoing the epochs after its checkpoint), so
the events equal the metrics after every epoch. Writing needs the optional ``tensorboardX`` (the
``tensorboard`` extra); without it, no events are written.
"""

import math
import os
import struct
import time
from pathlib import Path

from rnnkit.atomic import atomic_write

EVENT_FILE = "events.out.tfevents.rnnkit"


def tag(field):
    """The TensorBoard tag of a metrics row field; ``train_loss`` is the epoch's last batch's."""
    for prefix in ("train_", "val_"):
        if field.startswith(prefix):
            return prefix[:-1] + "/" + field.removeprefix(prefix)
    return "val/" + field


def _finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def write_events(folder, rows):
    """Makes ``folder/EVENT_FILE`` hold ``rows`` (metrics rows, epochs 1, 2, ...).

    An event's wall time is the run's start (that of the file's first write) plus the epochs'
    ``seconds`` up to it, so TensorBoard's relative axis is training time and the file is a
    function of the rows. Does nothing when tensorboardX is not installed.
    """
    try:
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.proto.summary_pb2 import Summary
        from tensorboardX.record_writer import masked_crc32c
    except ImportError:
        return
    path = Path(folder) / EVENT_FILE
    old = path.read_bytes() if path.exists() else b""
    events = [Event(wall_time=_start_time(Event, old), file_version="brain.Event:2")]
    elapsed = 0.0
    for row in rows:
        elapsed += row["seconds"]
        values = [Summary.Value(tag=tag(field), simple_value=value)
                  for field, value in row.items()
                  if field not in ("epoch", "seconds") and _finite(value)]
        events.append(Event(wall_time=events[0].wall_time + elapsed, step=row["epoch"],
                            summary=Summary(value=values)))
    new = b"".join(_record(event.SerializeToString(), masked_crc32c) for event in events)
    if new.startswith(old):  # also after a write cut short: the rest of its bytes follow
        with open(path, "ab") as out:
            out.write(new[len(old):])
            out.flush()
            os.fsync(out.fileno())
        return
    # Staged under a name without "tfevents": TensorBoard reads any file whose name has it.
    staged = path.with_name(".events.rewrite")
    with atomic_write(staged) as out:
        out.write(new)
    os.replace(staged, path)


def _start_time(event_class, data):
    """The wall time of the first event in ``data`` if it is a file_version event, else now."""
    from google.protobuf.message import DecodeError

    try:
        (length,) = struct.unpack("<Q", data[:8])
        first = event_class.FromString(data[12:12 + length])
    except (struct.error, DecodeError):
        return time.time()
    return first.wall_time if first.file_version else time.time()


def _record(data, masked_crc32c):
    """TFRecord framing: the length (u64), its masked CRC-32C (u32), the data, the data's."""
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))
