"""Checkpoints: an exact round trip of the whole TrainState, and clear errors for files that are
incomplete, corrupt or written by another configuration."""

import json
import re

import jax
import numpy as np
import pytest

from rnnkit.checkpoint import (CheckpointError, checkpoints, latest_checkpoint,
                               load_checkpoint, save_checkpoint, tree_arrays)
from rnnkit.config import TrainConfig
from rnnkit.train import init_state, make_optimizer, make_train_step, restore

CONFIG = TrainConfig(units=6, batch_size=4, epochs=1, validation_size=2)


def trained_state(config, steps=2):
    """A state whose optimizer moments, step count and PRNG key have all moved on."""
    step = make_train_step(make_optimizer(config))
    images = jax.random.uniform(jax.random.key(5), (4, 784))
    state = init_state(config)
    for _ in range(steps):
        state, _ = step(state, images, np.arange(4))
    return state._replace(epoch=np.int32(1))


def save(folder, state, config=CONFIG, epoch=1):
    return save_checkpoint(folder, state, epoch=epoch, step=int(state.step),
                           config=config.to_dict())


@pytest.mark.parametrize("config", [CONFIG, CONFIG.replace(cell="lstm", layers=2),
                                    CONFIG.replace(cell="gru")], ids=["basic", "lstm2", "gru"])
