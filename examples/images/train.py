"""Trains the Fashion-MNIST conv net from TFRecord shards under `Scale.auto()`, then exports and reports.

Run it alone or as N workers (run.sh does the whole job):

    python examples/images/train.py --data data/fashion/tfrecords --out saved_models/fashion
    tfscale launch -n 2 -- python examples/images/train.py --data data/fashion/tfrecords --out saved_models/fashion

--data holds train/ and test/, each written by `tfscale data convert <image folder> --out ... --shards N`
(run.sh stores raw 28x28 pixels: `--store raw --image-size 28 28 --channels 1`). Shards hold their records in
a seeded order mixed by class, and are read interleaved, so every batch mixes the classes. With at least as
many shards as workers, each worker reads its own files (FILE sharding).
The chief writes into --out: model.keras, float32.tflite, int8.tflite, report.json (tfscale's
export report: accuracy, agreement with Keras, size and latency per variant) and train_report.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import tfscale as ts

sys.path.insert(0, str(Path(__file__).resolve().parent))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="data/fashion/tfrecords", help="folder with train/ and test/ shards")
    p.add_argument("--out", default="saved_models/fashion", help="output folder (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--global-batch-size", type=int, default=128, help="examples per step over all replicas")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's rate at a batch of 128")
    p.add_argument("--modes", default="float32,int8", help="TFLite variants to write and compare")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def images(folder: Path, *, shuffle_seed: int | None = None):
    """(image in [0, 1] of shape (28, 28, 1), label) examples from `tfscale data convert` shards."""
    pipeline = ts.data.image_folder(str(folder), (28, 28), channels=1).cache()  # decoded once, read every epoch
    return pipeline if shuffle_seed is None else pipeline.shuffle(10000, seed=shuffle_seed)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    scale = ts.Scale.auto()  # first: before TensorFlow initializes its devices
    import keras

    import convnet

    data, out = Path(args.data), Path(args.out)
    train, test = images(data / "train", shuffle_seed=args.seed), images(data / "test")
    keras.utils.set_random_seed(args.seed)
    distributed = scale.distribute(train, global_batch_size=args.global_batch_size)
    with scale.scope():
        model = convnet.build_model()
        model.compile(optimizer=scale.optimizer("adam", base_lr=args.learning_rate, base_batch_size=128),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(distributed, epochs=args.epochs, verbose=2 if scale.is_chief else 0,
                        callbacks=scale.callbacks())
    summary = {"scale": repr(scale), "num_replicas": scale.num_replicas, "num_workers": scale.num_workers,
               "epochs": args.epochs, "train_seconds": round(time.perf_counter() - started, 2),
               "train_accuracy": round(float(history.history["accuracy"][-1]), 4)}
    report = ts.export.quantize_all(model, out, eval_data=test.dataset(), calibration=train.dataset(),
                                    modes=tuple(args.modes.split(",")), overwrite=True, progress=False,
                                    chief=scale.is_chief)
    if scale.is_chief:
        model.save(out / "model.keras")
        (out / "train_report.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2))
        print(report.table())
    return summary


if __name__ == "__main__":
    main()
