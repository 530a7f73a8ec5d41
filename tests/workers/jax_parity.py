"""One JAX worker of tests/test_jax_parity.py (2 processes from `tfscale launch -n 2 --backend jax`).

Usage: python jax_parity.py OUT_DIR

Writes OUT_DIR/rank-<r>.json and, on rank 0, OUT_DIR/data.npz:
- "exchange": what `scale.engine.exchange` gave each process;
- "private": the error of a `tfscale.fit` whose checkpoint_dir is another folder on each process (as on hosts
  that share no disk), and the train steps it ran; "shared": the steps of one with the same folder;
- "evaluate": `scale.evaluate` on 1,001 examples in global batches of 64 (arrays, a generator function, a
  tf.data.Dataset), and `model.evaluate` of `scale.distribute(..., drop_remainder=False)` (which leaves 41 out);
- "sharded": the ids each process's `scale.distribute(shard, sharded=True)` gave, and the weights before and
  after one epoch of `fit` on it (NumPy arrays and tf.data).
"""

import json
import os
import sys

import numpy as np

import tfscale as ts
from tfscale.errors import ClusterError

out = sys.argv[1]
scale = ts.Scale.auto()

import keras  # noqa: E402

rank = scale.rank
result = {"replicas": scale.num_replicas, "workers": scale.num_workers, "backend": scale.backend,
          "exchange": scale.engine.exchange("parity/hello", f"from-{rank}")}


class Steps(keras.callbacks.Callback):
    """Train steps run."""

    steps = 0

    def on_train_batch_end(self, batch, logs=None):
        Steps.steps += 1


def small_model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])


# 1. the shared-checkpoint check: another folder on each process is refused before any step; one folder trains
xs = np.random.RandomState(0).rand(64, 4).astype("float32")
ys = xs.sum(1, keepdims=True)
try:
    ts.fit(small_model, (xs, ys), scale=scale, epochs=1, global_batch_size=16, loss="mse", verbose=0,
           callbacks=[Steps()], checkpoint_dir=os.path.join(out, f"private-{rank}"))
    result["private"] = {"error": None}
except ClusterError as e:
    result["private"] = {"error": str(e)}
result["private"]["steps"] = Steps.steps
ts.fit(small_model, (xs, ys), scale=scale, epochs=1, global_batch_size=16, loss="mse", verbose=0,
       callbacks=[Steps()], checkpoint_dir=os.path.join(out, "shared"))
result["shared"] = {"steps": Steps.steps - result["private"]["steps"]}

# 2. evaluate: every one of 1,001 examples once; the last 41 are labelled wrong on purpose, so leaving them out
# shows (accuracy 960/1001 with them, 1.0 without)
N, CLASSES, BATCH = 1001, 3, 64
rng = np.random.RandomState(1)
kernel = rng.normal(0, 1, (8, CLASSES)).astype("float32")
x = rng.rand(N, 8).astype("float32")
y = np.argmax(x @ kernel, axis=1).astype("int32")
y[960:] = (y[960:] + 1) % CLASSES
with scale.scope():
    classifier = keras.Sequential([keras.Input((8,)), keras.layers.Dense(CLASSES)])
    classifier.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
classifier.set_weights([kernel, np.zeros(CLASSES, "float32")])

import tensorflow as tf  # noqa: E402  (after JAX started: the tf.data arm)

evaluated = {"arrays": scale.evaluate(classifier, (x, y), global_batch_size=BATCH, verbose=0),
             "generator": scale.evaluate(classifier, lambda: zip(x, y), global_batch_size=BATCH, verbose=0),
             "dataset": scale.evaluate(classifier, tf.data.Dataset.from_tensor_slices((x, y)),
                                       global_batch_size=BATCH, verbose=0),
             "dropping": classifier.evaluate(scale.distribute((x, y), global_batch_size=BATCH, drop_remainder=False),
                                             verbose=0, return_dict=True)}
result["evaluate"] = evaluated
if rank == 0:
    np.savez(os.path.join(out, "data.npz"), x=x, y=y, kernel=kernel)

# 3. sharded=True: each process's own shard of ids [64 r, 64 r + 64), 8 per process per step
ids = np.arange(64 * rank, 64 * rank + 64)
shard_x = np.stack([ids / 100.0, np.sin(ids), np.cos(ids), np.ones(64)], axis=1).astype("float32")
shard_y = (shard_x @ np.array([[1.0], [2.0], [-1.0], [0.5]], "float32")).astype("float32")
np.savez(os.path.join(out, f"shard-{rank}.npz"), x=shard_x, y=shard_y)
sharded = {}
for kind, shard in (("arrays", (shard_x, shard_y)), ("dataset", tf.data.Dataset.from_tensor_slices((shard_x, shard_y)))):
    batches = scale.distribute(shard, global_batch_size=16, sharded=True)
    seen = [int(round(float(v) * 100)) for batch in batches for v in np.asarray(batch[0])[:, 0]]
    with scale.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.set_weights([np.full((4, 1), 0.1, "float32"), np.zeros(1, "float32")])
    model.fit(batches, epochs=1, verbose=0, shuffle=False)
    sharded[kind] = {"seen": seen, "weights": [w.tolist() for w in model.get_weights()],
                     "iterations": int(keras.ops.convert_to_numpy(model.optimizer.iterations))}
result["sharded"] = sharded

with open(os.path.join(out, f"rank-{rank}.json"), "w") as f:
    json.dump(result, f)
print(f"{scale!r} done")
