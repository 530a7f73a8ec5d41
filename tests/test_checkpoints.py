"""Checkpoints at step granularity, in one process: every N steps, keep K, preemption by a real signal, resume
at the exact next batch, integrity (hash), and the errors before training. Multi-process and elastic resume:
test_checkpoints_cluster.py."""

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

import procs
import tfscale as ts
from tfscale.errors import ConfigError
from tfscale.scale.checkpoint_store import CheckpointStore
from tfscale.scale.preemption import Preempted

EPOCHS, STEPS, BATCH = 3, 6, 8
RNG = np.random.RandomState(0)
X = RNG.rand(STEPS * BATCH, 5).astype("float32")
Y = (X.sum(1) > 2.5).astype("int32")
OPTIONS = {"global_batch_size": BATCH, "optimizer": "sgd", "optimizer_args": {"momentum": 0.9}, "base_lr": 0.1,
           "warmup_steps": 5, "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "seed": 7,
           "verbose": 0}


def build_model():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)])


@pytest.fixture(scope="module")
def scale():
    return ts.Scale("default")


@pytest.fixture(scope="module")
def straight(scale):
    """The uninterrupted run every resumed one must end equal to."""
    return ts.fit(build_model, (X, Y), scale=scale, epochs=EPOCHS, **OPTIONS).model.get_weights()


class SignalAt(keras.callbacks.Callback):
    """Sends this process a real signal at the end of global step `step` (as a platform would)."""

    def __init__(self, step, sig=signal.SIGTERM):
        super().__init__()
        self.step, self.sig, self.seen = step, sig, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            signal.raise_signal(self.sig)


def _names(directory):
    return [i.name for i in CheckpointStore(str(directory)).list()]


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_every_n_steps_keeps_the_newest_k_with_manifests(scale, tmp_path):
    ts.fit(build_model, (X, Y), scale=scale, epochs=2, checkpoint_dir=tmp_path, checkpoint_every_steps=4,
           keep_checkpoints=3, **OPTIONS)
    # steps 4, 8 (= epoch 1 + 2), the end of epoch 1 (6) and of epoch 2 (12): the newest 3 kept
    assert _names(tmp_path) == ["epoch-00002", "epoch-00001-step-0000002", "epoch-00001"]
    assert sorted(os.listdir(tmp_path)) == sorted(f"{n}{ext}" for n in _names(tmp_path) for ext in (".json",
                                                                                                     ".weights.h5"))
    manifest = json.loads((tmp_path / "epoch-00001-step-0000002.json").read_text())
    assert (manifest["epoch"], manifest["step"], manifest["global_step"], manifest["reason"]) == (1, 2, 8, "steps")
    assert (manifest["global_batch_size"], manifest["steps_per_epoch"], manifest["num_replicas"]) == (BATCH, STEPS, 1)
    assert manifest["files"]["epoch-00001-step-0000002.weights.h5"]["bytes"] == \
        os.path.getsize(tmp_path / "epoch-00001-step-0000002.weights.h5")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_a_preemption_signal_saves_at_that_step_and_the_rerun_resumes_there_exactly(scale, straight, tmp_path, sig):
    at = STEPS + 2  # mid-epoch 2
    with pytest.raises(Preempted) as stopped:
        ts.fit(build_model, (X, Y), scale=scale, epochs=EPOCHS, checkpoint_dir=tmp_path, callbacks=[SignalAt(at, sig)],
               **OPTIONS)
    assert stopped.value.code == 143 and stopped.value.signal_name == signal.Signals(sig).name
    # the signal arrives after tfscale's check of step `at`: saved at the end of the next step, nothing lost
    newest = CheckpointStore(str(tmp_path)).list()[0]
    assert (newest.reason, newest.global_step) == ("preemption", at + 1), newest
    assert stopped.value.checkpoint == newest.name == "epoch-00001-step-0000003"
    assert signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler)  # handlers given back
    resumed = ts.fit(build_model, (X, Y), scale=scale, epochs=EPOCHS, checkpoint_dir=tmp_path, **OPTIONS)
    assert (resumed.resumed_from_epoch, resumed.resumed_from_step) == (1, 3)
    assert resumed.history.epoch == [1, 2]  # the rest of epoch 2, then epoch 3
    _assert_same(resumed.model.get_weights(), straight)


