"""Sources (readers): text lines, CSV rows, NumPy arrays, Python generators, Dask partitions, TFDS builders.

Each `Source` turns its units (files, partitions) into (path, index, record)
elements; TFRecord files are in records/files.py, image folders in images/files.py.
Optional packages (dask, tensorflow_datasets) are imported inside the functions.
"""

from __future__ import annotations

import csv as csv_lib
import glob
import logging
import os

import numpy as np
import tensorflow as tf

from tfscale.compat import dask as dask_compat
from tfscale.data.badrecords import gate
from tfscale.data.core import AUTOTUNE, PARSE_BATCH, Build, Source, named_label
from tfscale.errors import DataError
from tfscale.vocabulary import OnError

log = logging.getLogger("tfscale")


def expand_files(paths, *, what: str, on_error: OnError, pipeline_records=None) -> tuple[str, ...]:
    """Files named by `paths` (a path, glob or list of them), sorted; missing ones raise or are counted."""
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[str] = []
    for item in map(os.fspath, items):
        if os.path.isdir(item):
            found.extend(sorted(os.path.join(item, f) for f in os.listdir(item) if not f.startswith((".", "_"))))
        elif glob.has_magic(item):
            found.extend(sorted(glob.glob(item)))
        elif os.path.exists(item) or "://" in item:
            found.append(item)
        elif on_error == "skip" and pipeline_records is not None:
            pipeline_records.note("missing file", item)
            log.warning("%s: missing file %s skipped (on_error='skip')", what, item)
        else:
            raise DataError(f"{what} file does not exist", where=item,
                            fix="check the path, or build the pipeline with on_error='skip' to leave it out")
    if not found:
        raise DataError(f"no {what} files found", where=", ".join(map(str, items)), fix="check the path or pattern")
    return tuple(found)


CHUNK = 256  # lines handled per tf.data function call (a call costs more than a line)


def _numbered(path, k, chunk, skip: int):
    """(paths, line numbers from 1, lines) of chunk k of a file, without blank lines and the first `skip`."""
    n = k * CHUNK + tf.range(tf.size(chunk, out_type=tf.int64), dtype=tf.int64) + 1
    keep = tf.logical_and(tf.strings.length(chunk) > 0, n > skip)
    kept = tf.boolean_mask(chunk, keep)
    return tf.fill(tf.shape(kept), path), tf.boolean_mask(n, keep), kept


class LineFiles(Source):
    """Lines of text files, keyed by file and line number (1-based), blank lines left out."""

    def __init__(self, files: tuple[str, ...], *, skip_lines: int = 0, what: str = "text"):
        self.units, self.skip_lines = files, skip_lines
        self.name = f"{what}({files[0]}{'...' if len(files) > 1 else ''})"

    def read(self, units, build: Build) -> tf.data.Dataset:
        skip = self.skip_lines

        def lines(path):
            chunks = tf.data.TextLineDataset(path).batch(CHUNK).enumerate()
            return chunks.map(lambda k, chunk: _numbered(path, k, chunk, skip)).unbatch()

        files = build.shuffled(tf.data.Dataset.from_tensor_slices(list(units)), len(units))
        if len(units) == 1:
            return files.flat_map(lines)
        return files.interleave(lines, cycle_length=min(len(units), 8), num_parallel_calls=AUTOTUNE,
                                deterministic=build.deterministic)


TYPES = {"int": tf.int64, "int64": tf.int64, "int32": tf.int32, "float": tf.float32, "float32": tf.float32,
         "float64": tf.float64, "string": tf.string, "str": tf.string}
_INT = r"\s*[+-]?\d+\s*"
_FLOAT = r"(?i)\s*[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|nan|inf|infinity)\s*"
_CSV_FIX = "correct or remove the line, or build the pipeline with on_error='skip'"


def infer_type(values: list[str]) -> str:
    present = [v for v in values if v.strip()]
    for kind, caster in (("int", int), ("float", float)):
        try:
            for v in present:
                caster(v)
            return kind if present else "string"
        except ValueError:
            continue
    return "string"


def read_head(path: str, delimiter: str, rows: int = 200) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv_lib.reader(f, delimiter=delimiter)
        return [row for _, row in zip(range(rows), reader) if row]


class CsvFiles(LineFiles):
    """Rows of CSV files as dicts of typed columns (or (features, label) pairs)."""

    def __init__(self, files, *, names, dtypes, defaults, label, select, delimiter, header):
        super().__init__(files, skip_lines=1 if header else 0, what="csv")
        self.names, self.dtypes, self.defaults = names, dtypes, defaults
        self.label, self.select, self.delimiter = label, select, delimiter

    def parse(self, records: tf.data.Dataset, build: Build) -> tf.data.Dataset:
        names, dtypes, delim = self.names, self.dtypes, self.delimiter
        record_defaults = [tf.constant(d, t) for d, t in zip(self.defaults, dtypes)]
        ints = [i for i, t in enumerate(dtypes) if t.is_integer]
        floats = [i for i, t in enumerate(dtypes) if t.is_floating]
        keep_cols = [n for n in names if (self.select is None or n in self.select or n == self.label)]

        def lines_ok(lines):  # a vector of lines
            bare = tf.strings.regex_replace(lines, r'"[^"]*"', '""')
            fields = tf.strings.split(bare, delim)
            padded = fields.to_tensor(default_value="", shape=[None, len(names)])
            checks = [tf.equal(fields.row_lengths(), len(names))]
            for cols, pattern in ((ints, _INT), (floats, _FLOAT)):
                if cols:
                    values = tf.gather(padded, cols, axis=1)
                    fine = tf.logical_or(tf.strings.regex_full_match(values, pattern), tf.equal(values, ""))
                    checks.append(tf.reduce_all(fine, axis=1))
            return tf.reduce_all(tf.stack(checks, axis=1), axis=1)

        def parse(paths, ns, lines):  # 64 lines at a time: decode_csv is vectorized
            keys = tf.strings.join([paths, ":", tf.strings.as_string(ns)])
            keep = build.guard(lines_ok(lines), "malformed CSV row", keys, _CSV_FIX)
            if build.on_error == "skip":
                paths, ns, lines = (tf.boolean_mask(t, keep) for t in (paths, ns, lines))
            else:
                lines = gate(lines, keep)
            values = tf.io.decode_csv(lines, record_defaults, field_delim=delim)
            row = {name: v for name, v in zip(names, values) if name in keep_cols}
            element = row if self.label is None else ({k: v for k, v in row.items() if k != self.label},
                                                     row[self.label])
            return paths, ns, element

        return build.in_batches(records, parse, PARSE_BATCH)

    def label_of(self, element):
        return named_label(element, self.label, kind="CSV column", factory="ts.data.csv()")


