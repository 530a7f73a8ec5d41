"""TFRecord files: a source with a feature spec, truncation checks, and reading one record at an offset.

A folder written by `tfscale data convert` carries a `dataset.json` with the
feature spec, so `ts.data.tfrecord("out/")` needs nothing else.

Truncated or corrupt files are caught by counting the bytes each file yields
(16 framing bytes per record plus its payload) against the file's size.
"""

from __future__ import annotations

import json
import os
import struct

import tensorflow as tf

from tfscale.data import badrecords
from tfscale.data.badrecords import BadRecords
from tfscale.data.core import AUTOTUNE, Build, Source
from tfscale.data.sources import expand_files
from tfscale.errors import ConfigError, DataError

META = "dataset.json"
_DTYPES = {"int64": tf.int64, "int": tf.int64, "float32": tf.float32, "float": tf.float32, "string": tf.string,
           "bytes": tf.string}
_FIX = "re-create the file (tfscale data convert reruns missing shards), or use on_error='skip'"


def feature_spec(features: dict) -> dict:
    """A parse spec from shorthands: "int64" / "float32" / "string", (dtype, shape), or tf.io specs."""
    spec = {}
    for name, value in features.items():
        if isinstance(value, (tf.io.FixedLenFeature, tf.io.VarLenFeature, tf.io.FixedLenSequenceFeature)):
            spec[name] = value
            continue
        dtype, shape = (value, []) if isinstance(value, str) else (value[0], list(value[1]))
        if isinstance(dtype, str) and dtype not in _DTYPES:
            raise ConfigError(f"unknown feature type {dtype!r} for {name!r}", where="tfrecord(features=...)",
                              fix=f"use one of {sorted(_DTYPES)}")
        spec[name] = tf.io.FixedLenFeature(shape, _DTYPES.get(dtype, dtype))
    return spec


class TfrecordFiles(Source):
    """Serialized records of TFRecord files, each keyed by file and record number (0-based)."""

    def __init__(self, files, *, spec, label, compression, expected=None):
        self.units, self.spec, self.label, self.compression = files, spec, label, compression
        self.sizes = {f: tf.io.gfile.stat(f).length for f in files}
        self.expected = expected or {}
        self.name = f"tfrecord({os.path.basename(files[0])}{'...' if len(files) > 1 else ''})"

    def read(self, units, build: Build) -> tf.data.Dataset:
        """(path, record number, record) of each file; the bytes read are checked against the file size.

        Records are handled 256 at a time inside each file: a tf.data function call costs
        tens of microseconds, more than reading a record.
        """
        compression = self.compression

        def records(path, size):
            raw = tf.data.TFRecordDataset(path, compression_type=compression)
            if not compression:
                raw = raw.ignore_errors()  # a DataLossError ends the file; the byte count below reports it
            chunks = raw.batch(_CHUNK).map(lambda r: (r, tf.constant(False)))
            end = tf.data.Dataset.from_tensors((tf.zeros([0], tf.string), tf.constant(True)))
            zero = tf.constant(0, tf.int64)
            checked = chunks.concatenate(end).scan((zero, zero), _count_bytes(path, size, bool(compression), build))
            return checked.unbatch()

        units = list(units)
        files = tf.data.Dataset.from_tensor_slices((units, tf.constant([self.sizes[u] for u in units], tf.int64)))
        files = build.shuffled(files, len(units))
        return files.interleave(records, cycle_length=min(len(units), 8), num_parallel_calls=AUTOTUNE,
                                deterministic=build.deterministic)

    def unit_counts(self) -> tuple[int, ...] | None:
        """Records per file from the `tfscale data convert` metadata; None for other files."""
        if not all(u in self.expected for u in self.units):
            return None
        return tuple(int(self.expected[u]) for u in self.units)

    def parse(self, records: tf.data.Dataset, build: Build) -> tf.data.Dataset:
        if self.spec is None:
            return records
        spec, label = self.spec, self.label

        par = dict(num_parallel_calls=AUTOTUNE, deterministic=build.deterministic)

        def parse(path, n, record):  # one record, or a batch of them (parse_example is vectorized)
            row = (tf.io.parse_single_example if record.shape.rank == 0 else tf.io.parse_example)(record, spec)
            return path, n, (row if label is None else ({k: v for k, v in row.items() if k != label}, row[label]))

        if build.on_error == "skip":  # one by one, so a malformed record costs only itself
            return records.map(parse, **par).ignore_errors(log_warning=True)
        if any(not isinstance(f, tf.io.FixedLenFeature) for f in spec.values()):
            return records.map(parse, **par)
        return records.batch(64, **par).map(parse, **par).unbatch()

    def label_of(self, element):
        if self.label is None:
            raise ConfigError("this TFRecord pipeline has no label feature", where="balance()",
                              fix="pass label='feature' to balance() or to ts.data.tfrecord()")
        return element[1]


_CHUNK = 256


def _count_bytes(path, size, compressed: bool, build: Build):
    """A scan step over chunks of one file: (bytes, records) so far; the empty end chunk checks bytes == size.

    Emits (paths, record numbers, records) for the chunk, to be unbatched.
    """

    def step(state, item):
        consumed, seen = state
        chunk, last = item
        n = tf.size(chunk, out_type=tf.int64)
        consumed = consumed + tf.reduce_sum(tf.cast(tf.strings.length(chunk), tf.int64) + 16)
        sound = tf.logical_or(tf.logical_not(last), tf.logical_or(tf.constant(compressed), tf.equal(consumed, size)))
        key = tf.strings.join([path, ", after ", tf.strings.as_string(seen), " good record(s)"])
        keep = build.guard(sound, "truncated or corrupt TFRecord file", key, _FIX)
        chunk = badrecords.gate(chunk, keep)  # in raise mode the check runs before the chunk moves on
        numbers = seen + tf.range(n, dtype=tf.int64)
        return (consumed, seen + n), (tf.fill([n], path), numbers, chunk)

    return step


def read_meta(folder: str) -> dict | None:
    path = os.path.join(folder, META)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def tfrecord(paths, features: dict | None = None, *, label: str | None = None, compression: str | None = None,
             on_error: str = "raise"):
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
    from tfscale.data.pipeline import Pipeline

    records = BadRecords()
    meta = read_meta(paths) if isinstance(paths, str) and os.path.isdir(paths) else None
    expected = None
    if meta:
        files = tuple(os.path.join(paths, s["file"]) for s in meta["shards"])
        missing = [f for f in files if not tf.io.gfile.exists(f)]
        if missing:
            raise DataError(f"{len(missing)} shard(s) missing", where=missing[0],
                            fix="rerun `tfscale data convert` to finish the missing shards")
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


def read_record_at(path: str, offset: int) -> bytes:
    """The payload of the record starting at byte `offset` of a TFRecord file (CRCs checked)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        f.seek(offset)
        header = f.read(12)
        if len(header) < 12:
            raise DataError(f"no record at byte {offset}", where=path, fix="rebuild the index with tfscale data convert")
        (length,) = struct.unpack("<Q", header[:8])
        payload, crc = f.read(length), f.read(4)
    if struct.unpack("<I", header[8:12])[0] != _masked_crc(header[:8]) or len(crc) < 4 or \
            struct.unpack("<I", crc)[0] != _masked_crc(payload):
        raise DataError(f"corrupt record at byte {offset}", where=path, fix="rerun tfscale data convert for this shard")
    return payload


def _crc32c_table():
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
