"""One arm of the JAX equivalence tests: train 20 steps of one model, save per-step losses and weights.

Usage: python jax_train.py OUT.npz OPTIONS_JSON
OPTIONS_JSON: {"strategy": ..., "replicas": ..., "mesh": ..., "layout": ..., "no_tensorflow": bool}.
Runs on whatever KERAS_BACKEND says (the cross-backend test runs it on TensorFlow too). Every process
of a multi-process run writes OUT.<rank>.npz. Initial weights come from NumPy, so every arm (and both
backends) starts from the same point.
"""

import json
import sys

import numpy as np

out, options = sys.argv[1], json.loads(sys.argv[2])
if options.pop("no_tensorflow", False):  # as on a machine without TensorFlow: the JAX path must not need it
    class NoTensorFlow:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoTensorFlow)

import tfscale as ts  # noqa: E402

scale = ts.Scale(options.pop("strategy"), **options)

import keras  # noqa: E402

STEPS, GLOBAL_BATCH = 20, 32
rng = np.random.RandomState(0)
x = rng.rand(STEPS * GLOBAL_BATCH, 8, 8, 1).astype("float32")
y = (x.reshape(len(x), -1)[:, :32].sum(1) > 16).astype("int32") + (x[:, 0, 0, 0] > 0.5).astype("int32")
train = scale.distribute((x, y), global_batch_size=GLOBAL_BATCH)

with scale.scope():
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(4),
    ])
    init = np.random.RandomState(1)
    model.set_weights([init.normal(0, 0.2, w.shape).astype("float32") for w in model.get_weights()])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


class Losses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


record = Losses()
model.fit(train, epochs=1, verbose=0, callbacks=[record])
described = scale.describe(model)["engine"]
path = out if scale.num_workers == 1 else out.replace(".npz", f".{scale.rank}.npz")
np.savez(path, losses=np.array(record.losses), num_replicas=scale.num_replicas, steps=len(record.losses),
         backend=scale.backend, bytes_per_device=described.get("bytes_per_device", 0),
         bytes=described.get("bytes", 0), tensorflow_loaded="tensorflow" in sys.modules,
         shardings=json.dumps({v["path"]: v["sharding"] for v in described.get("variables", [])}),
         **{f"w{i}": w for i, w in enumerate(model.get_weights())})
print(f"{scale!r} steps={len(record.losses)} loss={record.losses[-1]:.6f}")
