"""`tfscale data inspect`: counts, class balance, bytes, and whether the input keeps up with training.

The throughput probe reads batches through the same pipeline training would
use and compares examples/s with what a given step time needs
(batch_size / step_time).
"""

from __future__ import annotations

import os
import time

from tfscale.data.image_folder import image_folder
from tfscale.data.records.format import count_records, read_meta
from tfscale.data.tables import csv
from tfscale.data.tfrecord import tfrecord
from tfscale.errors import DataError


def inspect(path: str, *, step_time: float | None = None, batch_size: int = 32, probe_batches: int = 20,
            image_size=(64, 64)) -> dict:
    """Describes a converted TFRecord folder, an image folder or a CSV file.

    Args:
        path: a folder from `tfscale data convert`, an image folder, or a CSV file.
        step_time: seconds one training step takes; the probe says if the input keeps up.
        batch_size: examples per step for the probe.
        probe_batches: batches read by the probe (after one warm-up batch); 0 skips it.
        image_size: decode size for images in the probe.

    Returns:
        A dict: kind, files, records, bytes, classes ({name: count}), probe figures and verdict; for a
        converted folder also whether the records counted in its shards match `dataset.json`
        (counts_match, and problems naming each shard that differs).
    """
    meta = read_meta(path) if os.path.isdir(path) else None
    if meta is not None:
        report, pipeline = _converted(path, meta, image_size)
    elif os.path.isdir(path):
        report, pipeline = _image_folder(path, image_size)
    elif os.path.isfile(path):
        pipeline = csv(path)
        report = {"kind": "csv", "files": 1, "bytes": os.path.getsize(path), "records": None, "classes": None}
    else:
        raise DataError("nothing to inspect", where=path, fix="give a converted folder, an image folder or a CSV file")
    if probe_batches > 0:
        report.update(probe(pipeline, batch_size, probe_batches, step_time))
    return report


def _converted(path: str, meta: dict, image_size):
    names = meta.get("class_names") or []
    classes = {(names[int(k)] if names and k.lstrip("-").isdigit() and int(k) < len(names) else k): v
               for k, v in meta.get("class_counts", {}).items()} or None
    if meta.get("kind") == "images":
        if meta.get("store") == "raw":
            image_size = tuple(meta["image"][:2])
        pipeline = image_folder(path, image_size, channels=meta["image"][2] if meta.get("store") == "raw" else 3)
    else:
        pipeline = tfrecord(path)
    shards = meta["shards"]
    problems = []
    for shard in shards:
        found, whole = count_records(os.path.join(path, shard["file"]))
        if found != shard["records"] or not whole:
            problems.append(f"{shard['file']}: dataset.json says {shard['records']} records, the file holds "
                            f"{found}{'' if whole else ' and ends inside a record'}")
    report = {"kind": f"tfrecord ({meta.get('kind')})", "files": len(shards),
              "records": sum(s["records"] for s in shards),
              "bytes": sum(os.path.getsize(os.path.join(path, s["file"])) for s in shards),
              "records_per_shard": [s["records"] for s in shards], "classes": classes,
              "skipped_at_convert": sum(meta.get("skipped", {}).values()), "store": meta.get("store", "encoded"),
              "counts_match": not problems, "problems": problems}
    return report, pipeline


def _image_folder(path: str, image_size):
    pipeline = image_folder(path, image_size=image_size)
    source = pipeline.source
    counts = source.class_counts()
    classes = {source.class_names[k]: v for k, v in sorted(counts.items())}
    report = {"kind": "image folder", "files": len(source.units), "records": len(source.units),
              "bytes": sum(os.path.getsize(p) for p in source.units), "classes": classes}
    return report, pipeline


def probe(pipeline, batch_size: int, batches: int, step_time: float | None) -> dict:
    """Examples/s read through `pipeline` in batches, and whether that keeps up with `step_time`."""
    ds = pipeline.repeat().dataset(batch_size=batch_size)
    iterator = iter(ds)
    next(iterator)  # warm-up: opens files, fills buffers
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    rate = batches * batch_size / (time.perf_counter() - start)
    result = {"examples_per_second": round(rate, 1), "probe_batch_size": batch_size}
    if step_time:
        needed = batch_size / step_time
        result.update({"needed_per_second": round(needed, 1), "keeps_up": rate >= needed,
                       "verdict": (f"keeps up: {rate:.0f} examples/s >= {needed:.0f} needed at {step_time}s/step"
                                   if rate >= needed else
                                   f"too slow: {rate:.0f} examples/s < {needed:.0f} needed at {step_time}s/step; "
                                   f"convert to TFRecords, cache, or add tf.data service workers")})
    return result
