"""The batch and learning-rate contract, the warmup schedule, `scale.optimizer`, precision, run-file keys."""

import keras
import pytest
import tensorflow as tf

import tfscale as ts
from tfscale.config import TrainConfig, from_mapping
from tfscale.errors import ConfigError
from tfscale.train import WarmupSchedule, plan_batch, precision_policy, resolve_precision, scaled_learning_rate


def test_batch_plan_derives_one_size_from_the_other():
    assert plan_batch(4, global_batch_size=256).per_replica_batch_size == 64
    assert plan_batch(4, per_replica_batch_size=32).global_batch_size == 128
    plan = plan_batch(2, global_batch_size=64, accumulation_steps=4)
    assert (plan.per_replica_batch_size, plan.effective_batch_size) == (32, 256)


def test_global_batch_that_does_not_divide_names_the_nearest_that_do():
    with pytest.raises(ConfigError, match=r"100 does not divide evenly over 3 replicas") as e:
        plan_batch(3, global_batch_size=100)
    assert "99 or 102" in str(e.value)
    with pytest.raises(ConfigError, match="contradicts"):
        plan_batch(2, global_batch_size=64, per_replica_batch_size=16)


def test_learning_rate_scaling_rules():
    assert scaled_learning_rate(0.1, 256, 1024, "linear") == pytest.approx(0.4)
    assert scaled_learning_rate(0.1, 256, 1024, "sqrt") == pytest.approx(0.2)
    assert scaled_learning_rate(0.1, 256, 1024, "none") == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="linear, sqrt, none"):
        scaled_learning_rate(0.1, 256, 1024, "quadratic")


def _values(schedule, steps):
    return [float(keras.ops.convert_to_numpy(schedule(s))) for s in steps]


def test_warmup_ramps_from_the_reference_rate_and_counts_updates():
    schedule = WarmupSchedule(peak_lr=0.4, warmup_steps=4, initial_lr=0.1)
    assert _values(schedule, range(6)) == pytest.approx([0.175, 0.25, 0.325, 0.4, 0.4, 0.4])
    accumulated = WarmupSchedule(peak_lr=0.4, warmup_steps=4, initial_lr=0.1, steps_per_update=2)
    assert _values(accumulated, [0, 1, 2, 3, 7]) == pytest.approx([0.175, 0.175, 0.25, 0.25, 0.4])
    decayed = WarmupSchedule(peak_lr=1.0, warmup_steps=2, decay_steps=4, final_lr=0.0)
    assert _values(decayed, [1, 2, 4, 6, 50]) == pytest.approx([1.0, 1.0, 0.5, 0.0, 0.0], abs=1e-6)


def test_warmup_schedule_serializes_with_the_model(tmp_path):
    schedule = WarmupSchedule(peak_lr=0.2, warmup_steps=10, initial_lr=0.05, decay_steps=100, steps_per_update=2)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, WarmupSchedule) and restored.get_config() == schedule.get_config()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.optimizer._learning_rate.get_config() == schedule.get_config()


def test_scale_optimizer_scales_to_the_distributed_batch():
    scale = ts.Scale("default")
    with pytest.raises(ConfigError, match="global batch size is unknown"):
        scale.optimizer("sgd", base_lr=0.1, base_batch_size=32)
    examples = tf.data.Dataset.range(256).map(lambda i: (tf.cast(i, tf.float32), i))
    scale.distribute(examples, global_batch_size=64)
    scale.distribute(examples, global_batch_size=128, drop_remainder=False)  # evaluation input does not count
    assert float(scale.optimizer("sgd", base_lr=0.1, base_batch_size=32).learning_rate) == pytest.approx(0.2)
    accumulating = scale.optimizer("sgd", base_lr=0.1, base_batch_size=32, gradient_accumulation_steps=4,
                                   warmup_steps=5, momentum=0.9)
    assert accumulating.gradient_accumulation_steps == 4 and accumulating.momentum == 0.9
    assert accumulating._learning_rate.peak_lr == pytest.approx(0.8)  # 64 x 4 examples per update
    with pytest.raises(ConfigError, match="unknown optimizer 'adamm'"):
        scale.optimizer("adamm", base_lr=0.1)
    with pytest.raises(ConfigError, match="rejected its arguments"):
        scale.optimizer("adam", base_lr=0.1, momentum=0.9)
    scale.distribute(tf.data.Dataset.range(10), global_batch_size=5)
    with pytest.raises(ConfigError, match="several global batch sizes"):
        scale.optimizer("sgd", base_lr=0.1, base_batch_size=32)


