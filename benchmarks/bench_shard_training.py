"""Training on converted shards against training on shuffled arrays: Fashion-MNIST, the images example's model.

1. examples/images/make_folder.py writes all 70,000 images as PNG files (once, under --work);
2. `tfscale data convert` writes each split as raw-pixel shards (as run.sh does), and the label mix of
   the first 1,000 records of every shard is compared with the class proportions;
3. examples/images/train.py trains on the shards in one process (3 epochs, global batch 128) and
   reports test accuracy (report.json, float32 row); the same model and settings train on the same
   images as arrays, shuffled by Keras every epoch, and are scored on the test arrays.

    python benchmarks/bench_shard_training.py [--epochs 3] [--work ~/.cache/tfscale-bench/fashion-example]

Prints one JSON object: label mix per shard, both accuracies and their difference in points.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples" / "images"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def label_mix(shards: Path, first: int = 1000) -> dict:
    """For each shard: the largest relative gap between a class's share of its first records and overall."""
    import tensorflow as tf

    meta = json.loads((shards / "dataset.json").read_text())
    total = sum(meta["class_counts"].values())
    overall = {int(k): v / total for k, v in meta["class_counts"].items()}
    spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
    gaps = {}
    for shard in meta["shards"]:
        records = tf.data.TFRecordDataset(str(shards / shard["file"])).take(first).batch(first)
        labels = tf.io.parse_example(next(iter(records)), spec)["label"].numpy().tolist()
        counts = collections.Counter(labels)
        gaps[shard["file"]] = round(max(abs(counts[c] / len(labels) - p) / p for c, p in overall.items()), 4)
    return gaps


def on_arrays(epochs: int, batch: int, seed: int) -> dict:
    """The example's model and settings on the same images as arrays, shuffled every epoch."""
    import keras

    import convnet
    from benchmarks._fashion import place

    place()
    (x, y), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    x, x_test = (x / 255.0).astype("float32")[..., None], (x_test / 255.0).astype("float32")[..., None]
    keras.utils.set_random_seed(seed)
    model = convnet.build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=2)
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    return {"train_accuracy": round(float(history.history["accuracy"][-1]), 4), "test_accuracy": round(accuracy, 4),
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=os.path.expanduser("~/.cache/tfscale-bench/fashion-example"))
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    work, python = Path(args.work), sys.executable
    subprocess.run([python, str(REPO / "examples/images/make_folder.py"), "--out", str(work / "images")], check=True)
    for split in ("train", "test"):
        subprocess.run([python, "-m", "tfscale", "data", "convert", str(work / "images" / split), "--out",
                        str(work / "tfrecords" / split), "--shards", "4", "--store", "raw", "--image-size", "28", "28",
                        "--channels", "1", "--quiet", "--overwrite"], check=True, cwd=REPO)
    out = work / "out"
    started = time.perf_counter()
    subprocess.run([python, str(REPO / "examples/images/train.py"), "--data", str(work / "tfrecords"), "--out",
                    str(out), "--epochs", str(args.epochs), "--global-batch-size", str(args.batch), "--modes",
                    "float32", "--seed", str(args.seed)], check=True, cwd=REPO)
    report = json.loads((out / "report.json").read_text())
    summary = json.loads((out / "train_report.json").read_text())
    shards = {"train_accuracy": summary["train_accuracy"], "test_accuracy": report["rows"][0]["keras_value"],
              "seconds": round(time.perf_counter() - started, 1)}
    arrays = on_arrays(args.epochs, args.batch, args.seed)
    result = {"benchmark": "shard_training", "epochs": args.epochs, "global_batch": args.batch,
              "label_mix_first_1000_max_relative_gap": label_mix(work / "tfrecords" / "train"),
              "shards": shards, "arrays_shuffled": arrays,
              "test_accuracy_gap_points": round(100 * (arrays["test_accuracy"] - shards["test_accuracy"]), 2)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
