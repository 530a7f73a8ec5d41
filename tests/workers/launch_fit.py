"""A worker for the launcher's tests: Keras 3 `fit` through `Scale.auto()`, weights saved per rank.

Usage: python launch_fit.py OUT_DIR STEPS [--hold] [--spawn-child]

Writes OUT_DIR/rank-<TFSCALE_RANK>.npz (initial and final weights, replicas,
the launcher's variables). --hold: after the first step, write
OUT_DIR/training-<rank>.json (pid, process group, child pid) and keep
training slowly until killed. --spawn-child: start a `sleep` child first,
to check the launcher leaves no grandchild behind.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np

out_dir, steps = sys.argv[1], int(sys.argv[2])
hold, spawn_child = "--hold" in sys.argv, "--spawn-child" in sys.argv

import tfscale as ts  # noqa: E402

scale = ts.Scale.auto()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

child = subprocess.Popen(["sleep", "600"]) if spawn_child else None
rank = int(os.environ["TFSCALE_RANK"])
GLOBAL_BATCH = 24
rng = np.random.RandomState(0)
x = rng.rand(steps * GLOBAL_BATCH, 8, 8, 1).astype("float32")
y = (x.reshape(len(x), -1)[:, :32].sum(1) > 16).astype("int32")
train = scale.distribute(tf.data.Dataset.from_tensor_slices((x, y)).repeat(), global_batch_size=GLOBAL_BATCH)

keras.utils.set_random_seed(1)
with scale.scope():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
initial = model.get_weights()


class Hold(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            marker = {"pid": os.getpid(), "pgid": os.getpgid(0), "child": child.pid if child else None}
            with open(os.path.join(out_dir, f"training-{rank}.json.tmp"), "w") as f:
                json.dump(marker, f)
            os.replace(os.path.join(out_dir, f"training-{rank}.json.tmp"),
                       os.path.join(out_dir, f"training-{rank}.json"))
        time.sleep(0.2)


model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[Hold()] if hold else [])
np.savez(os.path.join(out_dir, f"rank-{rank}.npz"), num_replicas=scale.num_replicas, strategy=scale.name,
         restart=int(os.environ["TFSCALE_RESTART"]), world=int(os.environ["TFSCALE_WORLD_SIZE"]),
         collective_timeout=scale.config.collective_timeout or 0.0,
         **{f"init{i}": w for i, w in enumerate(initial)}, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
print(f"{scale!r} done")