def test_scale_input_is_what_the_optimizer_and_callbacks_read_when_given_it(tmp_path):
    """`scale.input` returns the batches with what was decided (`DistributedInput`) and leaves nothing behind;
    the optimizer and the callbacks read the one they are given, and without it both follow one rule for the
    training input given to `scale.distribute`."""
    from tfscale.scale.checkpoint import Checkpoints
    from tfscale.scale.throughput import Throughput

    scale = ts.Scale("default")
    examples = tf.data.Dataset.range(256).map(lambda i: (tf.cast(i, tf.float32), i))
    train = scale.input(examples, global_batch_size=64)
    assert (train.global_batch_size, train.per_replica_batch_size, train.steps, train.equal_steps) == (64, 64, 4, True)
    assert [int(x.shape[0]) for x, _ in train.dataset] == [64] * 4
    assert scale.training_batch_size() is None  # passed on explicitly, not recorded
    scale.distribute(examples, global_batch_size=64)
    scale.distribute(tf.data.Dataset.range(10), global_batch_size=5)  # more training input, of another batch
    for where, build in (("scale.optimizer", lambda: scale.optimizer("sgd", base_lr=0.1, base_batch_size=32)),
                         ("scale.callbacks", lambda: scale.callbacks())):
        with pytest.raises(ConfigError, match="several global batch sizes") as e:
            build()
        assert e.value.where.startswith(where)
    optimizer = scale.optimizer("sgd", base_lr=0.1, base_batch_size=32, training_input=train)
    assert float(optimizer.learning_rate) == pytest.approx(0.2)  # 0.1 x 64 / 32
    callbacks = scale.callbacks(training_input=train, checkpoint_dir=str(tmp_path), save_on_preemption=False)
    checkpoints = next(c for c in callbacks if isinstance(c, Checkpoints))
    assert (checkpoints.run["global_batch_size"], checkpoints.run["steps_per_epoch"]) == (64, 4)
    assert next(c for c in callbacks if isinstance(c, Throughput)).global_batch_size == 64


def test_precision_auto_follows_the_hardware_and_policy_is_restored():
    assert resolve_precision("auto", "CPU") == "float32"
    assert resolve_precision("auto", "TPU") == "mixed_bfloat16"
    assert resolve_precision("mixed_float16", "CPU") == "mixed_float16"
    with pytest.raises(ConfigError, match="mixed_bfloat16"):
        resolve_precision("fp16")
    before = keras.config.dtype_policy().name
    with precision_policy("mixed_float16"):
        layer = keras.layers.Dense(2)
    assert (layer.compute_dtype, layer.variable_dtype) == ("float16", "float32")
    assert keras.config.dtype_policy().name == before


def test_train_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*did you mean 'epochs'"):
        from_mapping(TrainConfig, {"epoch": 3}, source="run.toml", prefix="train.")
    with pytest.raises(ConfigError, match=r"'train.global_batch_size' must be a whole number"):
        from_mapping(TrainConfig, {"global_batch_size": "64"}, source="run.toml", prefix="train.")
    with pytest.raises(ConfigError, match="train.precision"):
        TrainConfig(precision="half")
    with pytest.raises(ConfigError, match="train.warmup_steps"):
        TrainConfig(warmup_steps=-1)
    assert from_mapping(TrainConfig, {"base_lr": 1, "jit_compile": "auto"}, source="run.toml").base_lr == 1.0


def test_input_timer_keeps_elements_and_counts_blocked_time():
    import time

    from tfscale.train import InputTimer

    producing = []  # (start, end) of each element's production, on tf.timestamp's clock (wall time)

    def slow(i):
        started = time.time()
        time.sleep(0.02)
        producing.append((started, time.time()))
        return i

    dataset = tf.data.Dataset.range(5).map(lambda i: tf.py_function(slow, [i], tf.int64))
    timer = InputTimer()
    assert [int(v) for v in timer.wrap(dataset)] == [0, 1, 2, 3, 4]
    # nothing prefetches: each element is produced while the consumer waits for it, so the time counted as
    # blocked holds every production span (measured side by side; no absolute bound)
    produced = sum(end - start for start, end in producing)
    assert len(producing) == 5 and timer.read() >= 0.95 * produced, (timer.read(), produced)
    print(f"input timer: {timer.read() * 1e3:.1f} ms blocked, {produced * 1e3:.1f} ms producing")
