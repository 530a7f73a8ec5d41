"""`layout=` as a keras.distribution.LayoutMap and the `axis_names` option, on 2 CPU host devices (JAX).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax python promise_layout_map.py

Prints one JSON object:
  gemma: {path: sharding} of a tiny keras-hub GemmaBackbone placed by keras-hub's own
         `GemmaBackbone.get_layout_map`, under tfscale and under Keras' own ModelParallel with the same map;
         the largest output difference of the two models (same weights); the mesh and bytes per device
  axis_names: the mesh and a kernel's sharding under axis_names=("batch", "model")
  whole: the tfscale warnings of a LayoutMap that leaves a large embedding whole
  errors: {case: "Kind: message"} for layouts that must be refused
"""

import json
import logging

import numpy as np

import tfscale as ts

import keras  # noqa: E402  (after tfscale: KERAS_BACKEND=jax is set by the caller)
import keras_hub  # noqa: E402
from keras import distribution  # noqa: E402

assert keras.config.backend() == "jax", keras.config.backend()
DEVICES = distribution.list_devices()
# The tiny Gemma: 2 layers, 4 heads of 64, hidden 256, feed-forward kernels of 1024 (keras-hub's
# intermediate_dim is the sum of the two gating halves), random initialization: nothing is downloaded.
GEMMA = dict(vocabulary_size=1024, num_layers=2, num_query_heads=4, num_key_value_heads=4, hidden_dim=256,
             intermediate_dim=2048, head_dim=64)


def gemma_map():
    mesh = distribution.DeviceMesh((1, 2), ("batch", "model"), DEVICES)
    return keras_hub.models.GemmaBackbone.get_layout_map(mesh, model_parallel_dim_name="model",
                                                         data_parallel_dim_name="batch")


def shardings(model) -> dict[str, str]:
    return {v.path: str(tuple(v.value.sharding.spec)) for v in model.weights}


def run_gemma(result):
    scale = ts.Scale("model_parallel", layout=gemma_map())
    keras.utils.set_random_seed(0)
    with scale.scope():
        ours = keras_hub.models.GemmaBackbone(**GEMMA)
    described = scale.describe(ours)["engine"]
    with distribution.ModelParallel(layout_map=gemma_map(), batch_dim_name="batch").scope():
        theirs = keras_hub.models.GemmaBackbone(**GEMMA)
    theirs.set_weights(ours.get_weights())
    tokens = {"token_ids": np.arange(32, dtype="int32").reshape(2, 16) % GEMMA["vocabulary_size"],
              "padding_mask": np.ones((2, 16), dtype="int32")}
    difference = float(np.max(np.abs(np.asarray(ours(tokens)) - np.asarray(theirs(tokens)))))
    keras.distribution.set_distribution(None)
    query = next(v for v in described["variables"] if v["path"] == "decoder_block_0/attention/query/kernel")
    result["gemma"] = {"tfscale": shardings(ours), "keras": shardings(theirs), "output_difference": difference,
                       "mesh": described["mesh"], "query_bytes": query["bytes"],
                       "query_bytes_per_device": query["bytes_per_device"]}


def run_axis_names(result):
    scale = ts.Scale("model_parallel", mesh=(1, 2), axis_names=("batch", "model"),
                     layout={".*dense.*kernel": ["", "model"]})
    with scale.scope():
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128)])
    result["axis_names"] = {"mesh": scale.describe(model)["engine"]["mesh"], "kernel": shardings(model),
                            "batch_axis": scale.engine.distribution.batch_dim_name}


class Warnings(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def run_whole(result):
    """A LayoutMap with no mesh of its own (the Scale's is used) and tuples as values; the embedding stays whole."""
    layout = distribution.LayoutMap(None)
    layout[".*dense.*kernel"] = (None, "model")
    caught = Warnings()
    logging.getLogger("tfscale").addHandler(caught)
    scale = ts.Scale("model_parallel", mesh=(1, 2), layout=layout)
    with scale.scope():
        model = keras.Sequential([keras.Input((8,), dtype="int32"), keras.layers.Embedding(1000, 128),
                                  keras.layers.Dense(128)])
    logging.getLogger("tfscale").removeHandler(caught)
    result["whole"] = {"warnings": caught.messages, "shardings": shardings(model)}


def attempt(errors, case, fn):
    try:
        fn()
        errors[case] = "no error"
    except ts.TfscaleError as e:
        errors[case] = f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 -- what the test must not see: a raw error
        errors[case] = f"raw {type(e).__name__}: {e}"
    keras.distribution.set_distribution(None)


def build_gemma(scale, **overrides):
    with scale.scope():
        keras_hub.models.GemmaBackbone(**{**GEMMA, **overrides})


def hand_made(rules):
    layout = distribution.LayoutMap(distribution.DeviceMesh((1, 2), ("batch", "model"), DEVICES))
    for pattern, axes in rules.items():
        layout[pattern] = axes
    return layout


def run_errors(result):
    errors = {}
    attempt(errors, "other_mesh_shape", lambda: ts.Scale("model_parallel", mesh=(2, 1), layout=gemma_map()))
    attempt(errors, "other_axis_names", lambda: ts.Scale("model_parallel", axis_names=("x", "y"), layout=gemma_map()))
    one_device = distribution.DeviceMesh((1, 1), ("batch", "model"), DEVICES[:1])
    attempt(errors, "other_devices", lambda: ts.Scale("model_parallel", layout=distribution.LayoutMap(one_device)))
    unmeshed = distribution.LayoutMap(None)  # Keras checks axis names itself where the map has a mesh
    unmeshed[".*dense.*kernel"] = (None, "modle")
    attempt(errors, "axis_not_in_mesh", lambda: ts.Scale("model_parallel", mesh=(1, 2), layout=unmeshed))
    other = distribution.DeviceMesh((2, 1), ("batch", "model"), DEVICES)
    attempt(errors, "layout_on_other_mesh", lambda: ts.Scale("model_parallel", layout=hand_made(
        {".*dense.*kernel": distribution.TensorLayout((None, "model"), other)})))
    attempt(errors, "indivisible", lambda: build_gemma(ts.Scale("model_parallel", layout=gemma_map()),
                                                       vocabulary_size=1023))

    def matches_nothing():
        scale = ts.Scale("model_parallel", layout=hand_made({".*conv.*kernel": (None, None, None, "model"),
                                                              ".*dense.*kernel": (None, "model")}))
        with scale.scope():
            keras.Sequential([keras.Input((64,)), keras.layers.Dense(128)])

    attempt(errors, "matches_nothing", matches_nothing)
    attempt(errors, "rule_axis_not_in_named_axes", lambda: ts.Scale(
        "model_parallel", mesh=(1, 2), axis_names=("batch", "model"), layout={".*dense.*kernel": ["data", "model"]}))
    result["errors"] = errors


result = {}
run_gemma(result)
run_axis_names(result)
run_whole(result)
run_errors(result)
print(json.dumps(result))
