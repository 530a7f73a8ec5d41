"""Image input benchmark: tfscale's image pipeline against what users write first.

On real Fashion-MNIST images (≥ 2,000, as 28x28 PNG files and as 256x256 JPEGs,
written once to ~/.cache/tfscale-bench by benchmarks/_data_fashion.py), one full
pass over the folder, decoded and resized to --size, for each arm:

  pil_loop      a per-file PIL loop (open, convert, resize, to float array)
  pool2         the same function over multiprocessing.Pool(2)
  tfdata_plain  a hand-written tf.data pipeline (list files, parallel map decode+resize, batch, prefetch)
  tfscale       ts.data.image_folder(folder, image_size=...).dataset(batch_size=...)
  tfscale_shards  the same call on the folder converted once by `tfscale data convert` (8 TFRecord
                shards; the conversion is timed separately, as convert_seconds)

Arms alternate round by round; each figure is the median of --repeats rounds.
Then `fit` on the PNG set: epochs fed by the streaming pipeline against epochs
from the same pipeline cached in memory (alternated, median).

    python benchmarks/bench_images.py [--images 2000] [--repeats 5] [--size 96] [--json out.json]

Prints one JSON object with images/s per arm and the ratios the targets name.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from multiprocessing import Pool

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks._data_fashion import write_images  # noqa: E402

SIZE = (96, 96)


def list_images(folder: str) -> tuple[list[str], list[int]]:
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    files, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(folder, name))):
            files.append(os.path.join(folder, name, f))
            labels.append(label)
    return files, labels


def pil_load(path: str):
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L").resize(SIZE[::-1], Image.BILINEAR), dtype=np.float32) / 255.0


def arm_pil(files, labels, batch):
    import numpy as np

    for start in range(0, len(files), batch):
        np.stack([pil_load(f) for f in files[start:start + batch]])
    return len(files)


def arm_pool(pool, files, labels, batch):
    import numpy as np

    images = pool.map(pil_load, files, chunksize=64)
    for start in range(0, len(images), batch):
        np.stack(images[start:start + batch])
    return len(images)


def plain_dataset(files, labels, batch):
    """What the TF guide's "load images" tutorial writes."""
    import tensorflow as tf

    def load(path, label):
        image = tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False)
        return tf.image.resize(image, SIZE) / 255.0, label

    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch).prefetch(tf.data.AUTOTUNE)


def count(ds) -> int:
    n = 0
    for images, _ in ds:
        n += int(images.shape[0])
    return n


def timed(fn) -> float:
    start = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - start)


def convert_once(folder: str) -> tuple[str, float]:
    """The folder as 8 TFRecord shards (written once, next to the images); seconds the conversion took."""
    from tfscale.data.convert import convert

    out = folder.rstrip("/") + "-shards"
    if os.path.exists(os.path.join(out, "dataset.json")):
        return out, float(json.load(open(os.path.join(out, "seconds.json"))))
    start = time.perf_counter()
    convert(folder, out, 8)
    seconds = time.perf_counter() - start
    with open(os.path.join(out, "seconds.json"), "w") as f:
        json.dump(seconds, f)
    return out, seconds


def compare_loaders(folder: str, repeats: int, batch: int) -> dict:
    import tfscale as ts

    files, labels = list_images(folder)
    shards, convert_seconds = convert_once(folder)
    plain = plain_dataset(files, labels, batch)
    pipeline = ts.data.image_folder(folder, image_size=SIZE, channels=1).dataset(batch_size=batch)
    from_shards = ts.data.image_folder(shards, image_size=SIZE, channels=1).dataset(batch_size=batch)
    with Pool(2) as pool:
        arms = {"pil_loop": lambda: arm_pil(files, labels, batch), "pool2": lambda: arm_pool(pool, files, labels, batch),
                "tfdata_plain": lambda: count(plain), "tfscale": lambda: count(pipeline),
                "tfscale_shards": lambda: count(from_shards)}
        for fn in arms.values():  # warm-up: page cache, pools, tf.data functions
            fn()
        rates = {name: [] for name in arms}
        for _ in range(repeats):
            for name, fn in arms.items():
                rates[name].append(timed(fn))
    med = {name: statistics.median(r) for name, r in rates.items()}
    return {"images": len(files), "images_per_second": {k: round(v, 1) for k, v in med.items()},
            "all_rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "tfscale_vs_pil_loop": round(med["tfscale"] / med["pil_loop"], 2),
            "tfscale_vs_pool2": round(med["tfscale"] / med["pool2"], 2),
            "tfscale_vs_tfdata_plain": round(med["tfscale"] / med["tfdata_plain"], 2),
            "tfscale_shards_vs_pil_loop": round(med["tfscale_shards"] / med["pil_loop"], 2),
            "tfscale_shards_vs_pool2": round(med["tfscale_shards"] / med["pool2"], 2),
            "tfscale_shards_vs_tfdata_plain": round(med["tfscale_shards"] / med["tfdata_plain"], 2),
            "convert_seconds": round(convert_seconds, 2),
            "tfdata_plain_vs_pil_loop": round(med["tfdata_plain"] / med["pil_loop"], 2)}


def build_model():
    import keras

    model = keras.Sequential([
        keras.Input((*SIZE, 1)),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def compare_fit(folder: str, repeats: int, batch: int) -> dict:
    """Seconds per epoch of fit: streaming pipeline vs the same pipeline cached in memory."""
    import keras

    import tfscale as ts

    keras.utils.set_random_seed(0)
    model = build_model()
    pipeline = ts.data.image_folder(folder, image_size=SIZE, channels=1)
    streaming = pipeline.dataset(batch_size=batch)
    cached = pipeline.cache().dataset(batch_size=batch)
    model.fit(cached, epochs=1, verbose=0)  # fills the cache, compiles the step
    model.fit(streaming, epochs=1, verbose=0)
    seconds = {"streaming": [], "cached": []}
    for _ in range(repeats):
        for name, ds in (("streaming", streaming), ("cached", cached)):
            start = time.perf_counter()
            model.fit(ds, epochs=1, verbose=0)
            seconds[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    return {"seconds_per_epoch": {k: round(v, 3) for k, v in med.items()},
            "all_rounds": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
            "streaming_slowdown": round(med["streaming"] / med["cached"] - 1, 4)}


def main(argv=None) -> int:
    global SIZE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images per set (>= 2000 for the reported figures)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per arm; medians are reported")
    parser.add_argument("--size", type=int, default=96, help="decode and resize to SIZE x SIZE")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cache", default=None, help="folder for the image files (default ~/.cache/tfscale-bench)")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    SIZE = (args.size, args.size)
    folders = write_images(args.images, args.cache)
    result = {"benchmark": "images", "size": list(SIZE), "batch": args.batch, "repeats": args.repeats,
              "cpus": os.cpu_count(), "load_average_before": os.getloadavg()[0]}
    for kind, folder in folders.items():
        result[kind] = compare_loaders(folder, args.repeats, args.batch)
    if not args.skip_fit:
        result["fit_png"] = compare_fit(folders["png"], args.repeats, args.batch)
    result["load_average_after"] = os.getloadavg()[0]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