def test_resume_from_a_step_checkpoint_skips_exactly_the_batches_trained(scale, straight, tmp_path):
    ts.fit(build_model, (X, Y), scale=scale, epochs=EPOCHS, checkpoint_dir=tmp_path, checkpoint_every_steps=5,
           keep_checkpoints=20, **OPTIONS)
    store = CheckpointStore(str(tmp_path))
    for info in store.list():  # keep only the checkpoint 5 steps in: the run "died" at step 7
        if info.name != "epoch-00000-step-0000005":
            store.remove(info)
    resumed = ts.fit(build_model, (X, Y), scale=scale, epochs=EPOCHS, checkpoint_dir=tmp_path, **OPTIONS)
    assert (resumed.resumed_from_epoch, resumed.resumed_from_step) == (0, 5)
    _assert_same(resumed.model.get_weights(), straight)
    # the same from a tf.data.Dataset (skipped with Dataset.skip)
    import tensorflow as tf

    for info in store.list():
        store.remove(info)
    ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir=tmp_path, checkpoint_every_steps=4, **OPTIONS)
    store.remove(store.list()[0])  # the epoch's end: the step-4 checkpoint is the newest
    dataset = tf.data.Dataset.from_tensor_slices((X, Y))
    resumed = ts.fit(build_model, dataset, scale=scale, epochs=EPOCHS, checkpoint_dir=tmp_path, **OPTIONS)
    assert (resumed.resumed_from_epoch, resumed.resumed_from_step) == (0, 4)
    _assert_same(resumed.model.get_weights(), straight)


def test_a_corrupted_checkpoint_is_skipped_with_a_warning_naming_it(scale, tmp_path, caplog):
    ts.fit(build_model, (X, Y), scale=scale, epochs=2, checkpoint_dir=tmp_path, **OPTIONS)
    newest = tmp_path / "epoch-00002.weights.h5"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit: same size, another hash
    newest.write_bytes(bytes(data))
    (tmp_path / "epoch-00003.weights.h5").write_bytes(b"half a file, never committed")
    with caplog.at_level(logging.WARNING, logger="tfscale"):
        resumed = ts.fit(build_model, (X, Y), scale=scale, epochs=3, checkpoint_dir=tmp_path, **OPTIONS)
    assert resumed.resumed_from_epoch == 1
    assert "checkpoint epoch-00002 is corrupted" in caplog.text and "CRC-32" in caplog.text
    assert _names(tmp_path) == ["epoch-00003", "epoch-00002"]  # rewritten from the good one
    assert CheckpointStore(str(tmp_path)).verify(CheckpointStore(str(tmp_path)).list()[0]) is None


def test_another_global_batch_is_refused_before_training_saying_what_works(scale, tmp_path):
    ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir=tmp_path, **OPTIONS)
    with pytest.raises(ConfigError) as e:
        ts.fit(build_model, (X, Y), scale=scale, epochs=2, checkpoint_dir=tmp_path, **{**OPTIONS,
                                                                                       "global_batch_size": 4})
    message = str(e.value)
    assert "trained with global batch 8, and this run uses 4" in message
    assert "resume with global_batch_size=8" in message and "Where: checkpoint_dir" in message


def test_a_checkpoint_of_another_model_names_the_variable_and_both_shapes(scale, tmp_path):
    ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir=tmp_path, **OPTIONS)

    def wider():
        return keras.Sequential([keras.Input((5,)), keras.layers.Dense(9, activation="relu"), keras.layers.Dense(2)])

    with pytest.raises(ConfigError) as e:
        ts.fit(wider, (X, Y), scale=scale, epochs=2, checkpoint_dir=tmp_path, **OPTIONS)
    message = str(e.value)
    assert "does not fit this model" in message and "(5, 6)" in message and "(5, 9)" in message, message


def test_plain_model_fit_with_scale_callbacks_saves_every_n_steps_and_resumes(scale, tmp_path, caplog):
    x, y = X, Y
    with scale.scope():
        model = build_model()
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    train = scale.distribute((x, y), global_batch_size=BATCH)
    model.fit(train, epochs=2, verbose=0, callbacks=scale.callbacks(checkpoint_dir=tmp_path, checkpoint_every_steps=4,
                                                                    keep_checkpoints=5))
    assert _names(tmp_path) == ["epoch-00002", "epoch-00001-step-0000002", "epoch-00001",
                                "epoch-00000-step-0000004"]
    store = CheckpointStore(str(tmp_path))
    store.remove(store.list()[0])
    with caplog.at_level(logging.WARNING, logger="tfscale"):
        history = model.fit(train, epochs=2, verbose=0, callbacks=scale.callbacks(checkpoint_dir=tmp_path))
    assert history.epoch == [1]  # resumed in epoch 2
    assert "2 step(s) run twice" in caplog.text  # plain fit restarts the epoch; said, not hidden


