"""`tfrecord()`: records of TFRecord files (a path, glob, list, or a `tfscale data convert` folder), parsed.

A folder written by `tfscale data convert` carries a `dataset.json` with the
feature spec, so `ts.data.tfrecord("out/")` needs nothing else. The reader is
`records.files.TfrecordFiles` (truncated or corrupt files are named or counted).
"""

from __future__ import annotations

import logging
import os

import tensorflow as tf

from tfscale.data.badrecords import BadRecords
from tfscale.data.pipeline import Pipeline
from tfscale.data.readers import expand_files
from tfscale.data.records.files import TfrecordFiles
from tfscale.data.records.format import META, feature_spec, read_meta, read_record_at
from tfscale.errors import ConfigError, DataError
from tfscale.vocabulary import OnError

__all__ = ["META", "feature_spec", "read_meta", "read_record_at", "tfrecord"]

log = logging.getLogger("tfscale")


def tfrecord(paths, features: dict | None = None, *, label: str | None = None, compression: str | None = None,
             on_error: OnError = "raise") -> Pipeline:
    """Records of TFRecord files (path, glob, list, or a `tfscale data convert` folder), parsed by `features`.

    Args:
        paths: files, or a folder written by `tfscale data convert` (its spec is used).
        features: {"name": "int64" | "float32" | "string" | (dtype, shape) | tf.io.FixedLenFeature};
            None yields the serialized records.
        label: a feature returned separately: elements become (features, label).
        compression: "GZIP" or "ZLIB" for compressed files.
        on_error: "raise" names a truncated file and the last good record; "skip" drops and counts.

    Example:
        ds = ts.data.tfrecord("data/*.tfrecord", {"x": ("float32", [8]), "y": "int64"}, label="y")
    """
    records = BadRecords()
    meta = read_meta(paths) if isinstance(paths, str) and os.path.isdir(paths) else None
    expected = None
    if meta:
        files = tuple(os.path.join(paths, s["file"]) for s in meta["shards"])
        missing = [f for f in files if not tf.io.gfile.exists(f)]
        if missing:
            raise DataError(f"{len(missing)} shard(s) missing", where=missing[0],
                            fix="rerun `tfscale data convert` with the same arguments to finish the missing shards")
        if meta.get("kind") == "images" and meta.get("store") == "raw":
            log.warning("%s holds raw %s pixels, not image files: read it with ts.data.image_folder(%r, image_size)",
                        paths, "x".join(map(str, meta["image"])), paths)
        features = features or {k: (v["dtype"], v["shape"]) for k, v in meta["features"].items()}
        label = label if label is not None else meta.get("label")
        expected = {os.path.join(paths, s["file"]): s["records"] for s in meta["shards"]}
    else:
        files = tuple(f for f in expand_files(paths, what="tfrecord", on_error=on_error, pipeline_records=records)
                      if not f.endswith((".index", ".json")))
    spec = feature_spec(features) if features else None
    if label is not None and (spec is None or label not in spec):
        raise ConfigError(f"label {label!r} is not a feature", where="tfrecord(label=...)",
                          fix=f"use one of {sorted(spec or {})}")
    source = TfrecordFiles(files, spec=spec, label=label, compression=compression, expected=expected)
    return Pipeline(source, on_error=on_error, records=records)
