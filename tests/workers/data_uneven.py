"""One worker of the multi-worker data tests: several input jobs, one after another, on one Scale.

Usage: python data_uneven.py OUT_DIR KIND=SRC [KIND=SRC ...]
KIND "images": SRC is an image folder (FILE plan), fit 2 epochs; "csv": SRC is a CSV glob (slices plan),
fit 2 epochs; "ids": SRC is a CSV glob, the ids this worker's replicas receive in one epoch are written to
OUT_DIR/ids.<task index>.json, then fit 1 epoch; "unequal": SRC is a row count N, an input that shards itself
(`dataset_for`) with N rows on worker 0 and N // 2 on worker 1, so unequal steps, fit 2 epochs. Every job but
ids writes OUT_DIR/<kind>.<task index>.npz with the final weights, the steps run in the last epoch, the
optimizer's update count, whether
TF's per-step "has data" check was left on, and how many collectives a traced `next()` of the distributed
input runs (that check is one). One process for all: one TensorFlow start-up.
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


class Unequal:
    """Input that shards itself, with more rows on worker 0 than on worker 1."""

    def __init__(self, rows: int):
        self.rows = rows

    def dataset_for(self, input_context):
        n = self.rows if input_context.input_pipeline_id == 0 else self.rows // 2
        x = np.linspace(-1, 1, n, dtype="float32")[:, None]
        return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32")))


def collectives_in_next(distributed) -> int:
    """Collective ops in one traced `next()` of a distributed dataset's iterator (tracing runs none)."""
    graph = tf.function(lambda iterator: next(iterator)).get_concrete_function(iter(distributed)).graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return sum(n.op.startswith("Collective") for n in nodes)


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
    elif kind == "unequal":
        pipe = Unequal(int(src))
        model_input = keras.Input((1,))
        layers = [keras.layers.Dense(2)]
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
    distributed = scale.distribute(pipe, global_batch_size=8)
    history = model.fit(distributed, epochs=epochs, verbose=0, callbacks=[steps])
    if kind != "ids":
        np.savez(os.path.join(out, f"{kind}.{index}.npz"), *model.get_weights(), steps=steps.steps,
                 iterations=int(model.optimizer.iterations.numpy()),
                 has_data_check=distributed._enable_get_next_as_optional,
                 next_collectives=collectives_in_next(distributed))
    print(f"worker {index} {kind} done, {steps.steps} steps in the last epoch, fit loss={history.history['loss'][-1]:.4f}")