def test_tfscale_checkpoints_lists_what_will_resume(scale, tmp_path):
    ts.fit(build_model, (X, Y), scale=scale, epochs=2, checkpoint_dir=tmp_path, checkpoint_every_steps=4,
           keep_checkpoints=2, **OPTIONS)
    (tmp_path / "epoch-00002.weights.h5").write_bytes(b"damaged")
    listed = subprocess.run([sys.executable, "-m", "tfscale", "checkpoints", str(tmp_path), "--verify"],
                            capture_output=True, text=True, env=procs.base_env(), timeout=120)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:5] == ["checkpoint", "epochs", "+steps", "step", "why"]
    assert lines[2].split()[:5] == ["epoch-00002", "2", "0", "12", "epoch"] and "NO: " in lines[2]
    assert lines[3].split()[:5] == ["epoch-00001-step-0000002", "1", "2", "8", "steps"] and lines[3].endswith("yes")
    assert lines[-1] == "a restarted run resumes from epoch-00001-step-0000002"
    as_json = json.loads(subprocess.run([sys.executable, "-m", "tfscale", "checkpoints", str(tmp_path), "--json"],
                                        capture_output=True, text=True, env=procs.base_env(), timeout=120).stdout)
    assert [c["global_batch_size"] for c in as_json["checkpoints"]] == [BATCH, BATCH]
    assert "tensorflow" not in subprocess.run(
        [sys.executable, "-c", "import sys; from tfscale.cli import main; main(['checkpoints', sys.argv[1]]); "
                               "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', "
                               "'jax')))", str(tmp_path)],
        capture_output=True, text=True, env=procs.base_env(), timeout=120).stdout.splitlines()[-1]


