"""Training on tiny data: the model's numbers, the run folder, resume == uninterrupted (also
after a kill at any point of an epoch's end), determinism, divergence, chunked evaluation, and
the checks of the config, the images and the files of a run folder."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnkit import dynamic_rnn, rundir, train
from rnnkit.config import ConfigError, TrainConfig
from rnnkit.datasets import DataSet, Datasets, DatasetError
from rnnkit.evaluate import _chunk_results, evaluate, evaluate_with_probabilities
from rnnkit.model import build_model, loss_and_accuracy, top_hidden
from rnnkit.progress import MetricsError
from rnnkit.train import TrainingDiverged, fit, init_state, make_optimizer, make_train_step
from rnnkit.tasks import mnist as mnist_task
from support import TINY, assert_same_metrics_up_to_rounding, metric_values, quiet_fit
from support import tiny_datasets

RUN_FILES = {"config.json", "metrics.jsonl", "metrics.csv", "learning_curves.png", "final.json",
             "checkpoints"}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 3-epoch run."""
    out = tmp_path_factory.mktemp("straight")
    result, lines = quiet_fit(TINY.replace(epochs=3), out)
    return out, result, lines


# --- the model ------------------------------------------------------------------------------

@pytest.mark.parametrize("cell, layers", [("basic", 1), ("lstm", 1), ("gru", 2), ("lstm", 2)])
def test_logits_are_dense_of_the_top_layers_last_output(cell, layers):
    model = build_model(TINY.replace(cell=cell, layers=layers), key=jax.random.key(1))
    images = jax.random.uniform(jax.random.key(2), (3, 784))
    outputs, state = dynamic_rnn(model.cell, images.reshape(3, 28, 28))
    np.testing.assert_allclose(top_hidden(state), outputs[:, -1], rtol=1e-6)
    expected = outputs[:, -1] @ model.dense.w + model.dense.b  # [B, 10]
    np.testing.assert_allclose(model(images), expected, rtol=1e-5, atol=1e-6)


def test_loss_is_mean_cross_entropy_and_accuracy_top_1():
    model = build_model(TINY, key=jax.random.key(0))
    images = jax.random.uniform(jax.random.key(3), (6, 784))
    labels = jnp.array([0, 1, 2, 3, 4, 5])
    logits = np.asarray(model(images), np.float64)
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss, accuracy = loss_and_accuracy(model, images, labels)
    np.testing.assert_allclose(loss, -log_p[np.arange(6), labels].mean(), rtol=1e-5)
    assert accuracy == np.mean(logits.argmax(1) == np.asarray(labels))


def test_train_step_compiles_once_and_lowers_the_loss():
    config = TINY
    step = make_train_step(make_optimizer(config.replace(lr=0.01)))
    data = tiny_datasets().train
    state = init_state(config)
    losses = []
    for _ in range(5):
        state, (loss, _) = step(state, data.images[:10], data.labels[:10])
        losses.append(float(loss))
    assert step._cache_size() == 1
    assert int(state.step) == 5 and losses[-1] < losses[0]


def test_chunked_evaluation_masks_the_padding_and_compiles_once():
    model = build_model(TINY, key=jax.random.key(0))
    data = tiny_datasets(num_eval=13).validation
    before = _chunk_results._cache_size()
    for n in (13, 7):  # 4 chunks of 4 with 3 padded rows; 2 chunks with 1 padded row
        metrics = evaluate(model, data.images[:n], data.labels[:n], chunk_size=4)
        loss, accuracy = loss_and_accuracy(model, data.images[:n], data.labels[:n])
        np.testing.assert_allclose(metrics, (loss, accuracy), rtol=1e-5)
        same, probabilities = evaluate_with_probabilities(model, data.images[:n],
                                                          data.labels[:n], chunk_size=4)
        assert same == metrics
        np.testing.assert_allclose(probabilities, jax.nn.softmax(model(data.images[:n])),
                                   rtol=1e-5, atol=1e-7)
    assert _chunk_results._cache_size() == before + 1


