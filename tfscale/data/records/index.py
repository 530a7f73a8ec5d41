"""Index beside TFRecord shards: key -> (shard, offset), so `lookup(key)` reads one record without scanning.

A record goes to shard `shard_of(key, N)` (a stable hash), so a lookup knows its
shard from the key alone. Each shard has a `.index` file of "key<TAB>offset"
lines sorted by key; a lookup bisects it with a few seeks (O(log n) reads).

    row = ts.data.lookup("out/", "order-1234")      # {"amount": 12.5, "label": 1, ...}
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfscale.data.records.format import feature_spec, index_file, read_meta, read_record_at, shard_file, shard_of
from tfscale.errors import DataError

__all__ = ["Index", "find_offset", "index_file", "lookup", "shard_file", "shard_of", "write_index"]


def _escape(key: str) -> bytes:
    return key.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").encode("utf-8")


def write_index(path: str, entries: list[tuple[str, int]]) -> None:
    """Writes sorted "key<TAB>offset" lines to `path` (a temporary name: the caller renames it); a key twice: error."""
    rows = sorted((_escape(k), o) for k, o in entries)
    for (a, _), (b, _) in zip(rows, rows[1:]):
        if a == b:
            raise DataError(f"key {a.decode()!r} appears more than once", where=path,
                            fix="choose a --key column whose values are unique, or leave --key out")
    with open(path, "wb") as f:
        f.writelines(k + b"\t" + str(o).encode() + b"\n" for k, o in rows)


def _line_at_or_after(f, position: int) -> bytes:
    if position > 0:
        f.seek(position - 1)
        f.readline()
    else:
        f.seek(0)
    return f.readline()


def find_offset(index_path: str, key: str) -> int | None:
    """The offset of `key` in a sorted index file, by bisection over byte positions; None if absent."""
    target = _escape(key)
    with open(index_path, "rb") as f:
        lo, hi = 0, os.path.getsize(index_path)
        while lo < hi:
            mid = (lo + hi) // 2
            line = _line_at_or_after(f, mid)
            if line and line.split(b"\t", 1)[0] < target:
                lo = mid + 1
            else:
                hi = mid
        line = _line_at_or_after(f, lo)
    found, _, offset = line.rstrip(b"\n").partition(b"\t")
    return int(offset) if line and found == target else None


class Index:
    """The index of a folder written by `tfscale data convert`.

    Example:
        index = ts.data.Index("out/")
        record = index.lookup("cats/0001.jpg")
    """

    def __init__(self, folder: str):
        self.folder = folder
        meta = read_meta(folder)
        if meta is None:
            raise DataError("no dataset.json: not a folder written by `tfscale data convert`", where=folder,
                            fix="run `tfscale data convert SRC --out DIR --shards N` first")
        self.meta, self.num_shards = meta, meta["num_shards"]
        self.spec = feature_spec({k: (v["dtype"], v["shape"]) for k, v in meta["features"].items()})

    def locate(self, key: str) -> tuple[str, int] | None:
        """(shard path, byte offset) of the record with `key`, or None."""
        shard = os.path.join(self.folder, shard_file(shard_of(str(key), self.num_shards), self.num_shards))
        offset = find_offset(index_file(shard), str(key))
        return None if offset is None else (shard, offset)

    def raw(self, key: str) -> bytes:
        """The serialized tf.train.Example stored under `key`."""
        place = self.locate(key)
        if place is None:
            raise DataError(f"key {key!r} is not in the index", where=self.folder,
                            fix=f"keys are the {self.meta.get('key') or 'row number / relative path'} of each record")
        return read_record_at(*place)

    def lookup(self, key: str) -> dict:
        """The record stored under `key` as a dict of NumPy values (strings as bytes)."""
        parsed = tf.io.parse_single_example(self.raw(key), self.spec)
        return {k: _plain(v) for k, v in parsed.items()}


def _plain(value):
    if isinstance(value, tf.SparseTensor):
        return np.asarray(value.values)
    array = value.numpy()
    return array.item() if isinstance(array, np.ndarray) and array.ndim == 0 else array


def lookup(folder: str, key: str) -> dict:
    """Reads the record stored under `key` in a converted folder (one seek into one shard)."""
    return Index(folder).lookup(key)