def test_round_trip_restores_every_leaf_exactly(tmp_path, config):
    state = trained_state(config)
    path = save(tmp_path, state, config)
    loaded, sidecar = load_checkpoint(path, init_state(config))
    assert jax.tree.structure(loaded) == jax.tree.structure(state)
    assert [x.dtype for x in jax.tree.leaves(loaded)] == [x.dtype for x in jax.tree.leaves(state)]
    want, got = tree_arrays(state), tree_arrays(loaded)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert int(loaded.step) == 2 and int(loaded.opt_state[0].count) == 2
    next_key = jax.random.split(loaded.key)[0]  # a usable typed key, equal to the saved one
    assert (jax.random.key_data(next_key) == jax.random.key_data(jax.random.split(state.key)[0])).all()
    assert sidecar["epoch"] == 1 and sidecar["step"] == 2 and sidecar["config"] == config.to_dict()
    assert {".model.cell.w_x" if config.layers == 1 else ".model.cell.cells[1].w_h", ".key",
            ".opt_state[0].mu.dense.b", ".step"} <= {leaf["name"] for leaf in sidecar["leaves"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001.json",
                                                        "epoch-0001.safetensors"]


def test_latest_checkpoint_needs_both_files(tmp_path):
    state = trained_state(CONFIG)
    assert latest_checkpoint(tmp_path) is None and latest_checkpoint(tmp_path / "no") is None
    for epoch in (1, 2, 3):
        save(tmp_path, state, epoch=epoch)
    (tmp_path / "epoch-0003.json").unlink()  # interrupted before the sidecar was renamed
    assert latest_checkpoint(tmp_path).name == "epoch-0002.json"
    assert [p.name for p in checkpoints(tmp_path)] == ["epoch-0002.json", "epoch-0001.json"]
    (tmp_path / "epoch-0002.safetensors").unlink()
    assert latest_checkpoint(tmp_path).name == "epoch-0001.json"


def test_restore_rebuilds_the_state_of_a_run_folder(tmp_path):
    state = trained_state(CONFIG)
    save(tmp_path / "checkpoints", state)
    loaded, config = restore(tmp_path)
    assert config == CONFIG
    np.testing.assert_array_equal(loaded.model.dense.w, state.model.dense.w)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        restore(tmp_path / "checkpoints")


def test_restore_passes_over_a_corrupt_newest_checkpoint_and_says_so(tmp_path):
    state = trained_state(CONFIG)
    for epoch in (1, 2):
        save(tmp_path / "checkpoints", state, epoch=epoch)
    tensors = tmp_path / "checkpoints" / "epoch-0002.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-1])  # cut short
    lines = []
    loaded, config = restore(tmp_path, log=lines.append)
    assert config == CONFIG
    np.testing.assert_array_equal(loaded.model.dense.w, state.model.dense.w)
    assert len(lines) == 1 and lines[0].startswith(f"{tensors}: corrupt or not the file")
    assert lines[0].endswith(f"; using {tmp_path / 'checkpoints' / 'epoch-0001.json'}, the "
                             f"newest intact checkpoint, instead")
    (tmp_path / "checkpoints" / "epoch-0001.json").write_text("{")
    with pytest.raises(CheckpointError, match="epoch-0002.safetensors: corrupt"):  # the newest's
        restore(tmp_path)


@pytest.mark.parametrize("config, needle", [
    (None, 'the checkpoint sidecar has no "config" entry'),
    ({"n_neurons": 150}, r"the sidecar's config is not valid \(n_neurons: unknown"),
    ({"units": 0}, r"the sidecar's config is not valid \(units: expected an integer >= 1"),
])
def test_restore_needs_a_valid_config_in_the_sidecar(tmp_path, config, needle):
    path = save(tmp_path / "checkpoints", trained_state(CONFIG))
    sidecar = json.loads(path.read_text())
    if config is None:
        del sidecar["config"]
    else:
        sidecar["config"] = config
    path.write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: {needle}"):
        restore(tmp_path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    return save(folder, trained_state(CONFIG)), folder


def copy_of(saved, tmp_path):
    path, folder = saved
    tmp_path.mkdir(exist_ok=True)
    for name in (path.name, path.with_suffix(".safetensors").name):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    return tmp_path / path.name


def test_corrupt_tensors_are_detected(saved, tmp_path):
    path = copy_of(saved, tmp_path)
    tensors = path.with_suffix(".safetensors")
    data = bytearray(tensors.read_bytes())
    data[-3] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="epoch-0001.safetensors: corrupt or not the file"):
        load_checkpoint(path, init_state(CONFIG))


@pytest.mark.parametrize("content, needle", [
    ("{", "cannot read the checkpoint sidecar"),
    ('{"format": "other"}', "expected an rnnkit checkpoint sidecar"),
])
def test_bad_sidecars_are_detected(saved, tmp_path, content, needle):
    path = copy_of(saved, tmp_path)
    path.write_text(content)
    with pytest.raises(CheckpointError, match=needle):
        load_checkpoint(path, init_state(CONFIG))


@pytest.mark.parametrize("name", ["../epoch-0001.safetensors", "{outside}", "sub/x", "..", "",
                                  None])
def test_a_sidecar_may_name_only_a_file_next_to_it(saved, tmp_path, name):
    """A valid tensors file outside the checkpoint folder is not read."""
    path = copy_of(saved, tmp_path / "checkpoints")
    outside = tmp_path / "epoch-0001.safetensors"
    outside.write_bytes(path.with_suffix(".safetensors").read_bytes())
    sidecar = json.loads(path.read_text())
    sidecar["tensors"] = name if name != "{outside}" else str(outside)
    path.write_text(json.dumps(sidecar))
    with pytest.raises(CheckpointError, match=f'^{re.escape(str(path))}: "tensors" must name a '
                                              f'file in {re.escape(str(path.parent))} \\(no '
                                              f'folder, no absolute path\\), got'):
        load_checkpoint(path, init_state(CONFIG))


def test_missing_tensors_file_is_detected(saved, tmp_path):
    path = copy_of(saved, tmp_path)
    path.with_suffix(".safetensors").unlink()
    with pytest.raises(CheckpointError, match="cannot read the checkpoint's tensors"):
        load_checkpoint(path, init_state(CONFIG))


@pytest.mark.parametrize("other, needle", [
    (CONFIG.replace(units=7), r"tensor '.model.cell.w_x': expected float32\[28, 7\] from the "
                              r"configuration, got float32\[28, 6\]"),
    (CONFIG.replace(layers=2), r"missing tensors \['.model.cell.cells\[0\].w_x'.*extra "
                               r"tensors \['.model.cell.b'"),
    (CONFIG.replace(cell="gru"), r"missing tensors \['.model.cell.b_h'"),
])
def test_a_checkpoint_of_another_configuration_is_rejected(saved, other, needle):
    with pytest.raises(CheckpointError, match=needle):
        load_checkpoint(saved[0], init_state(other))


def test_sidecar_describes_the_checkpoint(saved):
    sidecar = json.loads(saved[0].read_text())
    assert sidecar["format"] == "rnnkit.checkpoint/1" and sidecar["rnnkit_version"]
    assert sidecar["tensors"] == "epoch-0001.safetensors" and len(sidecar["sha256"]) == 64
    key = next(leaf for leaf in sidecar["leaves"] if leaf["name"] == ".key")
    assert key == {"name": ".key", "shape": [2], "dtype": "uint32"}  # threefry key data
