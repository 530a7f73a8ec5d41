"""`tfscale.fit` in one process: resume, checkpoints written then renamed, NaN guard, throughput, bad input."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfscale as ts
from tfscale.config.functions import load_function
from tfscale.errors import ConfigError, DataError
from tfscale.scale.checkpoint import list_checkpoints
from tfscale.train import TrainingError
from tfscale.train.loading import make_model

STEPS, BATCH = 6, 8
RNG = np.random.RandomState(0)
X = RNG.rand(STEPS * BATCH, 5).astype("float32")
Y = (X.sum(1) > 2.5).astype("int32")
OPTIONS = {"global_batch_size": BATCH, "optimizer": "sgd", "optimizer_args": {"momentum": 0.9}, "base_lr": 0.1,
           "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "seed": 7, "verbose": 0}


def build_model():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)])


@pytest.fixture(scope="module")
def scale():
    return ts.Scale("default")


def _weights(result):
    return result.model.get_weights()


def test_resumed_run_ends_where_an_uninterrupted_one_does(scale, tmp_path):
    straight = ts.fit(build_model, (X, Y), scale=scale, epochs=4, **OPTIONS)
    first = ts.fit(build_model, (X, Y), scale=scale, epochs=2, checkpoint_dir=tmp_path / "ckpt", **OPTIONS)
    assert [e for e, _ in list_checkpoints(str(tmp_path / "ckpt"))] == [2, 1]
    resumed = ts.fit(build_model, (X, Y), scale=scale, epochs=4, checkpoint_dir=tmp_path / "ckpt", **OPTIONS)
    assert (first.resumed_from_epoch, resumed.resumed_from_epoch) == (0, 2)
    assert len(resumed.history.epoch) == 2
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert [e for e, _ in list_checkpoints(str(tmp_path / "ckpt"))] == [4, 3]  # keep_checkpoints=2


def test_a_corrupt_newest_checkpoint_falls_back_and_partial_files_go(scale, tmp_path):
    ckpt = tmp_path / "ckpt"
    ts.fit(build_model, (X, Y), scale=scale, epochs=2, checkpoint_dir=ckpt, **OPTIONS)
    (ckpt / "epoch-00002.weights.h5").write_bytes(b"half a file")  # damaged after its commit: hash mismatch
    (ckpt / ".tmp-123-epoch-00003.weights.h5").write_bytes(b"partial")  # a crash mid-write
    (ckpt / "epoch-00004.weights.h5").write_bytes(b"uploaded, never committed")  # no manifest
    resumed = ts.fit(build_model, (X, Y), scale=scale, epochs=3, checkpoint_dir=ckpt, **OPTIONS)
    assert resumed.resumed_from_epoch == 1
    assert sorted(os.listdir(ckpt)) == ["epoch-00002.json", "epoch-00002.weights.h5", "epoch-00003.json",
                                        "epoch-00003.weights.h5"]


def test_checkpoint_of_another_model_is_an_error_not_a_silent_half_restore(scale, tmp_path):
    ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir=tmp_path, **OPTIONS)
    other = {**OPTIONS, "optimizer": "adam", "optimizer_args": {}}
    with pytest.raises(ConfigError, match="does not fit this model and optimizer"):
        ts.fit(build_model, (X, Y), scale=scale, epochs=2, checkpoint_dir=tmp_path, **other)
    fresh = ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir=tmp_path, resume=False, **other)
    assert fresh.resumed_from_epoch == 0


class PoisonWeights(keras.callbacks.Callback):
    """Makes the loss NaN from the third step of the second epoch on."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 1 and batch == 2:
            kernel = self.model.layers[-1].kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def test_nan_loss_stops_at_once_naming_the_step_and_keeps_the_last_good_checkpoint(scale, tmp_path):
    with pytest.raises(TrainingError, match=r"epoch 2, step 3 of the epoch \(step 9 of this run\)"):
        ts.fit(build_model, (X, Y), scale=scale, epochs=3, checkpoint_dir=tmp_path, callbacks=[PoisonWeights()],
               **OPTIONS)
    assert [e for e, _ in list_checkpoints(str(tmp_path))] == [1]
    model = build_model()
    model.load_weights(str(tmp_path / "epoch-00001.weights.h5"))
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_unwritable_checkpoint_folder_is_a_clear_error(scale, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"a_file is a file, so the folder .*a_file/ckpt cannot exist") as e:
        ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir=tmp_path / "a_file" / "ckpt", **OPTIONS)
    assert "Where: checkpoint_dir" in str(e.value)


def test_throughput_figures_and_tensorboard_logs(scale, tmp_path):
    result = ts.fit(build_model, (X, Y), scale=scale, epochs=2, tensorboard_dir=tmp_path / "tb", **OPTIONS)
    figures = result.throughput
    assert figures["epoch"] == 2 and figures["steps"] == STEPS - 1  # the epoch's first step is left out
    assert figures["examples_per_second"] == pytest.approx(figures["steps_per_second"] * BATCH)
    assert figures["examples_per_second_per_replica"] == pytest.approx(figures["examples_per_second"])
    assert 0.0 <= figures["input_wait_fraction"] <= 1.0
    assert result.batch.global_batch_size == BATCH and result.precision == "float32"
    # TensorBoard holds this run's losses: epoch_loss at epochs 0 and 1, the values Keras' history has
    logged = {}
    for name in os.listdir(tmp_path / "tb" / "train"):
        for event in tf.compat.v1.train.summary_iterator(str(tmp_path / "tb" / "train" / name)):
            for value in event.summary.value:
                if value.tag == "epoch_loss":
                    logged[event.step] = float(tf.make_ndarray(value.tensor))
    assert sorted(logged) == [0, 1], logged
    assert [logged[0], logged[1]] == pytest.approx(result.history.history["loss"], rel=1e-6)


def test_bad_calls_are_errors_naming_what_to_change(scale):
    with pytest.raises(ConfigError, match=r"unknown tfscale.fit option\(s\) \['epoch'\]"):
        ts.fit(build_model, (X, Y), scale=scale, epoch=3, **OPTIONS)
    with pytest.raises(ConfigError, match="no loss given"):
        ts.fit(build_model, (X, Y), scale=scale, **{**OPTIONS, "loss": None})
    with pytest.raises(ConfigError, match="'sparse_crossentropyy' is not a Keras loss"):
        ts.fit(build_model, (X, Y), scale=scale, **{**OPTIONS, "loss": "sparse_crossentropyy"})
    with pytest.raises(DataError, match="train_data is a list"):
        ts.fit(build_model, [X, Y], scale=scale, **OPTIONS)
    with pytest.raises(ConfigError, match="returned int, not a Keras model"):
        ts.fit(lambda: 42, (X, Y), scale=scale, **OPTIONS)


def test_module_function_names_that_do_not_resolve():
    with pytest.raises(ConfigError, match="no module named 'no_such_module_xyz'"):
        load_function("no_such_module_xyz.models:build", where="model")
    with pytest.raises(ConfigError, match="closest names it has: dump, dumps"):
        load_function("json:dumpz", where="model")
    with pytest.raises(ConfigError, match="not of the form 'module:function'"):
        load_function("tfscale.recipes.digits", where="model")
    with pytest.raises(ConfigError, match="is a float, not a function"):
        load_function("math:pi", where="model")
    assert isinstance(make_model("tfscale.recipes.digits:build_model"), keras.Model)
