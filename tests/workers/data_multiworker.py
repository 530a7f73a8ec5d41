"""One worker of the multi-worker data test: a CSV pipeline through scale.distribute and fit under multi_worker.

Usage: python data_multiworker.py OUT_DIR CSV_GLOB
Writes OUT_DIR/ids.<task index>.json with the ids this worker's replicas received in one epoch.
"""

import json
import os
import sys

out, pattern = sys.argv[1], sys.argv[2]

import tfscale as ts  # noqa: E402

scale = ts.Scale("multi_worker")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

pipe = ts.data.csv(pattern, label="label")
ids = []
for features, _ in scale.distribute(pipe, global_batch_size=8):
    for part in scale.strategy.experimental_local_results(features["id"]):
        ids.extend(int(i) for i in part.numpy())
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
with open(os.path.join(out, f"ids.{index}.json"), "w") as f:
    json.dump(ids, f)

train = scale.distribute(pipe.map(lambda f, y: (tf.stack([f["x"]]), y)), global_batch_size=8)
with scale.scope():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit(train, epochs=1, verbose=0)
print(f"worker {index} fit loss={history.history['loss'][-1]:.4f} ids={len(ids)}")
