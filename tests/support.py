"""What several test modules share: tiny data, a quiet ``fit``, comparisons of runs, and a
process that holds a run folder. A plain module (test modules import it by name, as pytest puts
``tests/`` on the path) rather than conftest.py, whose fixtures cannot feed ``parametrize``."""

import contextlib
import json
import subprocess
import sys

import numpy as np

from rnnkit.config import TrainConfig
from rnnkit.datasets import DataSet, Datasets
from rnnkit.train import fit

# One device: the data-parallel runs are test_parallel.py's (two devices cost a few seconds more
# per run on two cores).
TINY = TrainConfig(units=8, batch_size=10, epochs=2, validation_size=20, devices=1)


def tiny_datasets(seed=0, num_train=60, num_eval=20):
    """Noise images where a bright row at 2*label+3 tells the class: learnable in a few steps."""
    rng = np.random.default_rng(seed)

    def split(n):
        labels = rng.integers(0, 10, n)
        images = rng.random((n, 28, 28), np.float32) * 0.2
        images[np.arange(n), 2 * labels + 3, :] = 1.0
        return DataSet(images, labels)

    return Datasets(split(num_train), split(num_eval), split(num_eval))


def metric_values(run_dir):
    """metrics.jsonl without the timings, plus final.json."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        del row["seconds"]
    return rows, json.loads((run_dir / "final.json").read_text())


def quiet_fit(config, out_dir, *, datasets=None, resume=False, progress=False,
              data_source=None):
    """``fit`` on ``tiny_datasets()``; returns the result and the lines it logged."""
    lines = []
    result = fit(config, datasets or tiny_datasets(), out_dir=out_dir, resume=resume,
                 data_source=data_source, log=lines.append, progress=progress)
    return result, lines


def assert_same_metrics_up_to_rounding(run_a, run_b, *, batch_size, num_eval=20):
    """Losses within rtol 1e-4; accuracies within one example of the count they average."""
    (rows_a, final_a), (rows_b, final_b) = metric_values(run_a), metric_values(run_b)
    assert len(rows_a) == len(rows_b)
    examples = dict(train_acc=batch_size, train_acc_mean=batch_size * 6, val_acc=num_eval,
                    test_acc=num_eval)  # tiny_datasets: 6 batches an epoch, 20 eval examples
    for a, b in zip(rows_a + [final_a], rows_b + [final_b], strict=True):
        assert a.keys() == b.keys()
        for name in a:
            if "loss" in name:
                np.testing.assert_allclose(a[name], b[name], rtol=1e-4, err_msg=name)
            elif name in examples:
                assert abs(a[name] - b[name]) * examples[name] <= 1 + 1e-6, name
            else:
                assert a[name] == b[name], name


HOLDER = """import sys
from rnnkit.rundir import hold
with hold(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def held_by_another_process(folder):
    """Yields the pid of a Python process that holds ``folder`` until the block ends."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout.readline() == "held\n"
        yield process
    finally:
        if process.poll() is None:
            process.stdin.close()
        process.wait(timeout=60)
