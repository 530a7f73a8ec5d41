"""The model and data of the JAX tuning test (tests/test_jax_ray_tune.py): a tiny classifier on NumPy arrays.

Every build writes TUNE_JAX_RECORD/<tuner>-<n>.json: the Keras backend, the process-wide Keras distribution
and how many devices the model's first kernel lies on. At its first trial each tuner process leaves
TUNE_JAX_RECORD/<tuner>.started and waits until every tuner in TUNE_JAX_TUNERS has, so each holds a trial.
"""

import json
import os
import time

import keras
import numpy as np

_builds = 0


def build_model(hp):
    global _builds
    _builds += 1
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(hp.Int("units", 4, 16, step=4),
                                                                    activation="relu"), keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-3, 1e-1, sampling="log")),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    _record(model)
    return model


def _record(model):
    folder, tuner = os.environ.get("TUNE_JAX_RECORD"), os.environ.get("KERASTUNER_TUNER_ID", "alone")
    if not folder:
        return
    sharding = getattr(model.weights[0].value, "sharding", None)
    distribution = keras.distribution.distribution()
    with open(os.path.join(folder, f"{tuner}-{_builds}.json"), "w") as f:
        json.dump({"backend": keras.backend.backend(), "build": _builds, "pid": os.getpid(),
                   "distribution": type(distribution).__name__ if distribution else None,
                   "devices": len(sharding.device_set) if sharding is not None else 0}, f)
    if _builds == 2 and tuner.startswith("tuner"):  # build 1 declares the search space; build 2: the first trial
        open(os.path.join(folder, f"{tuner}.started"), "w").close()
        others, deadline = os.environ.get("TUNE_JAX_TUNERS", "").split(","), time.monotonic() + 180
        while not all(os.path.exists(os.path.join(folder, f"{t}.started")) for t in others):
            if time.monotonic() > deadline:
                raise RuntimeError(f"tuners {others} did not all start a trial")
            time.sleep(0.1)


def _data(n, seed):
    rng = np.random.RandomState(seed)
    x = rng.rand(n, 16).astype("float32")
    return x, (x[:, :4].argmax(1)).astype("int32")


def train_data():
    return _data(256, 0)


def validation_data():
    return _data(64, 1)
