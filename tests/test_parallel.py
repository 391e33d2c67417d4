"""Data parallelism over the two CPU devices of the test session (conftest.py): the split step
computes the single-device step's numbers, each device draws its own randomness, ``fit`` resolves
and records the device count, and bad counts are refused with the field named."""

import json
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnkit.config import ConfigError, TrainConfig
from rnnkit.evaluate import evaluate
from rnnkit import parallel, speed
from rnnkit.parallel import batch_devices, bounded_queue, data_parallel, use_cpu_cores
from rnnkit import steps as steps_module
from rnnkit import train as train_module
from rnnkit.steps import make_steps, place_data
from rnnkit.train import init_state, make_optimizer, make_train_step
from support import TINY, assert_same_metrics_up_to_rounding, quiet_fit, tiny_datasets

TWO = jax.devices()[:2]


def test_the_session_has_two_cpu_devices_and_the_count_is_fixed_once_jax_ran():
    assert len(jax.devices()) == 2
    assert use_cpu_cores(4) == 2  # JAX has computed already: the count stays


@pytest.mark.parametrize("count", [0, -1, 1.5, True, "2"])
def test_use_cpu_cores_rejects_a_count_that_is_not_a_positive_integer(count):
    with pytest.raises(ValueError, match=rf"^count: expected a positive integer .*got {count!r}"):
        use_cpu_cores(count)


@pytest.mark.parametrize("batch_size, min_examples, expected", [
    (150, 1, 3), (8, 1, 4), (7, 1, 1), (10, 1, 2), (1, 1, 1),  # the most that divide the batch
    (150, 16, 3), (100, 16, 4), (100, 30, 2), (32, 16, 2), (48, 16, 3), (10, 16, 1),
])
def test_batch_devices_takes_the_most_that_divide_the_batch(batch_size, min_examples, expected):
    devices = ["d0", "d1", "d2", "d3"]
    assert batch_devices(batch_size, devices, min_examples=min_examples) == devices[:expected]
    if min_examples == 16:  # the default
        assert batch_devices(batch_size, devices) == devices[:expected]
    assert len(batch_devices(150, [f"d{i}" for i in range(64)])) == 6  # not 50 slivers of 3


@pytest.mark.parametrize("cell, bptt", [("basic", "explicit"), ("lstm", "explicit"),
                                        ("gru", "explicit"), ("lstm", "autodiff")])
def test_the_split_step_computes_the_single_device_step(cell, bptt):
    config = TINY.replace(cell=cell, lr=0.01)
    data = tiny_datasets().train
    runs = {}
    for name, devices in (("one", None), ("two", TWO)):
        step = make_train_step(make_optimizer(config), bptt=bptt, devices=devices)
        state, metrics = init_state(config), []
        for start in (0, 10, 20):
            state, m = step(state, data.images[start:start + 10], data.labels[start:start + 10])
            metrics.append(m)
        runs[name] = state, np.array(metrics)
    (one, metrics_one), (two, metrics_two) = runs["one"], runs["two"]
    assert len(jax.tree.leaves(two.model)[0].devices()) == 2
    np.testing.assert_allclose(metrics_two, metrics_one, rtol=2e-5)
    for a, b in zip(jax.tree.leaves(two.model), jax.tree.leaves(one.model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert int(two.step) == 3


@pytest.mark.parametrize("cell", ["basic", "lstm"])
def test_averaging_as_one_flat_array_gives_the_bits_of_a_mean_per_array(cell, monkeypatch):
    """Only the all-reduce's packing differs, so the runs must agree to the last bit: a change
    of float rounding would send a long training run somewhere else."""
    config = TINY.replace(cell=cell, layers=2, lr=0.01)
    data = tiny_datasets().train
    index = np.arange(40).reshape(4, 10)
    runs = []
    for mean in (parallel._mean_across_devices, lambda t: jax.lax.pmean(t, parallel.AXIS)):
        monkeypatch.setattr(parallel, "_mean_across_devices", mean)
        steps = make_steps(make_optimizer(config), devices=TWO)
        state, *_ = steps(init_state(config), jnp.zeros(2), jnp.asarray(-1, jnp.int32),
                          place_data(data, TWO), index)
        runs.append(jax.tree.leaves((state.model, state.opt_state)))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell, devices", [("basic", None), ("lstm", None), ("gru", TWO),
                                          ("lstm", TWO)])