# --- fit and the run folder --------------------------------------------------------------

def test_fit_writes_the_run_folder(straight):
    out, result, lines = straight
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    assert not [p for p in out.rglob("*.part")]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        f"epoch-000{e}.{ext}" for e in (1, 2, 3) for ext in ("json", "safetensors")]
    book = re.compile(r"\d+\tTraining loss: \d+\.\d{6}\tTraining acc: \d\.\d{6}\t"
                      r"Validation loss: \d+\.\d{6}\tAccuracy: \d+\.\d{2}%")
    assert [line.split("\t")[0] for line in lines if book.fullmatch(line)] == ["1", "2", "3"]
    rows, final = metric_values(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3] == [r["epoch"] for r in result.history]
    csv = (out / "metrics.csv").read_text().splitlines()
    assert csv[0] == ("epoch,train_loss,train_acc,train_loss_mean,train_acc_mean,val_loss,"
                      "val_acc,seconds") and len(csv) == 4
    assert final["test_acc"] == result.test["test_acc"] and final["step"] == 3 * 6
    assert json.loads((out / "config.json").read_text())["out"] == str(out)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]  # it learns


def test_resume_repeats_the_uninterrupted_run_exactly(straight, tmp_path):
    out, result, _ = straight
    quiet_fit(TINY.replace(epochs=1), tmp_path)
    _, lines = quiet_fit(TINY.replace(epochs=3), tmp_path, resume=True)
    assert lines[0].startswith(f"Resuming {tmp_path} after epoch 1 (step 6)")
    assert metric_values(tmp_path) == metric_values(out)
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 4


def test_resume_truncates_metrics_written_after_the_checkpoint(straight, tmp_path):
    quiet_fit(TINY.replace(epochs=2), tmp_path)
    for ext in ("json", "safetensors"):  # as if it crashed before checkpointing epoch 2
        (tmp_path / "checkpoints" / f"epoch-0002.{ext}").unlink()
    quiet_fit(TINY.replace(epochs=3), tmp_path, resume=True)
    assert metric_values(tmp_path) == metric_values(straight[0])


class Killed(Exception):
    """Stands for the process being killed."""


@pytest.mark.parametrize("victim", ["write_metrics", "plot_learning_curves", "save_checkpoint"])
def test_a_run_killed_while_ending_an_epoch_resumes_exactly(straight, tmp_path, monkeypatch,
                                                            victim):
    module = mnist_task if victim == "plot_learning_curves" else train  # the task plots
    real, calls = getattr(module, victim), []

    def dies_in_epoch_2(*args, **kwargs):
        calls.append(victim)
        if len(calls) == 2:  # once per epoch
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(module, victim, dies_in_epoch_2)
    with pytest.raises(Killed):
        quiet_fit(TINY.replace(epochs=3), tmp_path)
    monkeypatch.undo()
    quiet_fit(TINY.replace(epochs=3), tmp_path, resume=True)
    assert metric_values(tmp_path) == metric_values(straight[0])


@pytest.mark.parametrize("edit, needle", [
    (lambda lines: lines[:1] + ["{oops"] + lines[1:], r"metrics.jsonl, line 2: not JSON"),
    (lambda lines: lines + ["[1, 2]"], r"metrics.jsonl, line 4: expected an object with an "
                                       r"integer epoch"),
    (lambda lines: lines[1:], r"metrics.jsonl: expected one row for each of epochs 1 to 3 "
                              r"\(the latest checkpoint's\), got epochs \[2, 3\]"),
])
def test_resume_rejects_a_corrupt_metrics_file(tmp_path, edit, needle):
    quiet_fit(TINY.replace(epochs=3), tmp_path)
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(edit(path.read_text().splitlines())) + "\n")
    with pytest.raises(MetricsError, match=needle):
        quiet_fit(TINY.replace(epochs=4), tmp_path, resume=True)