class InMemory(Source):
    """Elements sliced from in-memory tensors; dealt round robin to workers (DATA sharding)."""

    def __init__(self, data, name: str):
        self.data, self.name = data, name
        self.count = int(tf.nest.flatten(data)[0].shape[0])

    def read(self, units, build: Build) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((tf.range(self.count, dtype=tf.int64), self.data))
        return ds.map(lambda i, e: (tf.constant(""), i, e))


def column_values(series) -> np.ndarray:
    values = series.to_numpy()
    if values.dtype == object or str(series.dtype) in ("string", "category"):
        return series.astype(str).to_numpy().astype(object)
    return values


class Generator(Source):
    """Elements of a Python generator function; dealt round robin to workers."""

    def __init__(self, fn, signature, args):
        self.fn, self.signature, self.args = fn, signature, args
        self.name = f"from_generator({getattr(fn, '__name__', 'fn')})"

    def read(self, units, build: Build) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_generator(self.fn, output_signature=self.signature, args=self.args or None)
        return ds.enumerate().map(lambda i, e: (tf.constant(""), i, e))


class DaskFrame(Source):
    """Rows of a Dask dataframe; partitions are the units spread over workers and computed one at a time."""

    def __init__(self, frame, label: str | None, chunk: int):
        self.frame, self.label, self.chunk = frame, label, chunk
        self.units = tuple(str(i) for i in range(frame.npartitions))
        self.name = f"from_dask({frame.npartitions} partitions)"
        meta = dask_compat.empty_frame(frame)
        self.columns = list(meta.columns)
        self.signature = {c: tf.TensorSpec([None], _tf_dtype(meta[c].dtype)) for c in self.columns}
        if label is not None and label not in self.columns:
            raise DataError(f"label column {label!r} not found", where="from_dask", fix=f"use one of {self.columns}")

    def _rows(self, unit):
        part = self.frame.get_partition(int(unit)).compute()
        for start in range(0, len(part), self.chunk):
            piece = part.iloc[start:start + self.chunk]
            yield {c: column_values(piece[c]) for c in self.columns}

    def read(self, units, build: Build) -> tf.data.Dataset:
        label = self.label

        def partition(unit):
            rows = tf.data.Dataset.from_generator(self._rows, output_signature=self.signature, args=(unit,))
            rows = rows.unbatch().enumerate()
            path = tf.strings.join(["partition:", unit])
            if label is None:
                return rows.map(lambda i, r: (path, i, r))
            return rows.map(lambda i, r: (path, i, ({k: v for k, v in r.items() if k != label}, r[label])))

        parts = build.shuffled(tf.data.Dataset.from_tensor_slices(list(units)), len(units))
        return parts.interleave(partition, cycle_length=min(len(units), 4), num_parallel_calls=AUTOTUNE,
                                deterministic=build.deterministic)


def _tf_dtype(dtype) -> tf.DType:
    kind = np.dtype(dtype).kind if str(dtype) not in ("string", "category") else "O"
    return {"i": tf.int64, "u": tf.int64, "f": tf.float32, "b": tf.bool}.get(kind, tf.string)


class TfdsBuilder(Source):
    """A prepared TFDS dataset on local disk; TFDS shards its files by InputContext itself."""

    shards_itself = True

    def __init__(self, builder, split: str, as_supervised: bool):
        self.builder, self.split, self.as_supervised = builder, split, as_supervised
        self.name = f"tfds({builder.info.full_name}, {split})"

    def read(self, units, build: Build) -> tf.data.Dataset:
        import tensorflow_datasets as tfds

        context = tf.distribute.InputContext(build.num_pipelines, build.pipeline_id, 1)
        config = tfds.ReadConfig(input_context=context if build.num_pipelines > 1 else None, add_tfds_id=True,
                                 shuffle_seed=None if build.shuffle_units in (None, -1) else build.shuffle_units)
        ds = self.builder.as_dataset(split=self.split, read_config=config,
                                     shuffle_files=build.shuffle_units is not None)
        keys = self.builder.info.supervised_keys if self.as_supervised else None
        if keys:
            return ds.map(lambda e: (e["tfds_id"], tf.constant(0, tf.int64), (e[keys[0]], e[keys[1]])))
        return ds.map(lambda e: (e["tfds_id"], tf.constant(0, tf.int64),
                                 {k: v for k, v in e.items() if k != "tfds_id"}))
