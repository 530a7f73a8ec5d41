"""One worker of the multi-worker data tests: several input jobs, one after another, on one Scale.

Usage: python data_uneven.py OUT_DIR KIND=SRC [KIND=SRC ...]
KIND "images": SRC is an image folder (FILE plan), fit 2 epochs; "csv": SRC is a CSV glob (slices plan),
fit 2 epochs; "ids": SRC is a CSV glob, the ids this worker's replicas receive in one epoch are written to
OUT_DIR/ids.<task index>.json, then fit 1 epoch. images/csv write OUT_DIR/<kind>.<task index>.npz with the
final weights and the steps run in the last epoch. One process for all: one TensorFlow start-up.
"""

import json
import os
import sys

out, jobs = sys.argv[1], [arg.split("=", 1) for arg in sys.argv[2:]]

import tfscale as ts  # noqa: E402

scale = ts.Scale("multi_worker")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]


class Steps(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def replica_ids(pipe) -> list[int]:
    ids = []
    for features, _ in scale.distribute(pipe, global_batch_size=8):
        for part in scale.strategy.experimental_local_results(features["id"]):
            ids.extend(int(i) for i in part.numpy())
    return ids


for kind, src in jobs:
    epochs = 2
    if kind == "images":
        pipe = ts.data.image_folder(src, image_size=(8, 8)).shuffle(64, seed=3)
        model_input = keras.Input((8, 8, 3))
        layers = [keras.layers.Conv2D(4, 3), keras.layers.Flatten(), keras.layers.Dense(2)]
    else:
        pipe = ts.data.csv(src, label="label")
        if kind == "ids":
            with open(os.path.join(out, f"ids.{index}.json"), "w") as f:
                json.dump(replica_ids(pipe), f)
            epochs = 1
        pipe = pipe.map(lambda f, y: (tf.stack([f["x"]]), y))
        pipe = pipe.shuffle(64) if kind == "csv" else pipe
        model_input = keras.Input((1,))
        layers = [keras.layers.Dense(3)]
    keras.utils.set_random_seed(1)
    with scale.scope():
        model = keras.Sequential([model_input, *layers])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = Steps()
    history = model.fit(scale.distribute(pipe, global_batch_size=8), epochs=epochs, verbose=0, callbacks=[steps])
    if kind != "ids":
        np.savez(os.path.join(out, f"{kind}.{index}.npz"), *model.get_weights(), steps=steps.steps)
    print(f"worker {index} {kind} done, {steps.steps} steps in the last epoch, fit loss={history.history['loss'][-1]:.4f}")