def test_same_seed_same_metrics_other_seed_other_metrics(straight, tmp_path):
    quiet_fit(TINY.replace(epochs=3), tmp_path / "again", progress=True)  # with the rich bar
    assert metric_values(tmp_path / "again") == metric_values(straight[0])
    quiet_fit(TINY.replace(epochs=1, seed=7), tmp_path / "other")
    assert metric_values(tmp_path / "other")[0][0] != metric_values(straight[0])[0][0]





@pytest.mark.parametrize("cell", ["basic", "lstm", "gru"])
def test_the_default_bptt_and_autodiff_train_the_same_numbers(cell, tmp_path):
    """The default ("auto": the explicit BPTT for the built-in cells) against autodiff."""
    config = TINY.replace(cell=cell, lr=0.01)
    assert config.bptt == "auto"
    for bptt in ("auto", "autodiff"):
        quiet_fit(config.replace(bptt=bptt), tmp_path / bptt)
    assert_same_metrics_up_to_rounding(tmp_path / "auto", tmp_path / "autodiff",
                                       batch_size=config.batch_size)


def test_resume_rejects_a_different_model_bptt_and_fewer_epochs(straight, tmp_path):
    out = straight[0]
    with pytest.raises(ConfigError, match=r"^units: the run in .* was trained with 8, got 9"):
        quiet_fit(TINY.replace(units=9, epochs=3), out, resume=True)
    with pytest.raises(ConfigError, match=r"^bptt: the run in .* was trained with 'auto', "
                                          r"got 'explicit'; only epochs, data_dir, download, out"):
        quiet_fit(TINY.replace(epochs=3, bptt="explicit"), out, resume=True)  # rounding differs
    with pytest.raises(ConfigError, match="^epochs: expected at least the 3 epochs"):
        quiet_fit(TINY.replace(epochs=2), out, resume=True)
    with pytest.raises(ConfigError, match="^out: .* already holds a run"):
        quiet_fit(TINY, out)
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        quiet_fit(TINY, tmp_path / "missing", resume=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="^out: .*file is a file, not a folder"):
        quiet_fit(TINY, tmp_path / "file")


def test_the_data_source_is_recorded_and_may_not_switch_on_resume(tmp_path):
    quiet_fit(TINY.replace(epochs=1), tmp_path / "a", data_source="embedded")
    assert json.loads((tmp_path / "a" / "data.json").read_text()) == {"source": "embedded"}
    with pytest.raises(ConfigError, match=r"^data_dir: the run in .* was trained on the "
                                          r"embedded MNIST subset, got /data/mnist; resume"):
        quiet_fit(TINY.replace(epochs=2), tmp_path / "a", resume=True, data_source="/data/mnist")
    quiet_fit(TINY.replace(epochs=1), tmp_path / "b", data_source="/data/mnist")
    with pytest.raises(ConfigError, match="trained on /data/mnist, got the embedded MNIST"):
        quiet_fit(TINY.replace(epochs=2), tmp_path / "b", resume=True, data_source="embedded")
    quiet_fit(TINY.replace(epochs=2), tmp_path / "b", resume=True, data_source="/moved/mnist")
    assert json.loads((tmp_path / "b" / "data.json").read_text()) == {"source": "/moved/mnist"}


