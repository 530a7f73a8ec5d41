"""Image input benchmark: tfscale's image pipelines against what users write first, ratios side by side.

On real Fashion-MNIST images (>= 2,000, as 28x28 PNG files and as 256x256 JPEGs,
written once to ~/.cache/tfscale-bench by benchmarks/_data_fashion.py), one full
pass over the folder, decoded and resized to --size (grey), for each arm:

  pil_loop        a per-file PIL loop (open, convert, resize, to float array)
  pool2           the same function over multiprocessing.Pool(2)
  tfdata_plain    a hand-written tf.data pipeline (list files, parallel map decode+resize, batch, prefetch,
                  tf.data's autotuner on)
  tfscale         ts.data.image_folder(folder, image_size=...).dataset(batch_size=...)
  tfscale_skip    the same with on_error="skip" (clean data: skip mode's cost)
  tfscale_shards  the same call on the folder converted once by `tfscale data convert --store raw
                  --image-size S S --channels 1` (8 shards of uint8 pixels at the training size)
  tfscale_shards_encoded  ... converted with the default --store encoded (the PNG/JPEG bytes)

Arms alternate round by round; each figure is the median of --repeats rounds (>= 7),
images/s and the process's CPU time per image; a ratio of rates is the median of the
ratios within each round (a load that drifts between rounds cancels out). Then `fit` on the PNG set
(benchmarks/_bench_fit.py): the floor (input CPU per epoch against training CPU per
epoch) and epochs fed by streaming pipelines against the same data cached in memory.

    python benchmarks/bench_images.py [--images 2000] [--repeats 7] [--size 96] [--json out.json]

Prints one JSON object with the figures and the ratios the targets name.
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

from benchmarks._bench_fit import compare_fit  # noqa: E402
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


def timed(fn) -> tuple[float, float]:
    """(images/s, CPU microseconds of this process per image) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    n = fn()
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n * 1e6


def convert_once(folder: str, store: str) -> tuple[str, dict]:
    """The folder as 8 TFRecord shards (written once, next to the images) and the conversion's figures."""
    from tfscale.data.convert import convert

    out = f"{folder.rstrip('/')}-shards-{store}-{SIZE[0]}"
    figures = os.path.join(out, "bench.json")
    if os.path.exists(figures):
        return out, json.load(open(figures))
    start = time.perf_counter()
    summary = convert(folder, out, 8, store=store, image_size=SIZE if store == "raw" else None, channels=1,
                      overwrite=True)
    result = {"convert_seconds": round(time.perf_counter() - start, 2), "shard_bytes": summary["bytes"],
              "source_bytes": summary["source_bytes"], "size_vs_source": round(summary["bytes"] /
                                                                              summary["source_bytes"], 2)}
    with open(figures, "w") as f:
        json.dump(result, f)
    return out, result


def compare_loaders(folder: str, repeats: int, batch: int) -> dict:
    import tfscale as ts

    files, labels = list_images(folder)
    raw, raw_figures = convert_once(folder, "raw")
    encoded, encoded_figures = convert_once(folder, "encoded")
    pipelines = {
        "tfdata_plain": plain_dataset(files, labels, batch),
        "tfscale": ts.data.image_folder(folder, image_size=SIZE, channels=1).dataset(batch_size=batch),
        "tfscale_skip": ts.data.image_folder(folder, image_size=SIZE, channels=1,
                                             on_error="skip").dataset(batch_size=batch),
        "tfscale_shards": ts.data.image_folder(raw, image_size=SIZE, channels=1).dataset(batch_size=batch),
        "tfscale_shards_encoded": ts.data.image_folder(encoded, image_size=SIZE, channels=1).dataset(
            batch_size=batch),
    }
    with Pool(2) as pool:
        arms = {"pil_loop": lambda: arm_pil(files, labels, batch),
                "pool2": lambda: arm_pool(pool, files, labels, batch),
                **{name: (lambda ds=ds: count(ds)) for name, ds in pipelines.items()}}
        for fn in arms.values():  # warm-up: page cache, pools, tf.data functions
            fn()
        rounds = {name: [] for name in arms}
        for _ in range(repeats):
            for name, fn in arms.items():
                rounds[name].append(timed(fn))
    rate = {k: statistics.median(r for r, _ in v) for k, v in rounds.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in rounds.items() if k != "pool2"}  # pool2: children

    def ratio(a, b, figures=rate):
        """Median of the round-by-round ratios (each round runs every arm back to back, so a load that
        drifts between rounds cancels out); CPU figures: the ratio of the medians."""
        if figures is not rate:
            return round(figures[a] / figures[b], 3)
        return round(statistics.median(x[0] / y[0] for x, y in zip(rounds[a], rounds[b])), 3)

    return {"images": len(files), "images_per_second": {k: round(v, 1) for k, v in rate.items()},
            "cpu_us_per_image": {k: round(v, 1) for k, v in cpu.items()},
            "all_rounds_images_per_second": {k: [round(r, 1) for r, _ in v] for k, v in rounds.items()},
            "tfscale_vs_tfdata_plain": ratio("tfscale", "tfdata_plain"),
            "tfscale_cpu_vs_tfdata_plain": ratio("tfscale", "tfdata_plain", cpu),
            "tfscale_shards_vs_tfscale": ratio("tfscale_shards", "tfscale"),
            "tfscale_shards_vs_tfdata_plain": ratio("tfscale_shards", "tfdata_plain"),
            "tfscale_shards_encoded_vs_tfscale": ratio("tfscale_shards_encoded", "tfscale"),
            "tfscale_skip_vs_raise": ratio("tfscale_skip", "tfscale"),
            "tfscale_vs_pil_loop": ratio("tfscale", "pil_loop"), "tfscale_vs_pool2": ratio("tfscale", "pool2"),
            "tfdata_plain_vs_pil_loop": ratio("tfdata_plain", "pil_loop"),
            "convert_raw": raw_figures, "convert_encoded": encoded_figures}


def main(argv=None) -> int:
    global SIZE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=2000, help="images per set (>= 2000 for the reported figures)")
    parser.add_argument("--repeats", type=int, default=7, help="rounds per arm (>= 7); medians are reported")
    parser.add_argument("--fit-repeats", type=int, default=15,
                        help="rounds of the fit comparison (one round's ratio is noisy: see _bench_fit.py)")
    parser.add_argument("--size", type=int, default=96, help="decode and resize to SIZE x SIZE")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cache", default=None, help="folder for the image files (default ~/.cache/tfscale-bench)")
    parser.add_argument("--skip-fit", action="store_true")
    parser.add_argument("--skip-loaders", action="store_true")
    parser.add_argument("--json", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    SIZE = (args.size, args.size)
    folders = write_images(args.images, args.cache)
    result = {"benchmark": "images", "size": list(SIZE), "batch": args.batch, "repeats": args.repeats,
              "cpus": os.cpu_count(), "load_average_before": os.getloadavg()[0]}
    if not args.skip_loaders:
        for kind, folder in folders.items():
            result[kind] = compare_loaders(folder, args.repeats, args.batch)
    if not args.skip_fit:
        raw, _ = convert_once(folders["png"], "raw")
        result["fit_png"] = compare_fit(folders["png"], raw, SIZE, args.fit_repeats, args.batch)
    result["load_average_after"] = os.getloadavg()[0]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
