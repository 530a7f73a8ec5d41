"""Accelerator check: tfscale's JAX engine on whatever devices JAX sees, with only jax, keras, numpy and tfscale.

Trains two models (a conv net and an MLP) under each strategy of the JAX engine
that the devices allow, from the same initial weights and data:

  one_device      the reference: no distribution, JAX's first device
  data_parallel   every device, each global batch split over them
  model_parallel  (with >= 2 devices) a (data, model) mesh, layout="auto": every variable of
                  at least --min-shard-params parameters sharded over the model axis

For each run it reports the devices, examples/s and step time (median of the timed
epochs, after a warm-up epoch that compiles), the parameter bytes on the fullest
device (read from the arrays' shards), and how far the first --check-steps losses are
from the one-device run's. Those loss steps run at full float32 matmul precision
(`jax.default_matmul_precision("highest")`: GPUs would use TF32 and TPUs bfloat16
passes otherwise), so the difference measures distribution, not arithmetic; the timed
epochs run at the platform's default precision.

Sizes follow the platform (CPU small, GPU and TPU large); --quick makes them tiny.
The same command runs unchanged on a CPU, a GPU or a TPU machine:

    python benchmarks/accelerator_check.py                     # every device JAX sees
    XLA_FLAGS=--xla_force_host_platform_device_count=2 python benchmarks/accelerator_check.py --quick
    python benchmarks/accelerator_check.py --without-tensorflow   # prove TensorFlow is not needed

Prints a table on stderr and one JSON object on stdout (and to --json PATH).
TensorFlow is never imported: the data are NumPy arrays given to `scale.distribute`.
One process: on a CPU, JAX has one device unless XLA_FLAGS asks for more host devices.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Per platform: per-device batch, examples per epoch in steps, model widths. --quick overrides all.
SIZES = {
    "cpu": {"per_device_batch": 32, "steps": 24, "epochs": 3, "image": 16, "filters": (32, 64), "dense": 256,
            "features": 256, "hidden": (512, 512)},
    "gpu": {"per_device_batch": 256, "steps": 50, "epochs": 5, "image": 32, "filters": (64, 128), "dense": 1024,
            "features": 1024, "hidden": (4096, 4096)},
    "tpu": {"per_device_batch": 256, "steps": 50, "epochs": 5, "image": 32, "filters": (128, 256), "dense": 1024,
            "features": 1024, "hidden": (4096, 4096)},
}
QUICK = {"per_device_batch": 16, "steps": 8, "epochs": 2, "image": 8, "filters": (16, 32), "dense": 128,
         "features": 64, "hidden": (256, 256)}
CLASSES = 10


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (tests, a first look)")
    parser.add_argument("--models", default="conv,mlp", help="comma-separated: conv, mlp")
    parser.add_argument("--check-steps", type=int, default=20, help="steps compared with the one-device run")
    parser.add_argument("--epochs", type=int, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--min-shard-params", type=int, default=4096,
                        help="model_parallel shards every variable at least this large")
    parser.add_argument("--without-tensorflow", action="store_true",
                        help="block `import tensorflow` (as on a machine without it)")
    parser.add_argument("--json", help="also write the JSON here")
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- data and models


def make_data(kind: str, sizes: dict, examples: int, seed: int):
    """Synthetic, learnable examples: labels from a fixed random teacher."""
    import numpy as np

    rng = np.random.RandomState(seed)
    teacher = np.random.RandomState(1234)
    if kind == "conv":
        side = sizes["image"]
        x = rng.rand(examples, side, side, 3).astype("float32")
        pooled = x.reshape(examples, 4, side // 4, 4, side // 4, 3).mean(axis=(2, 4)).reshape(examples, -1)
        logits = (pooled - 0.5) @ teacher.normal(size=(pooled.shape[1], CLASSES))
    else:
        x = rng.normal(size=(examples, sizes["features"])).astype("float32")
        logits = x @ teacher.normal(size=(sizes["features"], CLASSES))
    return x, logits.argmax(axis=1).astype("int32")


def build_model(kind: str, sizes: dict):
    """The conv net or the MLP (Keras functional, the same definition under every strategy)."""
    import keras

    layers = keras.layers
    if kind == "conv":
        side = sizes["image"]
        # no Rescaling layer: Keras' preprocessing layers look for TensorFlow when `tensorflow` is in sys.modules
        inputs = keras.Input((side, side, 3))
        h = inputs
        for filters in sizes["filters"]:
            h = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
            h = layers.MaxPooling2D()(h)
        h = layers.Flatten()(h)
        h = layers.Dense(sizes["dense"], activation="relu")(h)
    else:
        inputs = keras.Input((sizes["features"],))
        h = inputs
        for width in sizes["hidden"]:
            h = layers.Dense(width, activation="relu")(h)
    outputs = layers.Dense(CLASSES)(h)
    return keras.Model(inputs, outputs, name=kind)


def initial_weights(model, seed: int = 7) -> list:
    """The same starting point under every strategy: scaled normal kernels, zero biases (from NumPy)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    weights = []
    for w in model.get_weights():
        fan_in = math.prod(w.shape[:-1]) if w.ndim > 1 else 0
        weights.append(rng.normal(0, math.sqrt(2.0 / fan_in), w.shape).astype(w.dtype) if fan_in
                       else np.zeros(w.shape, w.dtype))
    return weights


