"""`tfscale data convert`: a CSV file or an image folder -> sharded TFRecords + index + manifest + dataset.json.

A record with key k goes to shard `shard_of(k, N)` (so `lookup(k)` knows its
shard); inside a shard records are written in a seeded shuffled order,
stratified by label so every window of records holds the classes in their
proportions (`shuffle=False` keeps the source order).

Atomic and resumable: `manifest.json` (the source files and the options) is
written first; each shard and its index are written under temporary names and
renamed when whole; `dataset.json` last. A rerun with the same source and
options writes only the missing shards (images: reading only their files);
with anything changed it refuses and names the change (`overwrite=True`
rebuilds). The source is checked before anything is written, and a new
conversion that stops at a bad record (raise mode) removes what it wrote.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import json
import logging
import os
import random
from typing import Callable

import tensorflow as tf

from tfscale.data.records import manifest
from tfscale.data.encoders import IMAGE_SCHEMA, ImageEncoder, Skips, csv_records
from tfscale.data.images.decoding import image_size_of
from tfscale.data.records.index import write_index
from tfscale.data.records.format import FORMAT, MANIFEST, META, index_file, shard_file, shard_of
from tfscale.errors import ConfigError, DataError, TfscaleError
from tfscale.storage import PendingFile, atomic_path, atomic_write
from tfscale.vocabulary import OnError

log = logging.getLogger("tfscale")

Progress = Callable[[int, float], None]  # (records so far, share of the input read, 0..1)
_IMAGE_CHUNK = 256  # images read and encoded at a time


def convert(src: str, out: str, num_shards: int, *, key: str | None = None, label: str | None = None,
            on_error: OnError = "raise", progress: Progress | None = None, shuffle: bool = True, seed: int = 0,
            store: str = "encoded", image_size=None, channels: int = 3, overwrite: bool = False) -> dict:
    """Converts a CSV file or an image folder into `num_shards` TFRecord shards with an index.

    Args:
        src: a CSV file, or a folder with one subfolder of images per class.
        out: output folder (created).
        num_shards: number of shards; use at least the number of workers that will read them.
        key: CSV column whose (unique) values index the records; default: row number
            (images: the path relative to `src`).
        label: CSV column to record as the label (counted per class by `inspect`).
        on_error: "raise" at the first bad record, or "skip" it and count it.
        progress: called as progress(records, share_of_input) while converting.
        shuffle: write each shard's records in a seeded shuffled order (stratified by label).
        seed: the shuffle's seed.
        store: images only: "encoded" (the file bytes) or "raw" (uint8 pixels at `image_size`:
            no decoding when training reads them, at the cost of size).
        image_size: (height, width) for store="raw".
        channels: channels for store="raw" (1, 3 or 4).
        overwrite: rebuild shards made from another source or with other options.

    Returns:
        A summary: shards written and kept, records, skipped bad records, bytes of the shards and of
        the source, output folder.

    Raises:
        DataError: the input is missing or bad (raise mode), or `out` holds shards of another
            source or options (without `overwrite`).
    """
    images = os.path.isdir(src)
    options = _options(src, images, num_shards, key, label, shuffle, seed, store, image_size, channels)
    if not images and not os.path.isfile(src):
        raise DataError("input does not exist", where=src, fix="give a CSV file or an image folder")
    wanted = manifest.make(src, options)
    skips = Skips(on_error)
    # the source is checked (images found, the CSV's header and columns) before anything is written
    encoder = ImageEncoder(src, store, options["image_size"], channels) if images else None
    csv_input = None if images else csv_records(src, key, label, skips)
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    for stale in manifest.temporaries(out):  # an interrupted run's half shards and spill files
        os.remove(stale)
    if overwrite:
        for path in manifest.existing(out):
            os.remove(path)
    manifest.check_resumable(out, wanted)
    fresh = not os.path.exists(os.path.join(out, MANIFEST))
    if fresh:
        atomic_write(os.path.join(out, MANIFEST), json.dumps(wanted).encode(), sync=False)
    try:
        meta, written = _write_shards(out, num_shards, encoder, csv_input, label, skips, shuffle, seed, progress)
    except TfscaleError:  # a bad record (raise mode): a new conversion leaves nothing, not a resumable half
        if fresh:
            for path in manifest.existing(out):
                os.remove(path)
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(out)
        raise
    shards = meta["shards"]
    source_bytes = sum(row[1] for row in wanted["files"])
    meta.update({"format": FORMAT, "source": os.path.abspath(src), "num_shards": num_shards, "key": key,
                 "skipped": dict(skips.counts), "shuffle": seed if shuffle else None, "source_bytes": source_bytes})
    atomic_write(os.path.join(out, META), json.dumps(meta, indent=1).encode(), sync=False)
    total = sum(s["bytes"] for s in shards)
    return {"out": out, "shards_written": written, "shards_kept": num_shards - written,
            "records": sum(s["records"] for s in shards), "skipped": sum(skips.counts.values()), "bytes": total,
            "source_bytes": source_bytes, "store": meta.get("store")}


def _write_shards(out: str, num_shards: int, encoder: ImageEncoder | None, csv_input, label, skips: Skips,
                  shuffle: bool, seed: int, progress: Progress | None) -> tuple[dict, int]:
    """Writes the shards not yet in `out`; (dataset.json's description of them, how many were written)."""
    names = [shard_file(i, num_shards) for i in range(num_shards)]
    todo = [i for i, n in enumerate(names) if not (os.path.exists(os.path.join(out, n)) and
                                                   os.path.exists(os.path.join(out, index_file(n))))]
    if encoder is not None:
        counts, classes = _image_shards(encoder, out, names, todo, skips, shuffle, seed, progress)
        meta = {"kind": "images", "features": IMAGE_SCHEMA, "label": "label", "class_names": encoder.source.class_names,
                **encoder.layout()}
    else:
        schema, records = csv_input
        counts, classes = _csv_shards(records, out, names, todo, shuffle, seed, progress)
        meta = {"kind": "csv", "features": schema, "label": label, "class_names": None}
    meta["shards"] = [{"file": n, "index": index_file(n), "records": counts[i],
                       "bytes": os.path.getsize(os.path.join(out, n))} for i, n in enumerate(names)]
    meta["class_counts"] = {str(k): v for k, v in sorted(classes.items())}
    return meta, len(todo)


def _options(src, images, num_shards, key, label, shuffle, seed, store, image_size, channels) -> dict:
    if num_shards < 1:
        raise ConfigError(f"--shards must be >= 1, got {num_shards}", where="--shards", fix="give a positive number")
    if store not in ("encoded", "raw"):
        raise ConfigError(f"--store must be encoded or raw, got {store!r}", where="--store",
                          fix="encoded keeps the file bytes; raw stores pixels at --image-size")
    if images and key:
        raise ConfigError("--key is for CSV input; images are keyed by their relative path", where="--key",
                          fix="leave --key out for an image folder")
    if store == "raw" and not (images and image_size):
        raise ConfigError("--store raw needs an image folder and --image-size H W", where="--store raw",
                          fix="give the size training reads, e.g. --image-size 96 96 (and --channels)")
    if image_size and store != "raw":
        raise ConfigError("--image-size is for --store raw (encoded shards keep each file as it is)",
                          where="--image-size", fix="add --store raw, or leave --image-size out")
    if channels not in (1, 3, 4):
        raise ConfigError(f"--channels must be 1, 3 or 4, got {channels}", where="--channels", fix="use 1, 3 or 4")
    size = list(image_size_of(image_size)) if image_size else None
    return {"num_shards": num_shards, "key": key, "label": "label" if images else label, "shuffle": shuffle,
            "seed": seed if shuffle else None, "store": store if images else None,
            "image_size": size if store == "raw" else None, "channels": channels if store == "raw" else None}


def shuffled(items: list, labels: list, seed, salt: int) -> list:
    """`items` in a seeded order, stratified by label: every prefix holds each class in its proportion (±1)."""
    rng = random.Random(f"{seed}/{salt}")
    by_class: dict = collections.defaultdict(list)
    for item, label in zip(items, labels):
        by_class[label].append(item)
    keyed = []
    for members in by_class.values():
        rng.shuffle(members)
        n = len(members)
        keyed.extend(((i + rng.random()) / n, rng.random(), item) for i, item in enumerate(members))
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [item for _, _, item in keyed]


class ShardWriter:
    """Writes one shard and its index as `PendingFile`s; `close()` moves them into place, the index first."""

    def __init__(self, out: str, name: str):
        self.final = os.path.join(out, name)
        self.shard = PendingFile(self.final, sync=False)
        self.writer = tf.io.TFRecordWriter(self.shard.tmp)
        self.entries: list[tuple[str, int]] = []
        self.offset = 0

    def write(self, key: str, payload: bytes) -> None:
        self.writer.write(payload)
        self.entries.append((key, self.offset))
        self.offset += len(payload) + 16

    def close(self) -> int:
        self.writer.close()
        with atomic_path(index_file(self.final), sync=False) as index:
            write_index(index, self.entries)
        self.shard.commit()  # the shard last: a shard without its index is rewritten
        return len(self.entries)

    def abort(self) -> None:
        self.writer.close()
        self.shard.discard()


def _image_shards(encoder: ImageEncoder, out: str, names: list[str], todo: list[int], skips: Skips, shuffle: bool,
                  seed: int, progress: Progress | None):
    """Writes the shards in `todo`, one at a time, reading only their files; (records per shard, class counts)."""
    source, n = encoder.source, len(names)
    members: dict[int, list[str]] = collections.defaultdict(list)
    for path in source.units:
        members[shard_of(encoder.relative(path), n)].append(path)
    counts, classes, done = [0] * n, collections.Counter(), 0
    for i in range(n):
        paths = members[i]
        if shuffle:
            paths = shuffled(paths, [source.labels[p] for p in paths], seed, i)
        if i not in todo:  # whole from an earlier run of the same source and options: count what it holds
            kept = _indexed_keys(os.path.join(out, names[i]))
            counts[i] = len(kept)
            classes.update(source.labels[p] for p in paths if encoder.relative(p) in kept)
            skips.counts["corrupt or truncated image"] += len(paths) - len(kept)
            done += len(paths)
            continue
        writer = ShardWriter(out, names[i])
        try:
            for start in range(0, len(paths), _IMAGE_CHUNK):
                for record_key, payload, label in encoder.encode(paths[start:start + _IMAGE_CHUNK], skips):
                    writer.write(record_key, payload)
                    classes[label] += 1
                done += len(paths[start:start + _IMAGE_CHUNK])
                if progress:
                    progress(done, done / len(source.units))
            counts[i] = writer.close()
        except BaseException:
            writer.abort()
            raise
    skips.counts = +skips.counts
    return counts, classes


def _indexed_keys(shard: str) -> set[str]:
    with open(index_file(shard), "rb") as f:
        return {line.split(b"\t", 1)[0].decode("utf-8").replace("\\t", "\t").replace("\\n", "\n")
                .replace("\\\\", "\\") for line in f if line.strip()}


def _csv_shards(records, out: str, names: list[str], todo: list[int], shuffle: bool, seed: int,
                progress: Progress | None):
    """Streams the CSV once: records of the shards in `todo` go to spill files (source order), then each
    shard is written from its spill file in shuffled order; (records per shard, class counts)."""
    n, tmp = len(names), f".tmp-{os.getpid()}"
    spills = {i: tf.io.TFRecordWriter(os.path.join(out, names[i] + ".spill" + tmp)) for i in todo}
    places: dict[int, list] = {i: [] for i in todo}
    offsets = dict.fromkeys(todo, 0)
    counts, classes = [0] * n, collections.Counter()
    try:
        for count, (record_key, payload, label, share) in enumerate(records, 1):
            s = shard_of(record_key, n)
            counts[s] += 1
            if label is not None:
                classes[label] += 1
            if s in spills:
                spills[s].write(payload)
                places[s].append((record_key, label, offsets[s], len(payload)))
                offsets[s] += len(payload) + 16
            if progress and (count % 500 == 0 or share >= 1.0):
                progress(count, share)
        for i in todo:
            spills[i].close()
            rows = places[i]
            if shuffle:
                rows = shuffled(rows, [r[1] for r in rows], seed, i)
            writer = ShardWriter(out, names[i])
            try:
                with open(os.path.join(out, names[i] + ".spill" + tmp), "rb") as spill:
                    for record_key, _, offset, length in rows:
                        spill.seek(offset + 12)
                        writer.write(record_key, spill.read(length))
                writer.close()
            except BaseException:
                writer.abort()
                raise
    finally:
        for writer in spills.values():
            writer.close()
        for stale in glob.glob(os.path.join(out, f"*{tmp}")):
            os.remove(stale)
    return counts, classes