def test_steps_in_one_call_compute_the_steps_one_by_one(cell, devices):
    config = TINY.replace(cell=cell, lr=0.01)
    data = tiny_datasets().train
    index = np.arange(30).reshape(3, 10)[::-1]  # three batches of 10, in some order
    one_by_one, state = make_train_step(make_optimizer(config), devices=devices), init_state(config)
    for rows in index:
        state, last = one_by_one(state, data.images[rows], data.labels[rows])
    steps = make_steps(make_optimizer(config), devices=devices)
    arrays = place_data(data, devices or jax.devices()[:1])
    got, sums, first_bad, got_last = steps(init_state(config), jnp.zeros(2), jnp.asarray(-1),
                                           arrays, index)
    np.testing.assert_allclose(got_last, np.array(last), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(got.model), jax.tree.leaves(state.model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(got.step) == 3 and int(first_bad) == -1 and np.isfinite(sums).all()


def test_fit_takes_the_same_steps_whatever_the_steps_per_call(monkeypatch, tmp_path):
    calls = []

    def counted(*args, **kwargs):  # records the number of steps of each call
        steps = make_steps(*args, **kwargs)
        return lambda *a: calls.append(len(a[-1])) or steps(*a)

    monkeypatch.setattr(train_module, "make_steps", counted)
    quiet_fit(TINY.replace(epochs=1), tmp_path / "one_call")  # 6 steps an epoch
    monkeypatch.setattr(steps_module, "STEPS_PER_CALL", 4)
    quiet_fit(TINY.replace(epochs=1), tmp_path / "two_calls")
    assert calls == [6, 4, 2]
    assert_same_metrics_up_to_rounding(tmp_path / "one_call", tmp_path / "two_calls",
                                       batch_size=TINY.batch_size)


def test_each_device_draws_from_its_own_key():
    draw = data_parallel(lambda params, x, key: jax.random.uniform(key, ()) + 0 * x.sum(), TWO)
    key = jax.random.key(3)
    mean = jax.jit(draw)(None, jnp.zeros((4, 2)), key)
    each = [jax.random.uniform(jax.random.fold_in(key, d), ()) for d in (0, 1)]
    np.testing.assert_allclose(mean, np.mean(each), rtol=1e-6)
    assert each[0] != each[1]


def test_evaluating_a_replicated_model_gives_the_single_device_numbers():
    config = TINY.replace(cell="lstm")
    step = make_train_step(make_optimizer(config), devices=TWO)
    data = tiny_datasets().train
    state, _ = step(init_state(config), data.images[:10], data.labels[:10])
    single = jax.device_put(state.model, TWO[0])
    assert evaluate(state.model, data.images, data.labels) == evaluate(single, data.images,
                                                                        data.labels)


def test_fit_splits_the_batch_by_default_and_records_the_count(tmp_path):
    quiet_fit(TINY.replace(epochs=1, devices=2), tmp_path / "split")
    quiet_fit(TINY.replace(epochs=1, devices=1), tmp_path / "one")
    assert json.loads((tmp_path / "split" / "config.json").read_text())["devices"] == 2
    assert_same_metrics_up_to_rounding(tmp_path / "split", tmp_path / "one",
                                       batch_size=TINY.batch_size)
    data = tiny_datasets(num_train=100)
    for batch_size, expected in ((50, 2), (10, 1)):  # 16 examples a device at the least
        out = tmp_path / f"auto{batch_size}"
        quiet_fit(TINY.replace(epochs=1, batch_size=batch_size, devices=0), out, datasets=data)
        assert json.loads((out / "config.json").read_text())["devices"] == expected


def test_a_run_may_resume_on_another_device_count(tmp_path):
    quiet_fit(TINY.replace(epochs=1, devices=2), tmp_path)
    _, lines = quiet_fit(TINY.replace(epochs=2, devices=1), tmp_path, resume=True)
    assert lines[0].startswith(f"Resuming {tmp_path} after epoch 1")
    assert json.loads((tmp_path / "config.json").read_text())["devices"] == 1


@pytest.mark.parametrize("changes, needle", [
    (dict(devices=3), "devices: expected at most the 2 cpu devices JAX sees, got 3"),
    (dict(devices=2, batch_size=5), "devices: expected a count that divides batch_size 5 "
     "evenly, got 2"),
])
def test_fit_refuses_a_device_count_that_cannot_split_the_batch(changes, needle, tmp_path):
    with pytest.raises(ConfigError, match=f"^{needle}") as excinfo:
        quiet_fit(TINY.replace(**changes), tmp_path)
    assert excinfo.value.field == "devices"


def test_config_validate_refuses_a_negative_device_count():
    with pytest.raises(ConfigError, match="^devices: expected an integer >= 0, got -1"):
        TrainConfig(devices=-1).validate()


def test_bounded_queue_waits_for_the_call_before_last(monkeypatch):
    waited = []
    monkeypatch.setattr(parallel.jax, "block_until_ready", waited.append)
    step = bounded_queue(lambda n: f"out{n}", depth=2)
    assert [step(n) for n in range(5)] == [f"out{n}" for n in range(5)]
    assert waited == ["out0", "out1", "out2"]  # before calls 2, 3 and 4


def test_bounded_queue_waits_for_the_first_array_of_each_call(monkeypatch):
    waited = []
    monkeypatch.setattr(parallel.jax, "block_until_ready", waited.append)
    step = bounded_queue(lambda n: ({"w": f"w{n}", "b": f"b{n}"}, f"loss{n}"), depth=1)
    for n in range(3):
        step(n)
    assert waited == ["b0", "b1"]  # pytree order: the dict's sorted keys first


def test_the_split_step_takes_placed_batches_as_they_are_and_places_the_others(monkeypatch):
    sharding = parallel.batch_sharding(TWO)
    placed = jax.device_put(np.zeros((4, 3), np.float32), sharding)
    puts = []
    monkeypatch.setattr(steps_module.jax, "device_put",
                        lambda array, where: puts.append(array) or jnp.asarray(array))
    assert steps_module._placed(placed, sharding) is placed
    host = np.ones((4, 3), np.float32)
    steps_module._placed(host, sharding)
    assert len(puts) == 1 and puts[0] is host


def test_thousands_of_queued_split_steps_do_not_deadlock():
    """Unbounded, 2,000 queued steps of this tiny model hung XLA:CPU's all-reduce (the process
    aborts after 40 s); through make_train_step they must finish. A child process keeps a hang
    from taking the test session with it."""
    script = textwrap.dedent("""
        import jax, numpy as np, rnnkit as rk
        rk.use_cpu_cores(2)
        from rnnkit.config import TrainConfig
        from rnnkit.train import init_state, make_optimizer, make_train_step
        config = TrainConfig(units=8, batch_size=10)
        step = make_train_step(make_optimizer(config), devices=jax.devices())
        x, y = np.full((10, 784), 0.5, np.float32), np.arange(10, dtype=np.int32)
        state = init_state(config)
        for _ in range(2000):
            state, metrics = step(state, x, y)
        print(int(state.step), float(metrics[0]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    steps, loss = done.stdout.split()
    assert steps == "2000" and np.isfinite(float(loss))


@pytest.mark.parametrize("devices", [TWO, None])
@pytest.mark.parametrize("cell, layers, bptt, older", [
    ("lstm", 1, "auto", True), ("lstm", 2, "explicit", True), ("lstm", 1, "autodiff", False),
    ("basic", 1, "auto", False), ("gru", 2, "auto", False)])
def test_the_training_loop_of_an_lstm_model_compiles_with_the_older_emitters(
        cell, layers, bptt, older, devices, monkeypatch):
    """speed.py's rule, and make_steps compiling with it (jax.jit is recorded), split across two
    devices or on the default one."""
    config = TINY.replace(cell=cell, layers=layers)
    state = init_state(config)
    expected = speed.OLDER_FUSION_EMITTERS if older else {}
    assert speed.loop_compiler_options(state.model, devices, bptt) == expected
    assert expected == {} or expected == {"xla_cpu_use_fusion_emitters": False}
    jit, options = jax.jit, []

    def recorded(fun, **kwargs):
        options.append(kwargs.get("compiler_options"))
        return jit(fun, **kwargs)

    monkeypatch.setattr(jax, "jit", recorded)
    steps = make_steps(make_optimizer(config), bptt=bptt, devices=devices)
    index = np.arange(20).reshape(2, 10)
    data = place_data(tiny_datasets().train, devices or jax.devices()[:1])
    for _ in range(2):  # compiled once
        state, *_ = steps(state, jnp.zeros(2), jnp.asarray(-1, jnp.int32), data, index)
    assert options == [expected or None]
    assert int(state.step) == 4
