"""One worker of the uneven-shards test: fit 2 epochs on files that split unevenly over 2 workers.

Usage: python data_uneven.py OUT_DIR KIND SRC
KIND "images": SRC is an image folder (FILE plan); "csv": SRC is a CSV glob (slices plan).
Writes OUT_DIR/<kind>.<task index>.npz with the final weights and the steps run per epoch.
"""

import json
import os
import sys

out, kind, src = sys.argv[1], sys.argv[2], sys.argv[3]

import tfscale as ts  # noqa: E402

scale = ts.Scale("multi_worker")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if kind == "images":
    pipe = ts.data.image_folder(src, image_size=(8, 8)).shuffle(64, seed=3)
    model_input = keras.Input((8, 8, 3))
    layers = [keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(2)]
else:
    pipe = ts.data.csv(src, label="label").map(lambda f, y: (tf.stack([f["x"]]), y)).shuffle(64)
    model_input = keras.Input((1,))
    layers = [keras.layers.Dense(3)]


class Steps(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


keras.utils.set_random_seed(1)
with scale.scope():
    model = keras.Sequential([model_input, *layers])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
steps = Steps()
model.fit(scale.distribute(pipe, global_batch_size=8), epochs=2, verbose=0, callbacks=[steps])
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
np.savez(os.path.join(out, f"{kind}.{index}.npz"), steps=steps.steps, *model.get_weights())
print(f"worker {index} {kind} done, {steps.steps} steps in the last epoch")
