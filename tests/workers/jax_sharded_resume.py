"""Model parallelism across processes: checkpoints of weights sharded over hosts, and resume.

Usage: python jax_sharded_resume.py OUT.npz CHECKPOINT_DIR EPOCHS_FIRST EPOCHS_TOTAL
Trains with `tfscale.fit` for EPOCHS_FIRST epochs (checkpoints every epoch), then calls fit again for
EPOCHS_TOTAL, which resumes from the last checkpoint. Rank 0 writes OUT.npz with the final weights
(gathered from every process) and how the second fit started.
"""

import sys

import numpy as np

out, checkpoint_dir, first, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

import tfscale as ts  # noqa: E402

scale = ts.Scale("model_parallel", mesh=(1, 2),
                 layout={".*dense.*kernel": (None, "model")})

import keras  # noqa: E402

rng = np.random.RandomState(0)
x = rng.rand(256, 16).astype("float32")
y = (x.sum(1) > 8).astype("int32")


def build():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)])
    init = np.random.RandomState(1)
    model.set_weights([init.normal(0, 0.3, tuple(w.shape)).astype("float32") for w in model.weights])
    return model


options = dict(scale=scale, global_batch_size=32, optimizer="sgd", optimizer_args={"momentum": 0.9}, base_lr=0.1,
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), checkpoint_dir=checkpoint_dir,
               verbose=0)
if first:
    ts.fit(build, (x, y), epochs=first, **options)
result = ts.fit(build, (x, y), epochs=total, **options)
with scale.engine.host_weights(result.model):
    weights = result.model.get_weights()
shardings = [str(v.value.sharding.spec) for v in result.model.weights]
if scale.is_chief:
    np.savez(out, resumed_from_epoch=result.resumed_from_epoch, epochs_run=len(result.history.epoch),
             shardings=np.array(shardings), **{f"w{i}": w for i, w in enumerate(weights)})
print(f"{scale!r}: resumed after epoch {result.resumed_from_epoch}, shardings {shardings}")
