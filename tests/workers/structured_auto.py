"""layout="auto" by structure on a real model: a tiny keras-hub GemmaCausalLM on 2 CPU host devices (JAX).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax python structured_auto.py

Trains 10 steps of random tokens with no distribution and under Scale("model_parallel", mesh=(1, 2),
layout="auto"), from the same initial weights. Prints one JSON object: both runs' losses, the largest weight
difference relative to each weight's scale, auto's sharding and rule of every variable (scale.describe), and the
sharding keras-hub's hand-written `GemmaBackbone.get_layout_map` gives each (on a (1, 2) mesh, data axis first).
"""

import json

import numpy as np

import tfscale as ts

import keras  # noqa: E402  (after tfscale: KERAS_BACKEND=jax is set by the caller)
import keras_hub  # noqa: E402

assert keras.config.backend() == "jax", keras.config.backend()
GEMMA = dict(vocabulary_size=1024, num_layers=2, num_query_heads=4, num_key_value_heads=4, hidden_dim=256,
             intermediate_dim=2048, head_dim=64)
rng = np.random.default_rng(0)
tokens = rng.integers(0, GEMMA["vocabulary_size"], (8, 17)).astype("int32")
X = {"token_ids": tokens[:, :16], "padding_mask": np.ones((8, 16), "int32")}
Y = tokens[:, 1:]


def build():
    model = keras_hub.models.GemmaCausalLM(backbone=keras_hub.models.GemmaBackbone(**GEMMA), preprocessor=None)
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def train(model) -> list[float]:
    return [float(model.train_on_batch(X, Y)[0]) for _ in range(10)]  # [loss, ...metrics]


keras.utils.set_random_seed(0)
plain = build()
initial = plain.get_weights()
plain_losses = train(plain)

scale = ts.Scale("model_parallel", mesh=(1, 2), layout="auto")
with scale.scope():
    sharded = build()
sharded.set_weights(initial)
described = scale.describe(sharded)["engine"]
keras.distribution.set_distribution(scale.engine.keras_distribution)
sharded_losses = train(sharded)
keras.distribution.set_distribution(None)

mesh = keras.distribution.DeviceMesh((1, 2), ("data", "model"), keras.distribution.list_devices())
hand = keras_hub.models.GemmaBackbone.get_layout_map(mesh, model_parallel_dim_name="model",
                                                     data_parallel_dim_name="data")
hand_axes = {}
for v in sharded.weights:
    layout = hand[v.path]
    hand_axes[v.path] = str(tuple(a if a == "model" else None for a in layout.axes)) if layout is not None else None

print(json.dumps({
    "plain_losses": plain_losses, "sharded_losses": sharded_losses,
    "weight_difference": max(float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-12))
                             for a, b in zip(plain.get_weights(), sharded.get_weights())),
    "auto": {row["path"]: {"sharding": row["sharding"], "rule": row["rule"]} for row in described["variables"]},
    "hand": hand_axes, "bytes_per_device": described["bytes_per_device"], "bytes": described["bytes"]}))
