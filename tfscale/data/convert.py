"""`tfscale data convert`: a CSV file or an image folder -> sharded TFRecords + index + dataset.json.

Streaming: one pass over the input, records go to shard `shard_of(key, N)`.
Shards and indexes are written under temporary names and renamed when whole,
so an interrupted run leaves no half shard; a rerun writes only the shards
that are missing (it reads the input again but skips the finished shards).
"""

from __future__ import annotations

import collections
import csv as csv_lib
import glob
import json
import logging
import os
from typing import Callable, Iterator

import tensorflow as tf

from tfscale.data.index import index_file, shard_file, shard_of, write_index
from tfscale.data.tfrecord import META
from tfscale.errors import ConfigError, DataError

log = logging.getLogger("tfscale")

Progress = Callable[[int, float], None]  # (records so far, share of the input read, 0..1)


def _feature(kind: str, value):
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    if kind == "float32":
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value if isinstance(value, bytes) else
                                                                   str(value).encode("utf-8")]))


def _example(kinds: dict, row: dict) -> bytes:
    return tf.train.Example(features=tf.train.Features(
        feature={k: _feature(kinds[k], v) for k, v in row.items()})).SerializeToString()


class Skips:
    """Bad input records met by convert: raise at once, or count them (on_error="skip")."""

    def __init__(self, on_error: str):
        self.on_error, self.counts = on_error, collections.Counter()

    def bad(self, what: str, where: str, fix: str) -> None:
        if self.on_error == "raise":
            raise DataError(what, where=where, fix=fix + ", or pass --on-error skip")
        self.counts[what] += 1
        log.warning("skipped %s: %s", what, where)


def csv_records(path: str, key: str | None, label: str | None, skips: Skips,
                column_types: dict | None = None):
    """(schema, records): records yield (key, serialized Example, label, share read) from a CSV file."""
    from tfscale.data.tables import _infer, _read_head

    head = _read_head(path, ",")
    if not head:
        raise DataError("CSV file is empty", where=path, fix="check the file")
    names = head[0]
    for given in (key, label):
        if given is not None and given not in names:
            raise DataError(f"column {given!r} not found", where=path, fix=f"use one of {names}")
    types = {"int": "int64", "float": "float32", "string": "string"}
    kinds = {n: types[(column_types or {}).get(n) or _infer([r[i] for r in head[1:] if i < len(r)])]
             for i, n in enumerate(names)}
    casts = {"int64": int, "float32": float, "string": str}
    defaults = {"int64": 0, "float32": 0.0, "string": ""}
    size = max(1, os.path.getsize(path))

    consumed = [0]

    def lines(f):
        for raw in f:
            consumed[0] += len(raw)
            yield raw.decode("utf-8", errors="replace")

    def records() -> Iterator:
        with open(path, "rb") as f:
            reader = csv_lib.reader(lines(f))
            next(reader)
            for row_number, fields in enumerate(reader):
                line = reader.line_num
                if not fields:
                    continue
                try:
                    if len(fields) != len(names):
                        raise ValueError(f"{len(fields)} fields, expected {len(names)}")
                    row = {n: casts[kinds[n]](v) if v.strip() else defaults[kinds[n]] for n, v in zip(names, fields)}
                except ValueError as e:
                    skips.bad(f"malformed CSV row ({e})", f"{path}:{line}", "correct or remove the line")
                    continue
                record_key = str(row[key]) if key else str(row_number)
                yield record_key, _example(kinds, row), row.get(label) if label else None, consumed[0] / size

    schema = {n: {"dtype": k, "shape": []} for n, k in kinds.items()}
    return schema, records()


def image_records(folder: str, skips: Skips):
    """(schema, records, class names): Examples of {image bytes, label, path} keyed by relative path."""
    from tfscale.data.images import EXTENSIONS, ImageFolder

    source = ImageFolder(folder, extensions=EXTENSIONS)
    paths = source.units
    names = source.class_names

    def records() -> Iterator:
        for i, path in enumerate(paths):
            with open(path, "rb") as f:
                data = f.read()
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            if not _looks_whole(data):
                skips.bad("corrupt or truncated image", path, "remove or replace the file")
                continue
            label = source._label[path]
            row = {"image": data, "label": label, "path": relative}
            yield relative, _example({"image": "string", "label": "int64", "path": "string"}, row), label, \
                (i + 1) / len(paths)

    schema = {"image": {"dtype": "string", "shape": []}, "label": {"dtype": "int64", "shape": []},
              "path": {"dtype": "string", "shape": []}}
    return schema, records(), names


