"""One arm of the training scale-equivalence test: `tfscale.fit` with LR scaling, warmup and mixed precision.

Usage: python train_equivalence.py OUT.npz STRATEGY REPLICAS (or `run(scale, out)` from equivalence.py)
Runs two trainings in one process, float32 (SGD, linear scaling, warmup, gradient
accumulation) and mixed_float16 (Adam, sqrt scaling, warmup, loss scaling), and
saves per-step losses and final weights of each. Under TF_CONFIG every worker
writes OUT.<index>.npz.
"""

import json
import os
import sys

import keras
import numpy as np

import tfscale as ts

STEPS, GLOBAL_BATCH = 12, 32
RUNS = {
    "float32": {"optimizer": "sgd", "optimizer_args": {"momentum": 0.9}, "base_lr": 0.05, "base_batch_size": 16,
                "lr_scaling": "linear", "warmup_steps": 3, "gradient_accumulation_steps": 2},
    "mixed_float16": {"optimizer": "adam", "base_lr": 1e-3, "base_batch_size": 8, "lr_scaling": "sqrt",
                      "warmup_steps": 4},
}

rng = np.random.RandomState(0)
x = rng.rand(STEPS * GLOBAL_BATCH, 8, 8, 1).astype("float32")
y = (x.reshape(len(x), -1)[:, :32].sum(1) > 16).astype("int32") + (x[:, 0, 0, 0] > 0.5).astype("int32")


def build_model():
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(3),
        keras.layers.Activation("softmax", dtype="float32"),
    ])


class Losses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses, self.learning_rates = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))
        self.learning_rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def run(scale, out):
    arrays = {"num_replicas": scale.num_replicas}
    for precision, options in RUNS.items():
        record = Losses()
        result = ts.fit(build_model, (x, y), scale=scale, epochs=2, global_batch_size=GLOBAL_BATCH, precision=precision,
                        loss="sparse_categorical_crossentropy", seed=1, verbose=0, jit_compile=False,
                        callbacks=[record], **options)
        arrays[f"{precision}_losses"] = np.array(record.losses)
        arrays[f"{precision}_lr"] = np.array(record.learning_rates)
        arrays[f"{precision}_peak_lr"] = result.learning_rate
        arrays[f"{precision}_dtype"] = result.model.layers[0].compute_dtype
        for i, w in enumerate(result.model.get_weights()):
            arrays[f"{precision}_w{i}"] = w
    if scale.num_replicas > 1:  # the batch contract: a global batch that does not divide is refused up front
        try:
            ts.fit(build_model, (x, y), scale=scale, global_batch_size=GLOBAL_BATCH + 1, loss="mse")
        except ts.ConfigError as e:
            arrays["indivisible_error"] = str(e)
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"] if "TF_CONFIG" in os.environ else None
    np.savez(out if index is None else out.replace(".npz", f".{index}.npz"), **arrays)
    print(f"{scale!r} float32 loss={arrays['float32_losses'][-1]:.6f} mixed loss={arrays['mixed_float16_losses'][-1]:.6f}")


if __name__ == "__main__":
    run(ts.Scale(sys.argv[2], replicas=int(sys.argv[3])), sys.argv[1])