class SlowSteps(keras.callbacks.Callback):
    """Each step takes `seconds` longer (so a time-based checkpoint comes due within a short run)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def on_train_batch_end(self, batch, logs=None):
        import time

        time.sleep(self.seconds)


def test_every_t_seconds_saves_when_the_time_is_due_at_a_steps_end(scale, tmp_path):
    ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir=tmp_path, checkpoint_every_seconds=0.25,
           keep_checkpoints=20, callbacks=[SlowSteps(0.1)], **OPTIONS)
    infos = CheckpointStore(str(tmp_path)).list()
    timed = sorted(i.global_step for i in infos if i.reason == "seconds")
    assert timed and all(0 < s < STEPS for s in timed), [(i.name, i.reason) for i in infos]
    assert [i.reason for i in infos if i.step == 0] == ["epoch"]
    gaps = [b - a for a, b in zip(timed, timed[1:])]  # (the first step compiles: it may take 0.25 s alone)
    assert all(g >= 2 for g in gaps), timed  # 0.25 s is more than two 0.1 s steps: never at every step
    with pytest.raises(ConfigError, match="checkpoint_every_seconds"):
        ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir=tmp_path, checkpoint_every_seconds=0,
               **OPTIONS)


def test_tfscale_train_saves_every_n_steps_from_the_run_file_overrides(tmp_path):
    ckpt = tmp_path / "ckpt"
    done = subprocess.run([sys.executable, "-m", "tfscale", "train", str(procs.REPO / "examples" / "train" / "digits.toml"),
                           "--set", "train.epochs=1", "--set", f"train.checkpoint_dir={ckpt}",
                           "--set", "train.checkpoint_every_steps=3", "--set", "train.keep_checkpoints=50",
                           "--set", 'export.dir=""'],
                          capture_output=True, text=True, env=procs.base_env(hide=procs.hiding("sklearn")),
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    infos = CheckpointStore(str(ckpt)).list()
    steps = sorted(i.global_step for i in infos if i.reason == "steps")
    assert steps and all(s % 3 == 0 for s in steps), [(i.name, i.reason) for i in infos]


def _arrays():
    return X, Y


def test_shuffled_arrays_of_a_run_file_resume_at_the_exact_batch(scale, tmp_path):
    """`tfscale train`'s data.shuffle_buffer on arrays: an elastic pipeline shuffled per (seed, epoch), so a run
    preempted mid-epoch and resumed ends equal to the uninterrupted run, each epoch in its own order."""
    from tfscale.config.run import DataConfig
    from tfscale.recipes.train import load_data

    config = DataConfig(train=f"{__name__}:_arrays", shuffle_buffer=20, seed=3)
    train, _ = load_data(config)
    assert train.elastic_order, train
    straight = ts.fit(build_model, train, scale=scale, epochs=EPOCHS, **OPTIONS).model.get_weights()
    unshuffled = ts.fit(build_model, (X, Y), scale=scale, epochs=EPOCHS, **OPTIONS).model.get_weights()
    assert not np.allclose(straight[0], unshuffled[0])  # the shuffle took effect
    with pytest.raises(Preempted):
        ts.fit(build_model, load_data(config)[0], scale=scale, epochs=EPOCHS, checkpoint_dir=tmp_path,
               callbacks=[SignalAt(STEPS + 2)], **OPTIONS)
    resumed = ts.fit(build_model, load_data(config)[0], scale=scale, epochs=EPOCHS, checkpoint_dir=tmp_path,
                     **OPTIONS)
    assert (resumed.resumed_from_epoch, resumed.resumed_from_step) == (1, 3)
    _assert_same(resumed.model.get_weights(), straight)


def test_a_manifest_written_with_sha256_before_crc32_is_still_verified_and_resumed_from(scale, tmp_path, caplog):
    """Manifests before CRC-32 held each file's SHA-256: such a checkpoint still verifies, resumes, and a damaged
    one is still found (by its SHA-256)."""
    ts.fit(build_model, (X, Y), scale=scale, epochs=2, checkpoint_dir=tmp_path, **OPTIONS)
    store = CheckpointStore(str(tmp_path))
    for info in store.list():
        manifest = tmp_path / f"{info.name}.json"
        data = json.loads(manifest.read_text())
        for name, entry in data["files"].items():
            assert set(entry) == {"bytes", "crc32"}, entry  # what new manifests hold
            entry.pop("crc32")
            entry["sha256"] = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
        manifest.write_text(json.dumps(data))
    newest, older = store.list()
    assert store.verify(newest) is None and store.verify(older) is None
    weights = tmp_path / f"{newest.name}.weights.h5"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert "SHA-256" in store.verify(newest)
    with caplog.at_level(logging.WARNING, logger="tfscale"):
        resumed = ts.fit(build_model, (X, Y), scale=scale, epochs=3, checkpoint_dir=tmp_path, **OPTIONS)
    assert resumed.resumed_from_epoch == 1 and "SHA-256" in caplog.text  # the older one, verified by its SHA-256


def test_a_capture_keeps_its_step_s_values_while_training_goes_on_and_reused_arrays_hold_the_next_one(tmp_path):
    """`keras_saving.capture` copies the values at its step into the arrays of the last capture whose file is
    written; a capture not yet written is never overwritten: each file equals `save_weights` at its own step."""
    from tfscale.scale import keras_saving

    model = build_model()
    model.compile(optimizer="adam", loss=OPTIONS["loss"])
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)

    def saved(name):  # what Keras writes now, read back
        model.save_weights(tmp_path / name)
        return _h5_values(tmp_path / name)

    keras_saving.capture(model)(str(tmp_path / "walk.weights.h5"))  # the first capture walks the model
    keras_saving.capture(model)(str(tmp_path / "replayed.weights.h5"))  # replayed; its arrays free once written
    first = keras_saving.capture(model)  # into those arrays
    expected_first = saved("first_keras.weights.h5")
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)
    second = keras_saving.capture(model)  # `first` is not written yet: new arrays
    expected_second = saved("second_keras.weights.h5")
    first(str(tmp_path / "first.weights.h5"))
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)
    third = keras_saving.capture(model)  # into `first`'s arrays, written now
    expected_third = saved("third_keras.weights.h5")
    second(str(tmp_path / "second.weights.h5"))
    third(str(tmp_path / "third.weights.h5"))
    for name, expected in (("first", expected_first), ("second", expected_second), ("third", expected_third)):
        got = _h5_values(tmp_path / f"{name}.weights.h5")
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key].shape == expected[key].shape, (name, key)
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}: {key}")
    assert not all(np.array_equal(expected_first[k], expected_third[k]) for k in expected_first)  # training moved


@pytest.mark.parametrize("jit_compile", [False, True])
def test_a_capture_on_tensorflow_holds_views_of_the_variables_and_keeps_its_step_s_values_as_training_goes_on(
        tmp_path, jit_compile):
    """On TensorFlow a replayed capture copies nothing: each value is a view of the tensor its variable holds
    (TensorFlow copies a buffer before it updates a variable whose tensor is still held). Written after 12 more
    steps, eager and compiled by XLA, the file has the capture's own step's values, and a frozen layer (whose
    buffers no step replaces) keeps its weights through later captures."""
    from tfscale.scale import keras_saving

    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="frozen"), keras.layers.Dense(1)])
    model.get_layer("frozen").trainable = False
    model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)
    frozen = [w.copy() for w in model.get_layer("frozen").get_weights()]
    keras_saving.capture(model)(str(tmp_path / "walk.weights.h5"))  # the first capture walks the model
    groups, layout = keras_saving._groups(model)  # replayed
    assert layout is not None
    variables = list(model.variables) + list(model.optimizer.variables)
    held = [array for group in groups for _, array in group.values]
    assert len(held) == len(variables)
    for array, variable in zip(held, variables):
        assert np.shares_memory(array, np.asarray(variable.value.value())), variable.path  # a view, not a copy
    model.save_weights(tmp_path / "keras.weights.h5")
    expected = _h5_values(tmp_path / "keras.weights.h5")
    model.fit(X, Y, batch_size=BATCH, epochs=2, verbose=0)  # the variables are updated 12 times
    keras_saving.write_weights(groups, str(tmp_path / "held.weights.h5"))
    layout.release(groups)
    got = _h5_values(tmp_path / "held.weights.h5")
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key].shape == expected[key].shape, key  # a scalar stays a scalar
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    assert not np.array_equal(got["layers/dense/vars/0"], model.layers[1].get_weights()[0])  # training moved
    keras_saving.capture(model)(str(tmp_path / "later.weights.h5"))
    for before, after in zip(frozen, model.get_layer("frozen").get_weights()):
        np.testing.assert_array_equal(after, before)


def test_a_step_save_writes_over_the_file_of_the_checkpoint_pruned_before_it_and_leaves_no_spare(scale, tmp_path):
    """With keep=2, the weights file of the checkpoint a commit prunes is kept aside (not deleted) and the next save
    writes over it: the same file, still linked, now holding the new checkpoint, whole (its CRC matches) and equal
    to the model at its step. Nothing is left beside the checkpoints when training ends."""
    from tfscale.scale.checkpoint import Checkpoints

    with scale.scope():
        model = build_model()
        model.compile(optimizer="adam", loss=OPTIONS["loss"])
    model.fit(X, Y, batch_size=BATCH, epochs=1, verbose=0)
    folder = tmp_path / "ckpt"
    callbacks = scale.callbacks(checkpoint_dir=str(folder), resume=False, save_on_preemption=False,
                                keep_checkpoints=2,
                                throughput=False, terminate_on_nan=False)
    checkpoints = next(c for c in callbacks if isinstance(c, Checkpoints))
    checkpoints.set_model(model)
    weights = lambda step: folder / f"epoch-00000-step-{step:07d}.weights.h5"  # noqa: E731
    held = {}
    for step in range(1, 6):
        model.fit(X[:BATCH], Y[:BATCH], batch_size=BATCH, epochs=1, verbose=0)  # the values change every save
        checkpoints.save(0, step, "steps")
        checkpoints.wait()
        if step <= 2:
            held[step] = os.open(weights(step), os.O_RDONLY)  # the files saves 4 and 5 must write over
        expected = [w.copy() for w in model.get_weights()]
    try:
        for pruned, new in ((1, 4), (2, 5)):
            assert not weights(pruned).exists()
            old = os.fstat(held[pruned])
            assert old.st_nlink == 1, f"step {pruned}'s file was deleted, not kept for step {new}"
            assert os.path.samestat(old, os.stat(weights(new))), f"step {new} was written to a new file"
        store = CheckpointStore(str(folder))
        assert [info.name for info in store.list()] == ["epoch-00000-step-0000005", "epoch-00000-step-0000004"]
        assert all(store.verify(info) is None for info in store.list())
        other = build_model()
        other.load_weights(weights(5))
        for a, b in zip(other.get_weights(), expected, strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        for fd in held.values():
            os.close(fd)
    checkpoints.on_train_end()
    assert sorted(os.listdir(folder)) == sorted(f"epoch-00000-step-{s:07d}{end}" for s in (4, 5)
                                                for end in (".json", ".weights.h5"))


def test_manifests_hold_zlib_s_crc32_of_each_file_computed_by_isa_l_where_it_is_installed(scale, tmp_path):
    """The CRC-32 is ISA-L's (`isal`, installed with tfscale where it has wheels, as here) and is the value zlib
    gives for the file's bytes: a manifest verifies with either, and with any zlib outside tfscale."""
    import zlib

    from isal import isal_zlib

    from tfscale.scale.checkpoint_store import crc32

    assert crc32() is isal_zlib.crc32
    ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir=str(tmp_path), checkpoint_every_steps=2,
           **OPTIONS)
    infos = CheckpointStore(str(tmp_path)).list()
    assert len(infos) == 2
    for info in infos:
        for name, entry in info.files.items():
            data = (tmp_path / name).read_bytes()
            assert entry == {"bytes": len(data), "crc32": f"{zlib.crc32(data):08x}"}, (info.name, name)


def _h5_values(path):
    import h5py

    values = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: values.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return values