@pytest.mark.parametrize("side", [32, 56])  # 56x56 would run as 112 steps of 28 pixels
def test_fit_rejects_images_that_are_not_28x28(tmp_path, side):
    rng = np.random.default_rng(0)
    split = DataSet(rng.random((60, side, side), np.float32), rng.integers(0, 10, 60))
    with pytest.raises(DatasetError, match=f"^expected train images of 28x28 = 784 pixels .*"
                                           f"got {side * side} pixels \\({side}x{side}\\)"):
        quiet_fit(TINY, tmp_path / "run", datasets=Datasets(split, split, split))
    assert not (tmp_path / "run").exists()


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    quiet_fit(TINY.replace(epochs=1), tmp_path)
    good = (tmp_path / "checkpoints" / "epoch-0001.safetensors").read_bytes()
    poisoned = tiny_datasets()
    poisoned.train.images[:] = np.inf
    with pytest.raises(TrainingDiverged) as excinfo:
        quiet_fit(TINY.replace(epochs=3), tmp_path, resume=True, datasets=poisoned)
    error = excinfo.value
    assert (error.epoch, error.step) == (2, 7)  # the first step of epoch 2
    assert error.checkpoint.name == "epoch-0001.json"
    assert "step 7 (epoch 2)" in str(error) and "epoch-0001.json" in str(error)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch-0001.json", "epoch-0001.safetensors"]
    assert (tmp_path / "checkpoints" / "epoch-0001.safetensors").read_bytes() == good
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


# --- the run folder's rules --------------------------------------------------------------------

def test_fit_holds_its_run_folder_and_leaves_no_hidden_files(tmp_path):
    with rundir.hold(tmp_path):
        with pytest.raises(rundir.RunFolderError, match="is in use by another rnnkit process"):
            quiet_fit(TINY, tmp_path)
        with pytest.raises(rundir.RunFolderError, match="is in use by another rnnkit process"):
            quiet_fit(TINY, tmp_path, resume=True)
    quiet_fit(TINY.replace(epochs=1), tmp_path)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_fit_refuses_a_folder_of_other_files_and_leaves_them_alone(tmp_path):
    (tmp_path / "metrics.csv").write_text("my own measurements")
    with pytest.raises(ConfigError, match=r"^out: .* is not empty and holds no rnnkit run: it "
                                          r"holds metrics.csv; rnnkit trains only into a new or "
                                          r"empty folder"):
        quiet_fit(TINY, tmp_path)
    assert [(p.name, p.read_text()) for p in tmp_path.iterdir()] == [
        ("metrics.csv", "my own measurements")]


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_stopped_before_its_first_checkpoint_starts_over(straight, tmp_path, monkeypatch,
                                                               resume):
    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(train, "save_checkpoint", killed)
    with pytest.raises(Killed):
        quiet_fit(TINY.replace(units=9, epochs=3), tmp_path)
    assert (tmp_path / "metrics.jsonl").exists() and (tmp_path / rundir.MARKER).exists()
    monkeypatch.undo()
    _, lines = quiet_fit(TINY.replace(epochs=3), tmp_path, resume=resume)
    assert lines[:2] == [f"Starting {tmp_path} over: the run there stopped before its first "
                         f"checkpoint", f"Training into {tmp_path}"]
    assert metric_values(tmp_path) == metric_values(straight[0])
    assert not (tmp_path / rundir.MARKER).exists()


def test_resume_passes_over_a_corrupt_newest_checkpoint(straight, tmp_path):
    quiet_fit(TINY.replace(epochs=2), tmp_path)
    tensors = tmp_path / "checkpoints" / "epoch-0002.safetensors"
    tensors.write_bytes(b"\0" * len(tensors.read_bytes()))
    _, lines = quiet_fit(TINY.replace(epochs=3), tmp_path, resume=True)
    assert lines[0].startswith(f"{tensors}: corrupt or not the file its sidecar")
    assert lines[0].endswith("epoch-0001.json, the newest intact checkpoint, instead")
    assert lines[1].startswith(f"Resuming {tmp_path} after epoch 1 (step 6)")
    assert metric_values(tmp_path) == metric_values(straight[0])


