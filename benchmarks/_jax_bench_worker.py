"""One arm of benchmarks/bench_jax.py, in its own process (Keras fixes its backend per process).

Every arm trains the same conv net on the same synthetic images with Adam at the same
learning rate and global batch, data-parallel over 2 devices, and times its epochs after a
warm-up epoch that compiles:

  tfscale_jax   tfscale's JAX path: Scale("data_parallel", replicas=2), scale.distribute,
                scale.optimizer and scale.scope(), model.fit
  keras_jax     the same written by hand with keras.distribution (DataParallel on a
                2-device mesh, fit on the NumPy arrays)
  tf_mirrored   tfscale's TensorFlow path: Scale("mirrored", replicas=2), the same calls

Usage: python _jax_bench_worker.py ARM [--global-batch 64] [--steps 50] [--epochs 3] [--image 16]
Prints one line: BENCH {json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPLICAS = 2


def data(examples: int, side: int):
    import numpy as np

    rng = np.random.RandomState(0)
    x = rng.rand(examples, side, side, 3).astype("float32")
    y = (x[:, : side // 2].mean(axis=(1, 2, 3)) * 40).astype("int32") % 10
    return x, y


def build_model(side: int):
    """The one conv net of every arm."""
    import keras

    layers = keras.layers
    return keras.Sequential([
        keras.Input((side, side, 3)),
        layers.Conv2D(32, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, padding="same", activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10),
    ])


def epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall time and CPU time (all threads of the process) of each epoch, to the end of its last update
        (epoch-end logs are read back). CPU time moves less than wall time when other processes load the machine."""

        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            float(logs["loss"])
            self.seconds.append(time.perf_counter() - self.start)
            self.cpu_seconds.append(time.process_time() - self.cpu_start)

    return EpochTimer()


def loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tfscale_arm(args, x, y):
    import tfscale as ts

    scale = ts.Scale("data_parallel" if args.arm == "tfscale_jax" else "mirrored", replicas=REPLICAS)
    train = scale.distribute((x, y), global_batch_size=args.global_batch)
    with scale.scope():
        model = build_model(args.image)
        model.compile(optimizer=scale.optimizer("adam", base_lr=1e-3, base_batch_size=args.global_batch),
                      loss=loss())
    timer = epoch_timer()
    model.fit(train, epochs=1 + args.epochs, verbose=0, shuffle=False, callbacks=[timer])
    return timer, scale.backend


def keras_arm(args, x, y):
    """What a user writes with keras.distribution alone."""
    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    jax.config.update("jax_num_cpu_devices", REPLICAS)  # on a CPU: 2 host devices (no-op on GPUs)
    import keras

    devices = keras.distribution.list_devices()[:REPLICAS]
    mesh = keras.distribution.DeviceMesh((len(devices),), ["batch"], devices)
    keras.distribution.set_distribution(keras.distribution.DataParallel(device_mesh=mesh))
    model = build_model(args.image)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss())
    timer = epoch_timer()
    model.fit(x, y, batch_size=args.global_batch, epochs=1 + args.epochs, verbose=0, shuffle=False,
              callbacks=[timer])
    return timer, "jax"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("arm", choices=("tfscale_jax", "keras_jax", "tf_mirrored"))
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs, after one warm-up epoch")
    parser.add_argument("--image", type=int, default=16)
    args = parser.parse_args()
    if args.arm == "tf_mirrored":
        os.environ["KERAS_BACKEND"] = "tensorflow"
    sys.path.insert(0, ROOT)
    x, y = data(args.steps * args.global_batch, args.image)
    started = time.perf_counter()
    timer, backend = (keras_arm if args.arm == "keras_jax" else tfscale_arm)(args, x, y)
    steady = statistics.median(timer.seconds[1:])
    print("BENCH " + json.dumps({
        "arm": args.arm, "backend": backend, "examples_per_s": args.steps * args.global_batch / steady,
        "epoch_s": [round(s, 4) for s in timer.seconds], "step_ms": 1000 * steady / args.steps,
        "cpu_ms_per_step": 1000 * statistics.median(timer.cpu_seconds[1:]) / args.steps,
        "process_cpu_s": round(time.process_time(), 2), "train_s": round(time.perf_counter() - started, 2)}),
        flush=True)


if __name__ == "__main__":
    main()
