"""layout="auto" on every model of benchmarks/bench_layouts.py (keras-hub Gemma, Llama, Qwen, Qwen-MoE, GPT-2,
BERT in tiny configurations, hub_models.py) on 2 CPU host devices (JAX).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=2 KERAS_BACKEND=jax python structured_auto.py

For each model: trains 10 steps of random tokens with no distribution and under Scale("model_parallel",
mesh=(1, 2), layout="auto"), from the same initial weights. Prints one JSON object, by model: both runs' losses,
the largest difference of a weight, the bytes of the weights and the largest device's
share, and auto's sharding and rule of every variable (scale.describe); for Gemma also the sharding keras-hub's
hand-written `GemmaBackbone.get_layout_map` gives each (on a (1, 2) mesh, data axis first).
"""

import json

import numpy as np

import tfscale as ts

import keras  # noqa: E402  (after tfscale: KERAS_BACKEND=jax is set by the caller)
import keras_hub  # noqa: E402
from hub_models import MIN_SHARD_PARAMS, TINY, batch, task_model  # noqa: E402  (beside this file)

assert keras.config.backend() == "jax", keras.config.backend()
# first, before JAX starts: the Scale makes (and configures) the 2 host devices
scale = ts.Scale("model_parallel", mesh=(1, 2), layout="auto", min_shard_params=MIN_SHARD_PARAMS)


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def train(model, x, y) -> list[float]:
    return [float(model.train_on_batch(x, y)[0]) for _ in range(10)]  # [loss, ...metrics]


def compare(name: str) -> dict:
    x, y = batch(name)
    keras.utils.set_random_seed(0)
    plain = compiled(task_model(name))
    initial = plain.get_weights()
    plain_losses = train(plain, x, y)
    with scale.scope():
        sharded = compiled(task_model(name))
    sharded.set_weights(initial)
    described = scale.describe(sharded)["engine"]
    keras.distribution.set_distribution(scale.engine.keras_distribution)
    sharded_losses = train(sharded, x, y)
    keras.distribution.set_distribution(None)
    return {"plain_losses": plain_losses, "sharded_losses": sharded_losses,
            "weights": [len(plain.weights), len(sharded.weights)],
            "weight_difference": max(float(np.max(np.abs(a - b)))
                                     for a, b in zip(plain.get_weights(), sharded.get_weights())),
            "auto": {row["path"]: {"sharding": row["sharding"], "rule": row["rule"]}
                     for row in described["variables"]},
            "bytes_per_device": described["bytes_per_device"], "bytes": described["bytes"]}


def gemma_hand_axes(paths) -> dict:
    mesh = keras.distribution.DeviceMesh((1, 2), ("data", "model"), keras.distribution.list_devices())
    hand = keras_hub.models.GemmaBackbone.get_layout_map(mesh, model_parallel_dim_name="model",
                                                         data_parallel_dim_name="data")
    found = {}
    for path in paths:
        layout = hand[path]
        found[path] = str(tuple(a if a == "model" else None for a in layout.axes)) if layout is not None else None
    return found


result = {name: compare(name) for name in TINY}
result["gemma"]["hand"] = gemma_hand_axes(result["gemma"]["auto"])
print(json.dumps(result))
