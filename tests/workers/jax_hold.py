"""A JAX worker that keeps training slowly until it is stopped: the failure cases of tests/test_jax_hosts.py.

Usage: python jax_hold.py OUT_DIR
After its first step each worker writes OUT_DIR/training-<rank>.json ({"pid": ...}), then trains one step every
0.2 s (a collective each; 1,000 steps an epoch, 100 epochs) until it is stopped. Run under
`tfscale launch --backend jax`.
"""

import json
import os
import sys
import time

import numpy as np

out_dir = sys.argv[1]

import tfscale as ts  # noqa: E402

scale = ts.Scale.auto()

import keras  # noqa: E402

STEPS, GLOBAL_BATCH = 1000, 8
rng = np.random.RandomState(0)
x = rng.rand(STEPS * GLOBAL_BATCH, 6).astype("float32")
y = (x.sum(1) > 3).astype("int32")


class Hold(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            marker = os.path.join(out_dir, f"training-{scale.rank}.json")
            with open(marker + ".tmp", "w") as f:
                json.dump({"pid": os.getpid()}, f)
            os.replace(marker + ".tmp", marker)
        time.sleep(0.2)


with scale.scope():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(scale.distribute((x, y), global_batch_size=GLOBAL_BATCH), epochs=100, verbose=0, callbacks=[Hold()])
