"""Public factories: text lines, NumPy arrays, pandas frames, Python generators, Dask dataframes, local TFDS builders.

The readers they build on are in readers.py (CSV in tables.py, TFRecords in
tfrecord.py, image folders in image_folder.py). Optional packages (pandas, dask,
tensorflow_datasets) are imported inside the functions.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tfscale.data.badrecords import BadRecords
from tfscale.data.pipeline import Pipeline
from tfscale.data.readers import (CHUNK, DaskFrame, Generator, InMemory, LineFiles, TfdsBuilder,
                                  column_values, expand_files)
from tfscale.errors import ConfigError, DataError, install_hint
from tfscale.vocabulary import OnError

__all__ = ["CHUNK", "DaskFrame", "Generator", "InMemory", "LineFiles", "TfdsBuilder", "expand_files",
           "from_dask", "from_generator", "from_numpy", "from_pandas", "text_lines", "tfds"]


def text_lines(paths, *, skip_lines: int = 0, on_error: OnError = "raise") -> Pipeline:
    """Lines of one or more text files (path, glob, folder or list) as string elements, streamed.

    Example:
        corpus = ts.data.text_lines("corpus/*.txt").standardize()
    """
    records = BadRecords()
    files = expand_files(paths, what="text", on_error=on_error, pipeline_records=records)
    return Pipeline(LineFiles(files, skip_lines=skip_lines), on_error=on_error, records=records)


def from_numpy(*arrays, on_error: OnError = "raise") -> Pipeline:
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


def from_pandas(frame, *, label: str | None = None, on_error: OnError = "raise") -> Pipeline:
    """Rows of a pandas DataFrame as dicts of columns, or (dict, label) with `label`."""
    columns = {c: column_values(frame[c]) for c in frame.columns}
    if label is not None and label not in columns:
        raise DataError(f"label column {label!r} not found", where="from_pandas", fix=f"use one of {list(columns)}")
    data = columns if label is None else ({k: v for k, v in columns.items() if k != label}, columns[label])
    return Pipeline(InMemory(data, f"from_pandas({len(frame)} rows)"), on_error=on_error)


def from_generator(fn, output_signature, *, args=(), on_error: OnError = "raise") -> Pipeline:
    """Elements yielded by `fn(*args)` (called again for each pass), typed by `output_signature`.

    Distributed, every input pipeline runs the generator and keeps every N-th
    element (DATA sharding); for large data prefer files or `from_dask`.

    Example:
        ds = ts.data.from_generator(rows, output_signature=tf.TensorSpec([3], tf.float32))
    """
    return Pipeline(Generator(fn, output_signature, tuple(args)), on_error=on_error)


def from_dask(frame, *, label: str | None = None, chunk_rows: int = 4096, on_error: OnError = "raise") -> Pipeline:
    """Rows of a Dask dataframe, streamed partition by partition; workers read different partitions.

    Needs the `dask` extra (`tfscale.errors.install_hint("dask")`).
    """
    if not hasattr(frame, "npartitions"):
        raise ConfigError(f"from_dask() needs a dask DataFrame, got {type(frame).__name__}", where="from_dask",
                          fix="pass dask.dataframe.read_csv(...) or dd.from_pandas(df, npartitions=N)")
    return Pipeline(DaskFrame(frame, label, chunk_rows), on_error=on_error)


def tfds(name: str | None = None, *, data_dir: str | None = None, builder_dir: str | None = None,
         split: str = "train", as_supervised: bool = True, on_error: OnError = "raise") -> Pipeline:
    """A TFDS dataset already prepared on local disk (never downloads). Needs the `datasets` extra.

    Args:
        name: registered dataset name, found under `data_dir`.
        data_dir: the TFDS data folder holding `name`.
        builder_dir: or the folder of one prepared dataset version (with dataset_info.json).
        split: e.g. "train", "test[:10%]".
        as_supervised: (input, label) pairs when the dataset defines them.
    """
    where = builder_dir or os.path.join(data_dir or "~/tensorflow_datasets", name or "?")
    try:
        import tensorflow_datasets as tfds_lib
    except ModuleNotFoundError as e:
        if e.name != "tensorflow_datasets":
            raise
        raise ConfigError("tfds() needs tensorflow-datasets, which is not installed", where=where,
                          fix=install_hint("datasets")) from None
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
