"""QAT and pruning with tensorflow-model-optimization run in a separate process; this one stays Keras 3."""

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import tfscale as ts
from tfscale.errors import ConfigError, DataError, ExportError
from tfscale.export.legacy_config import to_legacy


def residual_model():
    """A functional model with a skip connection, so the tf-keras rebuild follows a real graph."""
    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    skip = keras.layers.Conv2D(8, 1, padding="same")(inputs)
    h = keras.layers.Add()([h, skip])
    h = keras.layers.Flatten()(h)
    outputs = keras.layers.Dense(10)(keras.layers.Dense(32, activation="relu")(h))
    return keras.Model(inputs, outputs, name="residual")


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    return (x[:1400], d.target[:1400]), (x[1400:], d.target[1400:])


@pytest.fixture(scope="module")
def trained(digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = residual_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    return model


def test_qat_and_pruning_are_isolated_and_validated_like_the_others(trained, digits, tmp_path):
    train, test = digits
    environ_before = dict(os.environ)
    report = ts.export.quantize_all(trained, tmp_path / "m", eval_data=test, modes=["qat", "prune"],
                                    train_data=train, progress=False, latency_runs=5,
                                    tfmot_options={"epochs": 1, "max_train_samples": 700, "sparsity": 0.5})
    qat, pruned, base = report.row("qat"), report.row("prune"), report.row("float32")
    assert "error" not in qat and "error" not in pruned, (qat.get("error"), pruned.get("error"))
    assert qat["agreement"] >= 0.9 and qat["drop"] <= 3.0 and qat["size_bytes"] < 0.5 * base["size_bytes"]
    assert pruned["sparsity"] == pytest.approx(0.5, abs=0.02) and pruned["value"] > 0.7
    assert len(qat["training_loss"]) == 1 and (tmp_path / "m" / "qat.tflite").exists()
    from ai_edge_litert.interpreter import Interpreter

    assert Interpreter(model_path=qat["path"]).get_input_details()[0]["dtype"] == np.int8
    # The user's process never imported tfmot or tf-keras and is still Keras 3.
    assert "TF_USE_LEGACY_KERAS" not in os.environ and dict(os.environ) == environ_before
    assert "tensorflow_model_optimization" not in sys.modules and "tf_keras" not in sys.modules
    assert keras.__version__.startswith("3.") and tf.keras.layers.Dense is keras.layers.Dense


def test_bad_input_fails_before_any_process_starts(trained, digits, tmp_path):
    (x, y), _ = digits
    with pytest.raises(DataError, match="need labelled training data"):
        ts.export.qat(trained, tmp_path / "q.tflite", train_data=x)

    class Custom(keras.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((4,))
    custom = keras.Model(inputs, keras.layers.Dense(2)(Custom(name="doubler")(inputs)))
    with pytest.raises(ExportError, match="'doubler' .* not a built-in Keras layer"):
        ts.export.qat(custom, tmp_path / "q.tflite", train_data=(np.zeros((8, 4), "float32"), np.zeros(8)),
                      loss="mse")
    with pytest.raises(ConfigError, match="not compiled and no loss"):
        ts.export.prune(residual_model(), tmp_path / "p.tflite", train_data=(x, y))
    with pytest.raises(ConfigError, match="sparsity"):
        ts.export.prune(trained, tmp_path / "p.tflite", train_data=(x, y), sparsity=1.5)
    assert list(tmp_path.iterdir()) == []


def test_keras3_functional_config_becomes_tf_keras_format():
    model = residual_model()
    config = to_legacy(model.get_config())
    layers = {layer["name"]: layer for layer in config["layers"]}
    assert list(layers["image"]["config"]["batch_input_shape"]) == [None, 8, 8, 1]
    assert "batch_shape" not in layers["image"]["config"] and "optional" not in layers["image"]["config"]
    add = next(layer for layer in config["layers"] if layer["class_name"] == "Add")
    # Keras numbers layer names per process, so the names come from this model: the 3x3 conv, then the 1x1 skip
    conv = {layer.kernel_size: layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)}
    assert [ref[:3] for ref in add["inbound_nodes"][0]] == [[conv[(3, 3)], 0, 0], [conv[(1, 1)], 0, 0]], add
    dense = next(layer for layer in config["layers"] if layer["class_name"] == "Dense")
    assert dense["config"]["dtype"] == "float32" and "module" not in dense["config"]["kernel_initializer"]
