"""Sources: text lines, NumPy arrays, pandas frames, Python generators, Dask dataframes, local TFDS builders.

CSV files are in tables.py, TFRecords in tfrecord.py, image folders in images.py.
Optional packages (pandas, dask, tensorflow_datasets) are imported inside the functions.
"""

from __future__ import annotations

import glob
import logging
import os

import numpy as np
import tensorflow as tf

from tfscale.data.badrecords import BadRecords
from tfscale.data.core import AUTOTUNE, Build, Source
from tfscale.data.pipeline import Pipeline
from tfscale.errors import ConfigError, DataError

log = logging.getLogger("tfscale")


def expand_files(paths, *, what: str, on_error: str, pipeline_records=None) -> tuple[str, ...]:
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
        self.units, self.skip_lines, self.name = files, skip_lines, f"{what}({files[0]}{'...' if len(files) > 1 else ''})"

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


def text_lines(paths, *, skip_lines: int = 0, on_error: str = "raise") -> Pipeline:
    """Lines of one or more text files (path, glob, folder or list) as string elements, streamed.

    Example:
        corpus = ts.data.text_lines("corpus/*.txt").standardize()
    """
    records = BadRecords()
    files = expand_files(paths, what="text", on_error=on_error, pipeline_records=records)
    return Pipeline(LineFiles(files, skip_lines=skip_lines), on_error=on_error, records=records)


class InMemory(Source):
    """Elements sliced from in-memory tensors; dealt round robin to workers (DATA sharding)."""

    def __init__(self, data, name: str):
        self.data, self.name = data, name
        self.count = int(tf.nest.flatten(data)[0].shape[0])

    def read(self, units, build: Build) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices((tf.range(self.count, dtype=tf.int64), self.data))
        return ds.map(lambda i, e: (tf.constant(""), i, e))


def from_numpy(*arrays, on_error: str = "raise") -> Pipeline:
    """Elements from NumPy arrays (sliced along the first axis): `from_numpy(x, y)` gives (x_i, y_i).

    A single dict of arrays gives dict elements.
    """
    if not arrays:
        raise ConfigError("from_numpy() needs at least one array", where="from_numpy", fix="pass from_numpy(x, y)")
    data = arrays[0] if len(arrays) == 1 else tuple(arrays)
    lengths = {len(a) for a in tf.nest.flatten(data)}
    if len(lengths) != 1:
        raise DataError(f"arrays have different lengths {sorted(lengths)}", where="from_numpy",
                        fix="give arrays with one row per example")
    return Pipeline(InMemory(data, f"from_numpy({lengths.pop()} rows)"), on_error=on_error)


def from_pandas(frame, *, label: str | None = None, on_error: str = "raise") -> Pipeline:
    """Rows of a pandas DataFrame as dicts of columns, or (dict, label) with `label`."""
    columns = {c: _column(frame[c]) for c in frame.columns}
    if label is not None and label not in columns:
        raise DataError(f"label column {label!r} not found", where="from_pandas", fix=f"use one of {list(columns)}")
    data = columns if label is None else ({k: v for k, v in columns.items() if k != label}, columns[label])
    return Pipeline(InMemory(data, f"from_pandas({len(frame)} rows)"), on_error=on_error)


def _column(series) -> np.ndarray:
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


def from_generator(fn, output_signature, *, args=(), on_error: str = "raise") -> Pipeline:
    """Elements yielded by `fn(*args)` (called again for each pass), typed by `output_signature`.

    Distributed, every input pipeline runs the generator and keeps every N-th
    element (DATA sharding); for large data prefer files or `from_dask`.

    Example:
        ds = ts.data.from_generator(rows, output_signature=tf.TensorSpec([3], tf.float32))
    """
    return Pipeline(Generator(fn, output_signature, tuple(args)), on_error=on_error)


class DaskFrame(Source):
    """Rows of a Dask dataframe; partitions are the units spread over workers and computed one at a time."""

    def __init__(self, frame, label: str | None, chunk: int):
        self.frame, self.label, self.chunk = frame, label, chunk
        self.units = tuple(str(i) for i in range(frame.npartitions))
        self.name = f"from_dask({frame.npartitions} partitions)"
        meta = frame._meta
        self.columns = list(meta.columns)
        self.signature = {c: tf.TensorSpec([None], _tf_dtype(meta[c].dtype)) for c in self.columns}
        if label is not None and label not in self.columns:
            raise DataError(f"label column {label!r} not found", where="from_dask", fix=f"use one of {self.columns}")

    def _rows(self, unit):
        part = self.frame.get_partition(int(unit)).compute()
        for start in range(0, len(part), self.chunk):
            piece = part.iloc[start:start + self.chunk]
            yield {c: _column(piece[c]) for c in self.columns}

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


def from_dask(frame, *, label: str | None = None, chunk_rows: int = 4096, on_error: str = "raise") -> Pipeline:
    """Rows of a Dask dataframe, streamed partition by partition; workers read different partitions.

    Needs the `dask` extra (`pip install tfscale[dask]`).
    """
    if not hasattr(frame, "npartitions"):
        raise ConfigError(f"from_dask() needs a dask DataFrame, got {type(frame).__name__}", where="from_dask",
                          fix="pass dask.dataframe.read_csv(...) or dd.from_pandas(df, npartitions=N)")
    return Pipeline(DaskFrame(frame, label, chunk_rows), on_error=on_error)


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
        return ds.map(lambda e: (e["tfds_id"], tf.constant(0, tf.int64), {k: v for k, v in e.items() if k != "tfds_id"}))


def tfds(name: str | None = None, *, data_dir: str | None = None, builder_dir: str | None = None,
         split: str = "train", as_supervised: bool = True, on_error: str = "raise") -> Pipeline:
    """A TFDS dataset already prepared on local disk (never downloads). Needs the `datasets` extra.

    Args:
        name: registered dataset name, found under `data_dir`.
        data_dir: the TFDS data folder holding `name`.
        builder_dir: or the folder of one prepared dataset version (with dataset_info.json).
        split: e.g. "train", "test[:10%]".
        as_supervised: (input, label) pairs when the dataset defines them.
    """
    import tensorflow_datasets as tfds_lib

    where = builder_dir or os.path.join(data_dir or "~/tensorflow_datasets", name or "?")
    try:
        if builder_dir:
            builder = tfds_lib.builder_from_directory(builder_dir)
        elif name:
            builder = tfds_lib.builder(name, data_dir=data_dir, try_gcs=False)
        else:
            raise ConfigError("tfds() needs name= or builder_dir=", where="tfds()", fix="name the local dataset")
        prepared = builder.is_prepared()
    except (tfds_lib.core.registered.DatasetNotFoundError, FileNotFoundError, OSError) as e:
        raise DataError(f"TFDS dataset not found locally: {e}", where=where,
                        fix="prepare it with `tfds build` where there is network, then copy its folder here") from None
    if not prepared:
        raise DataError("TFDS dataset is not prepared on local disk (tfscale never downloads)", where=where,
                        fix="run `tfds build NAME --data_dir DIR` where there is network and copy DIR here")
    return Pipeline(TfdsBuilder(builder, split, as_supervised), on_error=on_error)
