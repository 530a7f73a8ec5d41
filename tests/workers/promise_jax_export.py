"""A model trained on JAX, exported as a TensorFlow SavedModel (which a TensorFlow-backend process writes).

Usage: KERAS_BACKEND=jax python promise_jax_export.py OUT_DIR
Writes OUT_DIR/saved_model/ and OUT_DIR/data.npz (test inputs and the JAX model's outputs on them); prints one
line of JSON: the backend, the path written and tfscale's log lines about the export.
"""

import json
import logging
import os
import sys

import numpy as np

import tfscale as ts

import keras  # noqa: E402

out = sys.argv[1]
records = []


class Collect(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())


logging.getLogger("tfscale").addHandler(Collect(logging.INFO))
logging.getLogger("tfscale").setLevel(logging.INFO)
assert keras.config.backend() == "jax", keras.config.backend()
rng = np.random.RandomState(0)
x = rng.rand(256, 16).astype("float32")
y = np.argmax(x @ rng.randn(16, 3).astype("float32"), axis=1).astype("int32")

scale = ts.Scale("one_device")
keras.utils.set_random_seed(0)
with scale.scope():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(x, y, epochs=2, batch_size=64, verbose=0)
np.savez(os.path.join(out, "data.npz"), x=x[:32], logits=np.asarray(model.predict(x[:32], verbose=0)))
path = ts.export.saved_model(model, os.path.join(out, "saved_model"))
print(json.dumps({"backend": keras.config.backend(), "path": str(path), "log": records}))
