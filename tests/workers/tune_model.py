"""The model and data of the tuning tests: a tiny digits classifier, and hooks the tests steer by environment.

TUNE_TEST_SYNC (a folder): each tuner process, at its first trial, leaves
``<tuner id>.started`` there and waits until every tuner named in
TUNE_TEST_TUNERS has too, so every tuner holds a trial at once.
TUNE_TEST_DIE (a tuner id): that tuner kills itself (SIGKILL) holding its first trial.
"""

import os
import signal
import time

import keras
import numpy as np
import tensorflow as tf

_builds = 0


def build_model(hp):
    global _builds
    _builds += 1
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(hp.Int("units", 8, 64, step=8), activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 2e-3, 5e-2, sampling="log")),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    if _builds == 2:  # build 1 declares the search space; build 2 is this process's first trial
        _first_trial()
    return model


def _first_trial():
    tuner, sync = os.environ.get("KERASTUNER_TUNER_ID", ""), os.environ.get("TUNE_TEST_SYNC")
    if not sync or not tuner.startswith("tuner"):
        return
    open(os.path.join(sync, f"{tuner}.started"), "w").close()
    if tuner == os.environ.get("TUNE_TEST_DIE"):
        os.kill(os.getpid(), signal.SIGKILL)
    others = os.environ.get("TUNE_TEST_TUNERS", "").split(",")
    deadline = time.monotonic() + 180
    while not all(os.path.exists(os.path.join(sync, f"{t}.started")) for t in others):
        if time.monotonic() > deadline:
            raise RuntimeError(f"tuners {others} did not all start a trial")
        time.sleep(0.1)


def load_data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    order = np.random.RandomState(0).permutation(len(x))
    x, y = x[order], y[order]
    n = 1280
    return (tf.data.Dataset.from_tensor_slices((x[:n], y[:n])),
            tf.data.Dataset.from_tensor_slices((x[n:], y[n:])))


def train_data():
    return load_data()[0]


def validation_data():
    return load_data()[1]
