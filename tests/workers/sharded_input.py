"""A worker given its own shard (as Ray Data hands one): `Scale.distribute(shard, sharded=True)`.

Usage: python sharded_input.py OUT_DIR

Rank r's shard is ids [OFFSET[r], OFFSET[r] + SIZE[r]); the shards differ in
size, so the workers run out at different steps. Writes OUT_DIR/rank-<r>.json:
the ids this worker's distributed dataset gave over one epoch (every local
replica's batches), the steps it ran, and `fit`'s loss over one epoch of the
same input; and for that input and one with equal shards (32 rows each), the
train batches `fit` ran per epoch, the optimizer's update count after it, and the weights before and after.
"""

import json
import os
import sys

import numpy as np

import tfscale as ts

out_dir = sys.argv[1]
scale = ts.Scale.auto()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

rank = int(os.environ["TFSCALE_RANK"])
SIZE, OFFSET, GLOBAL_BATCH = (48, 32), (0, 48), 16  # 8 per worker: 6 steps on rank 0, 4 on rank 1
ids = np.arange(OFFSET[rank], OFFSET[rank] + SIZE[rank], dtype="int64")
x = np.stack([ids.astype("float32") / 100.0] * 4, axis=1)
shard = tf.data.Dataset.from_tensor_slices((x, ids.astype("float32"), ids))  # (x, y, id)

seen, steps = [], 0
for batch in scale.distribute(shard, global_batch_size=GLOBAL_BATCH, sharded=True):
    steps += 1
    for part in scale.strategy.experimental_local_results(batch[2]):
        seen.extend(int(i) for i in part.numpy())


class Batches(keras.callbacks.Callback):
    """Train batches per epoch, as Keras ran them."""

    def on_epoch_begin(self, epoch, logs=None):
        self.per_epoch = [*getattr(self, "per_epoch", []), 0]

    def on_train_batch_end(self, batch, logs=None):
        self.per_epoch[-1] += 1


def fit(data):
    """Fits 2 epochs of (x, y) from `data`: the history, the batches per epoch and the optimizer's updates."""
    keras.utils.set_random_seed(1)
    with scale.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    batches, initial = Batches(), [w.tolist() for w in model.get_weights()]
    train = scale.distribute(data.map(lambda a, b, i: (a, b)), global_batch_size=GLOBAL_BATCH, sharded=True)
    history = model.fit(train, epochs=2, verbose=0, callbacks=[batches])
    return history, {"batches": batches.per_epoch, "iterations": int(model.optimizer.iterations.numpy()),
                     "initial": initial, "weights": [w.tolist() for w in model.get_weights()]}


history, unequal = fit(shard)
_, equal = fit(shard.take(32))  # 32 rows on each worker: 4 steps on both
with open(os.path.join(out_dir, f"rank-{rank}.json"), "w") as f:
    json.dump({"seen": seen, "steps": steps, "loss": history.history["loss"], "replicas": scale.num_replicas,
               "fits": {"unequal": unequal, "equal": equal}}, f)
print(f"{scale!r} done")