def _looks_whole(data: bytes) -> bool:
    """The Python twin of image_codecs.image_ok: signature and end marker of JPEG, PNG, GIF or BMP."""
    if data.startswith(b"\xff\xd8\xff"):
        return b"\xff\xd9" in data[-1024:]
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data.endswith(b"IEND\xaeB`\x82")
    if data.startswith(b"GIF8"):
        return data.endswith(b";")
    return data.startswith(b"BM") and len(data) >= 6 and int.from_bytes(data[2:6], "little") <= len(data)


def convert(src: str, out: str, num_shards: int, *, key: str | None = None, label: str | None = None,
            on_error: str = "raise", progress: Progress | None = None) -> dict:
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

    Returns:
        A summary: shards written and skipped, records, skipped bad records, output folder.
    """
    if num_shards < 1:
        raise ConfigError(f"--shards must be >= 1, got {num_shards}", where="--shards", fix="give a positive number")
    skips = Skips(on_error)
    class_names = None
    if os.path.isdir(src):
        if key:
            raise ConfigError("--key is for CSV input; images are keyed by their relative path", where="--key",
                              fix="leave --key out for an image folder")
        schema, records, class_names = image_records(src, skips)
        label = "label"
    elif os.path.isfile(src):
        schema, records = csv_records(src, key, label, skips)
    else:
        raise DataError("input does not exist", where=src, fix="give a CSV file or an image folder")
    os.makedirs(out, exist_ok=True)
    for stale in glob.glob(os.path.join(out, "*.tmp-*")):
        os.remove(stale)
    names = [shard_file(i, num_shards) for i in range(num_shards)]
    todo = [i for i, n in enumerate(names) if not (os.path.exists(os.path.join(out, n)) and
                                                   os.path.exists(os.path.join(out, index_file(n))))]
    counts, classes = _write_shards(records, out, names, todo, progress)
    meta = {"format": "tfscale-tfrecord/1", "source": os.path.abspath(src), "kind": "images" if class_names else "csv",
            "num_shards": num_shards, "key": key, "label": label, "features": schema,
            "shards": [{"file": n, "index": index_file(n), "records": counts[i],
                        "bytes": os.path.getsize(os.path.join(out, n))} for i, n in enumerate(names)],
            "class_names": class_names, "class_counts": {str(k): v for k, v in sorted(classes.items())},
            "skipped": dict(skips.counts)}
    _atomic_write(os.path.join(out, META), json.dumps(meta, indent=1).encode())
    return {"out": out, "shards_written": len(todo), "shards_kept": num_shards - len(todo),
            "records": sum(counts), "skipped": sum(skips.counts.values())}


def _write_shards(records, out: str, names: list[str], todo: list[int], progress: Progress | None):
    """Streams records into the shards in `todo` (temporary names, renamed when all are whole)."""
    tmp = f".tmp-{os.getpid()}"
    writers = {i: tf.io.TFRecordWriter(os.path.join(out, names[i] + tmp)) for i in todo}
    entries: dict[int, list] = {i: [] for i in todo}
    offsets = dict.fromkeys(todo, 0)
    counts, classes = [0] * len(names), collections.Counter()
    try:
        for n, (record_key, payload, label, share) in enumerate(records, 1):
            s = shard_of(record_key, len(names))
            counts[s] += 1
            if label is not None:
                classes[label] += 1
            if s in writers:
                writers[s].write(payload)
                entries[s].append((record_key, offsets[s]))
                offsets[s] += len(payload) + 16
            if progress and (n % 500 == 0 or share >= 1.0):
                progress(n, share)
        for i in todo:
            writers[i].close()
            write_index(os.path.join(out, index_file(names[i]) + tmp), entries[i])
            os.replace(os.path.join(out, names[i] + tmp), os.path.join(out, names[i]))
            os.replace(os.path.join(out, index_file(names[i]) + tmp), os.path.join(out, index_file(names[i])))
    finally:
        for i in todo:
            writers[i].close()
        for stale in glob.glob(os.path.join(out, f"*{tmp}")):
            os.remove(stale)
    return counts, classes


def _atomic_write(path: str, data: bytes) -> None:
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.replace(path + ".tmp", path)
