"""TFRecord sources: records of any TFRecord files, and the image shards `tfscale data convert` writes.

Records are read in chunks of 256 per file (a tf.data call costs more than a
record): each chunk adds its bytes (16 framing bytes per record plus the
payload), and the end of each file compares the sum with the file's size, so a
truncated or corrupt file is named with the number of good records before the
damage ("raise"), or dropped and counted ("skip"; a damaged record ends its
file, so the records after it are counted too when the file's count is known).
A pipeline batched right after reading takes the chunks as they are and
re-batches them (`Dataset.rebatch`): no per-record stage at all.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tfscale.data import badrecords
from tfscale.data.core import AUTOTUNE, PARSE_BATCH, Build, Source, named_label
from tfscale.errors import DataError

CHUNK = 256
_READ_BUFFER = 1 << 20  # bytes per read: large sequential reads
_FIX = "re-create the file (for converted shards: delete it and rerun tfscale data convert), or use on_error='skip'"


class TfrecordFiles(Source):
    """Serialized records of TFRecord files, each keyed by file and record number (0-based).

    Args:
        files: the files, in order.
        spec: a parse spec (`records.feature_spec`), or None for serialized records.
        label: a feature returned separately: elements become (features, label).
        compression: "GZIP", "ZLIB" or None.
        expected: records per file when known ({path: count}, from `dataset.json`).
    """

    def __init__(self, files, *, spec, label, compression, expected=None):
        self.units, self.spec, self.label, self.compression = tuple(files), spec, label, compression
        self.sizes = {f: tf.io.gfile.stat(f).length for f in files}
        self.expected = dict(expected or {})
        self.name = f"tfrecord({os.path.basename(files[0])}{'...' if len(files) > 1 else ''})"

    def read(self, units, build: Build) -> tf.data.Dataset:
        """(path, record number, record) of each file; the bytes read are checked against the file size."""
        return self._chunks(units, build, keys=True).unbatch()

    def read_bare(self, units, build: Build) -> tf.data.Dataset:
        return self.read_chunks(units, build).unbatch()

    def read_chunks(self, units, build: Build) -> tf.data.Dataset:
        """Checked chunks (vectors) of up to 256 serialized records, files interleaved."""
        return self._chunks(units, build, keys=False)

    def needs_parse(self) -> bool:
        return self.spec is not None

    def _chunks(self, units, build: Build, *, keys: bool) -> tf.data.Dataset:
        compression = self.compression

        def chunks(path, size, count):
            raw = tf.data.TFRecordDataset(path, compression_type=compression, buffer_size=_READ_BUFFER)
            if not compression:
                raw = raw.ignore_errors()  # a DataLossError ends the file; the byte count below reports it
            body = raw.batch(CHUNK).map(lambda r: (r, tf.constant(False)))
            end = tf.data.Dataset.from_tensors((tf.zeros([0], tf.string), tf.constant(True)))
            zero = tf.constant(0, tf.int64)
            step = _count_bytes(path, size, count, bool(compression), build, keys)
            return body.concatenate(end).scan((zero, zero), step)

        units = list(units)
        files = tf.data.Dataset.from_tensor_slices((units, tf.constant([self.sizes[u] for u in units], tf.int64),
                                                    tf.constant([int(self.expected.get(u, -1)) for u in units],
                                                                tf.int64)))
        files = build.shuffled(files, len(units))
        return files.interleave(chunks, cycle_length=min(len(units), 8), num_parallel_calls=AUTOTUNE,
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

        par = build.map_options

        def parse(path, n, record):  # one record, or a batch of them (parse_example is vectorized)
            row = (tf.io.parse_single_example if record.shape.rank == 0 else tf.io.parse_example)(record, spec)
            return path, n, (row if label is None else ({k: v for k, v in row.items() if k != label}, row[label]))

        if build.on_error == "skip":  # one by one, so a malformed record costs only itself
            return records.map(parse, **par).ignore_errors(log_warning=True)
        if any(not isinstance(f, tf.io.FixedLenFeature) for f in spec.values()):
            return records.map(parse, **par)
        return build.in_batches(records, parse, PARSE_BATCH)

    def label_of(self, element):
        return named_label(element, self.label, kind="TFRecord feature", factory="ts.data.tfrecord()")

    def find_bad(self) -> DataError | None:
        """After an unnamed read failure: the first file with a damaged record, named with its record number."""
        for path in self.units:
            seen = 0
            try:
                for _ in tf.data.TFRecordDataset(path, compression_type=self.compression).batch(CHUNK):
                    seen += int(_.shape[0])
            except tf.errors.OpError:
                return DataError(f"bad record: truncated or corrupt TFRecord file (record {seen})",
                                 where=f"{path}, after {seen} good record(s)", fix=_FIX)
        return None


def _count_bytes(path, size, count, compressed: bool, build: Build, keys: bool):
    """A scan step over chunks of one file: (bytes, records) so far; the empty end chunk checks bytes == size.

    Emits (paths, record numbers, records) for the chunk when `keys`, else the records.
    In skip mode a damaged file counts max(1, count - records read) dropped records.
    """

    def step(state, item):
        consumed, seen = state
        chunk, last = item
        n = tf.size(chunk, out_type=tf.int64)
        consumed = consumed + tf.reduce_sum(tf.cast(tf.strings.length(chunk), tf.int64) + 16)
        sound = tf.logical_or(tf.logical_not(last), tf.logical_or(tf.constant(compressed), tf.equal(consumed, size)))
        key = tf.strings.join([path, ", after ", tf.strings.as_string(seen + n), " good record(s)"])
        lost = tf.maximum(count - seen - n, 1)  # the records after the damage (1 when the count is unknown)
        keep = build.guard(sound, "truncated or corrupt TFRecord file", key, _FIX, count=lost)
        chunk = badrecords.gate(chunk, keep)  # in raise mode the check runs before the chunk moves on
        if not keys:
            return (consumed, seen + n), chunk
        numbers = seen + tf.range(n, dtype=tf.int64)
        return (consumed, seen + n), (tf.fill([n], path), numbers, chunk)

    return step


class ImageShards(TfrecordFiles):
    """The shards of an image folder written by `tfscale data convert`: serialized records.

    A decode op (`images.ops.record_decode_op`) parses and decodes them, per batch
    when batched; `meta` is the folder's `dataset.json`.
    """

    def __init__(self, folder: str, meta: dict):
        files = tuple(os.path.join(folder, s["file"]) for s in meta["shards"])
        missing = [f for f in files if not tf.io.gfile.exists(f)]
        if missing:
            raise DataError(f"{len(missing)} shard(s) missing", where=missing[0],
                            fix="rerun `tfscale data convert` with the same arguments to finish the missing shards")
        super().__init__(files, spec=None, label=None, compression=None,
                         expected={f: s["records"] for f, s in zip(files, meta["shards"])})
        self.meta, self.folder = meta, folder
        self.class_names = list(meta.get("class_names") or [])
        self.name = f"image_shards({folder})"

    def class_counts(self) -> dict | None:
        return {int(k): v for k, v in (self.meta.get("class_counts") or {}).items()} or None

    def label_of(self, element):
        spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
        parse = tf.io.parse_single_example if element.shape.rank == 0 else tf.io.parse_example
        return tf.cast(parse(element, spec)["label"], tf.int32)
