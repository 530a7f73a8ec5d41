"""What `tfscale data convert` writes: CSV rows and image files as serialized `tf.train.Example` records.

Images are stored as their file bytes (`store="encoded"`) or as raw uint8
pixels decoded and resized to the training size (`store="raw"`), decoded by
the same `images.decoding.BatchDecoder` the image pipeline uses (same JPEG scale,
same resize), then rounded to uint8.
"""

from __future__ import annotations

import collections
import csv as csv_lib
import logging
import os
from typing import Iterator

import numpy as np
import tensorflow as tf

from tfscale.data.badrecords import check_on_error
from tfscale.data.images.codecs import (TOO_LARGE, decoded_size, header_size, jpeg_ratio_for, looks_whole,
                                      too_large)
from tfscale.data.images.files import EXTENSIONS, ImageFolder
from tfscale.data.images.decoding import BatchDecoder
from tfscale.data.readers import infer_type, read_head
from tfscale.errors import DataError
from tfscale.vocabulary import OnError

log = logging.getLogger("tfscale")

IMAGE_SCHEMA = {"image": {"dtype": "string", "shape": []}, "label": {"dtype": "int64", "shape": []},
                "path": {"dtype": "string", "shape": []}}


def feature(kind: str, value) -> tf.train.Feature:
    if kind == "int64":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
    if kind == "float32":
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value if isinstance(value, bytes) else
                                                                   str(value).encode("utf-8")]))


def example(kinds: dict, row: dict) -> bytes:
    return tf.train.Example(features=tf.train.Features(
        feature={k: feature(kinds[k], v) for k, v in row.items()})).SerializeToString()


class Skips:
    """Bad input records met by convert: raise at once, or count them (on_error="skip")."""

    def __init__(self, on_error: OnError):
        self.on_error, self.counts = check_on_error(on_error), collections.Counter()

    def bad(self, what: str, where: str, fix: str) -> None:
        if self.on_error == "raise":
            raise DataError(what, where=where, fix=fix + ", or pass --on-error skip")
        self.counts[what] += 1
        log.warning("skipped %s: %s", what, where)


def csv_records(path: str, key: str | None, label: str | None, skips: Skips, column_types: dict | None = None):
    """(schema, records): records yield (key, serialized Example, label, share read) from a CSV file."""
    head = read_head(path, ",")
    if not head:
        raise DataError("CSV file is empty", where=path, fix="check the file")
    names = head[0]
    for given in (key, label):
        if given is not None and given not in names:
            raise DataError(f"column {given!r} not found", where=path, fix=f"use one of {names}")
    types = {"int": "int64", "float": "float32", "string": "string"}
    kinds = {n: types[(column_types or {}).get(n) or infer_type([r[i] for r in head[1:] if i < len(r)])]
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
                yield record_key, example(kinds, row), row.get(label) if label else None, consumed[0] / size

    schema = {n: {"dtype": k, "shape": []} for n, k in kinds.items()}
    return schema, records()


class ImageEncoder:
    """Turns image files into records: file bytes ("encoded") or uint8 pixels at `image_size` ("raw").

    Args:
        folder: the image folder (one subfolder per class).
        store: "encoded" or "raw".
        image_size: (height, width) for "raw".
        channels: channels for "raw".
    """

    def __init__(self, folder: str, store: str, image_size=None, channels: int = 3):
        self.source = ImageFolder(folder, extensions=EXTENSIONS)
        self.folder, self.store, self.image_size, self.channels = folder, store, image_size, channels
        if store == "raw":  # the choices image_folder(folder, image_size) makes: same decode, same resize
            paths = self.source.units
            heads = [_head(p) for p in paths[:: max(1, len(paths) // 16)][:16]]
            ratio = jpeg_ratio_for(heads, image_size, all_names=paths)
            decoder = BatchDecoder(image_size, channels, "bilinear", ratio, None, None)
            self._decode = tf.function(lambda contents: tf.cast(tf.round(decoder.images(
                contents, read_files=False)), tf.uint8), input_signature=[tf.TensorSpec([None], tf.string)])
        else:  # checked whole by decoding, so reading the shards never meets an image that will not decode
            self._decode = tf.function(lambda contents: tf.map_fn(lambda c: tf.shape(tf.io.decode_image(
                c, expand_animations=False)), contents, fn_output_signature=tf.int32),
                input_signature=[tf.TensorSpec([None], tf.string)])

    def relative(self, path: str) -> str:
        return os.path.relpath(path, self.folder).replace(os.sep, "/")

    def encode(self, paths: list[str], skips: Skips) -> list[tuple[str, bytes, int]]:
        """(key, serialized Example, label) of each whole image among `paths`, in order; bad ones to `skips`."""
        good = []
        for path in paths:
            with open(path, "rb") as f:
                data = f.read()
            if not looks_whole(data):
                skips.bad("corrupt or truncated image", path, "remove or replace the file")
            elif too_large(data):  # never decoded: a decompression bomb would take gigabytes
                skips.bad(TOO_LARGE, path, "shrink or remove the file")
            else:
                good.append((path, data))
        decoded = self._decoded(good, skips)
        good = [(p, image.tobytes() if self.store == "raw" else data) for (p, data), image in decoded]
        kinds = {"image": "string", "label": "int64", "path": "string"}
        return [(self.relative(p), example(kinds, {"image": data, "label": self.source.labels[p],
                                                   "path": self.relative(p)}), self.source.labels[p])
                for p, data in good]

    def _decoded(self, good: list[tuple[str, bytes]], skips: Skips) -> list:
        """[((path, bytes), decoded)] of the images that decode (all at once, or one by one after a failure)."""
        if not good:
            return []
        try:
            return list(zip(good, self._decode(tf.constant([d for _, d in good])).numpy()))
        except tf.errors.InvalidArgumentError:
            decoded = []
            for path, data in good:
                try:
                    decoded.append(((path, data), self._decode(tf.constant([data])).numpy()[0]))
                except tf.errors.InvalidArgumentError:
                    skips.bad("undecodable image", path, "remove or replace the file")
            return decoded

    def layout(self) -> dict:
        """What readers need to know about the stored images ("store", and "image" or "images")."""
        if self.store == "raw":
            return {"store": "raw", "image": [*self.image_size, self.channels]}
        formats, sizes = set(), set()
        for path in self.source.units:
            data = _head(path)
            formats.add("png" if data.startswith(b"\x89PNG") else "jpeg" if data.startswith(b"\xff\xd8") else "other")
            sizes.add(header_size(data) if "other" not in formats else None)
        known = None not in sizes
        return {"store": "encoded", "images": {
            "formats": sorted(formats), "size": list(next(iter(sizes))) if known and len(sizes) == 1 else None,
            "min_size": [min(s[0] for s in sizes), min(s[1] for s in sizes)] if known else None}}


def _head(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(4096)
    if data.startswith(b"\xff\xd8") and decoded_size(data, None) is None:
        with open(path, "rb") as f:
            data = f.read()
    return data


def raw_pixels(record: bytes, shape) -> np.ndarray:
    """The uint8 pixels of one raw-store record (for tests and tools)."""
    parsed = tf.io.parse_single_example(record, {"image": tf.io.FixedLenFeature([], tf.string)})
    return np.frombuffer(parsed["image"].numpy(), np.uint8).reshape(shape)