def test_resume_without_metrics_goes_on_and_keeps_the_lost_epochs_as_empty_rows(straight,
                                                                                tmp_path):
    quiet_fit(TINY.replace(epochs=2), tmp_path)
    (tmp_path / "metrics.jsonl").unlink()
    _, lines = quiet_fit(TINY.replace(epochs=3), tmp_path, resume=True)
    assert lines[1] == (f"{tmp_path / 'metrics.jsonl'} is missing: resuming from the checkpoint "
                        f"all the same; the metrics of epochs 1 to 2 are lost (their rows hold "
                        f"only the epoch)")
    rows, final = metric_values(tmp_path)
    (straight_rows, straight_final) = metric_values(straight[0])
    assert [row["epoch"] for row in rows] == [1, 2, 3] and set(rows[0].values()) == {1, None}
    assert (rows[2], final) == (straight_rows[2], straight_final)
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1] == "1,,,,,,,"
    quiet_fit(TINY.replace(epochs=4), tmp_path, resume=True)  # and again, from these files
    assert metric_values(tmp_path)[0][:3] == rows


def test_stop_interrupts_fit_between_calls_and_the_run_resumes_exactly(straight, tmp_path):
    calls = []

    def stop():  # asked before each jitted call (one an epoch here), after it and at the end
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(KeyboardInterrupt):
        fit(TINY.replace(epochs=3), tiny_datasets(), out_dir=tmp_path, log=lambda line: None,
            progress=False, stop=stop)
    assert [p.name for p in (tmp_path / "checkpoints").glob("*.json")] == ["epoch-0001.json"]
    quiet_fit(TINY.replace(epochs=3), tmp_path, resume=True)
    assert metric_values(tmp_path) == metric_values(straight[0])


# --- the configuration ---------------------------------------------------------------------

def test_config_defaults_are_the_books_experiment():
    c = TrainConfig()
    assert (c.dataset, c.cell, c.units, c.layers, c.activation, c.epochs, c.batch_size, c.lr,
            c.seed, c.validation_size) == ("mnist", "basic", 150, 1, "tanh", 10, 150, 0.001,
                                           42, 5000)
    assert TrainConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    before_bptt = {k: v for k, v in TINY.to_dict().items() if k != "bptt"}  # an older run
    assert TrainConfig.from_dict(before_bptt).bptt == c.bptt == "auto"
    assert c.devices == 0  # as many as divide the batch


@pytest.mark.parametrize("changes, field, needle", [
    (dict(units=0), "units", "expected an integer >= 1, got 0"),
    (dict(layers=1.5), "layers", "got 1.5"),
    (dict(lr=-1.0), "lr", "positive finite number, got -1.0"),
    (dict(lr=float("nan")), "lr", "got nan"),
    (dict(cell="rnn"), "cell", "expected one of basic, lstm, gru, got 'rnn'"),
    (dict(dataset="cifar"), "dataset", "got 'cifar'"),
    (dict(activation="softmax"), "activation", "got 'softmax'"),
    (dict(cell="gru", activation="relu"), "activation", "only the basic cell"),
    (dict(seed=-1), "seed", ">= 0"),
    (dict(epochs=True), "epochs", "got True"),
    (dict(bptt="scan"), "bptt", "expected one of auto, explicit, autodiff, cudnn, fused, "
     "got 'scan'"),
    (dict(cell="gru", bptt="cudnn"), "bptt", "'cudnn' trains LSTM cells (on a GPU with cuDNN); "
     "got cell 'gru'"),
])
def test_config_validate_names_the_field(changes, field, needle):
    with pytest.raises(ConfigError) as excinfo:
        TINY.replace(**changes).validate()
    assert excinfo.value.field == field and needle in str(excinfo.value)


def test_config_checks_the_batch_against_the_data_and_unknown_fields():
    with pytest.raises(ConfigError, match="batch_size: expected at most the 60 training"):
        TINY.replace(batch_size=61).validate(num_train_examples=60)
    with pytest.raises(ConfigError, match="^n_neurons: unknown configuration field"):
        TrainConfig.from_dict({"n_neurons": 150})
