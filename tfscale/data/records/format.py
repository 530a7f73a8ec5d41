"""The TFRecord format of `tfscale data convert`: shard and index names, `dataset.json`, feature specs, one record.

A converted folder holds `part-XXXXX-of-NNNNN.tfrecord` shards, a sorted
`.index` beside each, `manifest.json` (the source files and options they were
made from) and `dataset.json` (feature spec, records per shard, classes),
written last. A record with key `k` is in shard `shard_of(k, N)`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct

import tensorflow as tf

from tfscale.errors import ConfigError, DataError

META = "dataset.json"
MANIFEST = "manifest.json"
FORMAT = "tfscale-tfrecord/2"
_DTYPES = {"int64": tf.int64, "int": tf.int64, "float32": tf.float32, "float": tf.float32, "string": tf.string,
           "bytes": tf.string}


def shard_of(key: str, num_shards: int) -> int:
    """The shard a key goes to: a stable 64-bit hash of the key, modulo the number of shards."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little") % num_shards


def shard_file(i: int, n: int) -> str:
    return f"part-{i:05d}-of-{n:05d}.tfrecord"


def index_file(shard: str) -> str:
    return shard[: -len(".tfrecord")] + ".index"


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


def read_meta(folder: str) -> dict | None:
    """The `dataset.json` of a converted folder, or None when there is none."""
    path = os.path.join(folder, META)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def read_record_at(path: str, offset: int) -> bytes:
    """The payload of the record starting at byte `offset` of a TFRecord file (CRCs checked)."""
    with tf.io.gfile.GFile(path, "rb") as f:
        f.seek(offset)
        header = f.read(12)
        if len(header) < 12:
            raise DataError(f"no record at byte {offset}", where=path,
                            fix="rebuild the index with tfscale data convert")
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


def count_records(path: str) -> tuple[int, bool]:
    """(records, whole) of a TFRecord file by walking its framing (lengths only, no CRCs): fast.

    whole is False when the file ends inside a record (truncated) or holds garbage.
    """
    size, seen, offset = os.path.getsize(path), 0, 0
    with open(path, "rb") as f:
        while offset < size:
            f.seek(offset)
            header = f.read(8)
            if len(header) < 8:
                return seen, False
            offset += 16 + struct.unpack("<Q", header)[0]
            if offset > size:
                return seen, False
            seen += 1
    return seen, True
