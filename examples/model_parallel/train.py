"""A model whose weights exceed one device's budget, sharded over 2 devices with `Scale("model_parallel")`.

A topic classifier over token ids (an Embedding table and a wide MLP, 40 MiB of float32
weights) must fit a per-device budget of --budget-mb (32 MB): it does not fit whole. Under
``Scale("model_parallel", mesh=(1, 2), layout="auto")`` every variable of at least
--min-shard-params parameters is split over the mesh's "model" axis, the Adam slots follow
their variables, and each device holds about half. The script prints, read from the arrays'
shards after training:

- each variable's shape, sharding, bytes and bytes on the fullest device (a table);
- the weights and the optimizer state per device against the budget;
- the training loss and the held-out accuracy.

On a CPU, `replicas=2` makes 2 host devices; on a machine with GPUs or TPU cores the same
command uses the first 2. Runs on the JAX backend, without TensorFlow.

    python examples/model_parallel/train.py [--budget-mb 32] [--devices 2] [--epochs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys

VOCAB, TOPICS, LENGTH = 16384, 4, 32


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-mb", type=float, default=32.0, help="parameter bytes one device may hold (MiB)")
    parser.add_argument("--devices", type=int, default=2, help="devices to shard the model over")
    parser.add_argument("--width", type=int, default=512, help="embedding width (the MLP is 4x as wide)")
    parser.add_argument("--min-shard-params", type=int, default=65536, help="variables this large are sharded")
    parser.add_argument("--examples", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--global-batch-size", type=int, default=64)
    parser.add_argument("--json", help="also write the figures here")
    return parser.parse_args(argv)


def topics(examples: int, seed: int):
    """Token sequences whose topic decides where most of their tokens come from (a learnable task)."""
    import numpy as np

    rng = np.random.RandomState(seed)
    y = rng.randint(0, TOPICS, examples).astype("int32")
    own = rng.randint(0, VOCAB // TOPICS, (examples, LENGTH)) + (y[:, None] * (VOCAB // TOPICS))
    noise = rng.randint(0, VOCAB, (examples, LENGTH))
    x = np.where(rng.rand(examples, LENGTH) < 0.3, own, noise).astype("int32")
    return x, y


def build_model(width: int = 512):  # the default of --width (`tfscale info --model` calls it without arguments)
    import keras

    return keras.Sequential([
        keras.Input((LENGTH,), dtype="int32"),
        keras.layers.Embedding(VOCAB, width, name="tokens"),           # VOCAB x width: the largest
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(4 * width, activation="relu", name="wide"),
        keras.layers.Dense(width, activation="relu", name="narrow"),
        keras.layers.Dense(TOPICS, name="topic"),
    ], name="topics")


def bytes_per_device(variables) -> dict[str, int]:
    """Bytes each device holds of these variables, summed from their arrays' shards."""
    held: dict[str, int] = {}
    for v in variables:
        for shard in v.value.addressable_shards:
            held[str(shard.device)] = held.get(str(shard.device), 0) + int(shard.data.nbytes)
    return held


def mib(n: float) -> str:
    """Bytes for people: MiB, KiB or B."""
    if n >= 2**20:
        return f"{n / 2**20:.2f} MiB"
    return f"{n / 2**10:.1f} KiB" if n >= 2**10 else f"{int(n)} B"


def table(rows: list[dict]) -> str:
    lines = [("variable", "shape", "sharding", "bytes", "per device")]
    lines += [(r["path"], "x".join(map(str, r["shape"])), r["sharding"], mib(r["bytes"]), mib(r["bytes_per_device"]))
              for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import tfscale as ts

    # First, before JAX starts: on a CPU, `replicas` host devices to make the mesh of
    scale = ts.Scale("model_parallel", replicas=args.devices, mesh=(1, args.devices), layout="auto",
                     min_shard_params=args.min_shard_params)
    import keras

    budget = args.budget_mb * 2**20
    x, y = topics(args.examples, seed=0)
    x_test, y_test = topics(1024, seed=1)  # held out: other sequences
    train = scale.distribute((x, y), global_batch_size=args.global_batch_size)
    with scale.scope():  # variables are created sharded; closing the scope checks the layout
        model = build_model(args.width)
        model.compile(optimizer=scale.optimizer("adam", base_lr=1e-3, base_batch_size=64),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = model.fit(train, epochs=args.epochs, verbose=0, shuffle=False)
    _, accuracy = model.evaluate(x_test, y_test, batch_size=args.global_batch_size, verbose=0)

    placed = scale.describe(model)["engine"]
    slots = [v for v in model.optimizer.variables if len(v.shape)]  # Adam's m and v (not its step counter)
    optimizer_held = bytes_per_device(slots)
    optimizer_bytes = sum(math.prod(v.shape) * v.value.dtype.itemsize for v in slots)
    report = {
        "devices": placed["devices"], "mesh": placed["mesh"], "budget_bytes": int(budget),
        "parameters": sum(math.prod(v["shape"]) for v in placed["variables"]),
        "weights_bytes": placed["bytes"], "weights_bytes_per_device": placed["bytes_per_device"],
        "fits_whole": placed["bytes"] <= budget, "fits_sharded": placed["bytes_per_device"] <= budget,
        "optimizer_bytes": int(optimizer_bytes), "optimizer_bytes_per_device": max(optimizer_held.values()),
        "variables": placed["variables"], "loss": [round(v, 4) for v in history.history["loss"]],
        "held_out_accuracy": round(float(accuracy), 4),
    }
    print(table(placed["variables"]))
    print(f"\nweights:          {mib(report['weights_bytes'])} in all, {mib(report['weights_bytes_per_device'])} "
          f"on each of {len(placed['devices'])} devices (budget {mib(budget)}: "
          f"{'fits' if report['fits_sharded'] else 'DOES NOT FIT'}; whole it would "
          f"{'fit' if report['fits_whole'] else 'not'})")
    print(f"optimizer state:  {mib(optimizer_bytes)} in all, {mib(report['optimizer_bytes_per_device'])} per device "
          "(Adam's slots are sharded like their variables)")
    print(f"training state:   {mib(report['weights_bytes_per_device'] + report['optimizer_bytes_per_device'])} per "
          f"device, against {mib(report['weights_bytes'] + optimizer_bytes)} on one device")
    print(f"training loss {report['loss'][0]:.3f} -> {report['loss'][-1]:.3f}; "
          f"held-out accuracy {accuracy:.1%} ({len(x_test)} sequences, {TOPICS} topics)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    sys.exit(0 if main()["fits_sharded"] else 1)