# ---------------------------------------------------------------------------------------------- one run


def mesh_for(devices: int, sizes: dict) -> tuple[int, int]:
    """(data, model): the largest model axis that divides the devices and every width."""
    widths = [*sizes["filters"], sizes["dense"], *sizes["hidden"]]
    model_axis = max(m for m in range(1, devices + 1) if devices % m == 0 and all(w % m == 0 for w in widths))
    return devices // model_axis, model_axis


def run(kind: str, strategy: str, sizes: dict, args, devices: int) -> dict:
    """Trains `kind` under `strategy`: the checked losses, then the timed epochs; returns its figures."""
    import jax
    import keras

    import tfscale as ts

    options = {}
    if strategy == "model_parallel":
        options = {"mesh": mesh_for(devices, sizes), "layout": "auto", "min_shard_params": args.min_shard_params}
    scale = ts.Scale(strategy, **options)
    global_batch = sizes["per_device_batch"] * devices  # the same in every run, so the losses compare
    check = scale.distribute(make_data(kind, sizes, args.check_steps * global_batch, seed=1),
                             global_batch_size=global_batch)
    timed = scale.distribute(make_data(kind, sizes, sizes["steps"] * global_batch, seed=2),
                             global_batch_size=global_batch)
    with scale.scope():
        model = build_model(kind, sizes)
        model.set_weights(initial_weights(model))
        model.compile(optimizer=scale.optimizer("sgd", base_lr=0.05, base_batch_size=global_batch, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    losses = step_losses()
    # full float32 where the default is not (GPU: TF32, TPU: bfloat16 passes); on a CPU it is, and
    # leaving the setting alone there keeps one compiled step for both fits
    precision = "highest" if jax.default_backend() != "cpu" else None
    with jax.default_matmul_precision(precision):
        model.fit(check, epochs=1, verbose=0, shuffle=False, callbacks=[losses])
    timer = epoch_timer()
    model.fit(timed, epochs=1 + sizes["epochs"], verbose=0, shuffle=False, callbacks=[timer])
    seconds = statistics.median(timer.seconds[1:])  # the first epoch compiles
    engine = scale.describe(model)["engine"]
    return {"model": kind, "strategy": strategy, "mesh": engine["mesh"], "devices": len(engine["devices"]),
            "global_batch": global_batch, "steps_per_epoch": sizes["steps"], "timed_epochs": sizes["epochs"],
            "examples_per_s": round(sizes["steps"] * global_batch / seconds, 1),
            "step_ms": round(1000 * seconds / sizes["steps"], 3),
            "warmup_epoch_s": round(timer.seconds[0], 3),
            "parameters": int(sum(math.prod(v["shape"]) for v in engine["variables"])),
            "bytes": engine["bytes"], "bytes_per_device": engine["bytes_per_device"],
            "losses": losses.values}


def step_losses():
    """A callback recording each step's loss (Keras is imported only once the first Scale chose JAX)."""
    import keras

    class StepLosses(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.values: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.values.append(float(logs["loss"]))

    return StepLosses()


def epoch_timer():
    """A callback timing each epoch until its updates are done on the devices."""
    import jax
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            jax.block_until_ready([v.value for v in self.model.trainable_variables])
            self.seconds.append(time.perf_counter() - self.start)

    return EpochTimer()


# ---------------------------------------------------------------------------------------------- report


def compare(result: dict, reference: dict) -> dict:
    """The run's figures against the one-device run of the same model."""
    import numpy as np

    mine, ref = np.array(result.pop("losses")), np.array(reference["losses"])
    result["loss_max_abs_diff"] = float(np.abs(mine - ref).max())
    result["loss_max_rel_diff"] = float((np.abs(mine - ref) / np.maximum(np.abs(ref), 1e-12)).max())
    result["first_loss"], result["last_loss"] = round(float(mine[0]), 6), round(float(mine[-1]), 6)
    result["bytes_per_device_vs_one_device"] = round(result["bytes_per_device"] / reference["bytes_per_device"], 4)
    result["examples_per_s_vs_one_device"] = round(result["examples_per_s"] / reference["examples_per_s"], 3)
    return result


def table(rows: list[dict]) -> str:
    columns = [("model", "model"), ("strategy", "strategy"), ("mesh", "mesh"), ("devices", "dev"),
               ("examples_per_s", "examples/s"), ("step_ms", "step ms"), ("bytes_per_device", "bytes/device"),
               ("bytes_per_device_vs_one_device", "x one dev"), ("loss_max_rel_diff", "loss rel diff")]

    def cell(row, key):
        value = row.get(key)
        if isinstance(value, dict):
            return "x".join(str(v) for v in value.values())
        if key == "loss_max_rel_diff":
            return f"{value:.1e}"
        return "-" if value is None else str(value)

    cells = [[title for _, title in columns]] + [[cell(r, k) for k, _ in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in cells)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.without_tensorflow:
        sys.modules["tensorflow"] = None  # any `import tensorflow` now fails, as where it is not installed
    os.environ["KERAS_BACKEND"] = "jax"  # Keras is not imported yet: it loads on JAX
    sys.path.insert(0, ROOT)
    import tfscale as ts

    reference_scale = ts.Scale("one_device")  # first: what must precede JAX's device start runs here
    import jax
    import keras

    platform = jax.default_backend()
    sizes = dict(QUICK if args.quick else SIZES.get(platform, SIZES["gpu"]))
    if args.epochs:
        sizes["epochs"] = args.epochs
    devices = jax.device_count()
    strategies = ["one_device", "data_parallel"] + (["model_parallel"] if devices >= 2 else [])
    rows = []
    for kind in args.models.split(","):
        reference = None
        for strategy in strategies:
            result = run(kind, strategy, sizes, args, devices)
            reference = reference or dict(result)
            rows.append(compare(result, reference))
    del reference_scale
    report = {"platform": platform, "device_kind": jax.devices()[0].device_kind, "devices": devices,
              "device_names": [str(d) for d in jax.devices()], "jax": jax.__version__, "keras": keras.__version__,
              "quick": args.quick, "sizes": sizes, "check_steps": args.check_steps,
              "tensorflow_loaded": sys.modules.get("tensorflow") is not None,
              "model_parallel": "run" if devices >= 2 else "skipped: one device",
              "runs": rows}
    print(table(rows), file=sys.stderr)
    print(json.dumps(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
