"""The JAX engine's promises on an install without TensorFlow (tests/test_jax_only.py): run as a script.

Usage: python jax_only_job.py OUT_DIR
Trains a small model under Scale.auto() from NumPy arrays (with checkpoints) and from a generator, then asks
for tf.data input and TFLite export, which must be ConfigErrors naming the extra. Every process writes
OUT_DIR/result.<rank>.json. Under `tfscale launch -n 2 --backend jax` the two processes train together.
"""

import json
import sys
from pathlib import Path

import numpy as np

import tfscale as ts

out = Path(sys.argv[1])
scale = ts.Scale.auto()

import keras  # noqa: E402

rng = np.random.RandomState(0)
x = rng.rand(256, 8).astype("float32")
y = (x.sum(1) > 4).astype("int32")
train = scale.distribute((x, y), global_batch_size=32)
with scale.scope():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    model.set_weights([np.zeros(w.shape, "float32") for w in model.get_weights()])
    model.compile(optimizer=scale.optimizer("sgd", base_lr=0.5, base_batch_size=32),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
history = model.fit(train, epochs=3, verbose=0, callbacks=scale.callbacks(checkpoint_dir=str(out / "ckpt")))


def batches():
    for i in range(0, 256, 32):
        yield x[i:i + 32], y[i:i + 32]


from_generator = model.fit(batches(), epochs=1, verbose=0)
refused = {}
for name, ask in [("tf.data input", lambda: ts.data.from_numpy(x, y)),
                  ("tflite export", lambda: ts.export.tflite(model, str(out / "m.tflite")))]:
    try:
        ask()
        refused[name] = None
    except ts.ConfigError as e:
        refused[name] = {"where": e.where, "fix": e.fix}
result = {"rank": scale.rank, "workers": scale.num_workers, "replicas": scale.num_replicas,
          "backend": scale.backend, "strategy": scale.name, "loss": history.history["loss"],
          "generator_loss": from_generator.history["loss"], "refused": refused,
          "weights": [w.tolist() for w in model.get_weights()],
          "tensorflow_loaded": "tensorflow" in sys.modules}
(out / f"result.{scale.rank}.json").write_text(json.dumps(result))
