"""`csv()`: rows of CSV files, streamed line by line (larger than memory), typed columns, defaults for missing values.

Each line is checked before parsing (number of fields, numbers where numbers
are expected), so a malformed row is named by file and line (raise) or
dropped and counted (skip); the reader is `readers.CsvFiles`.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tfscale.data.badrecords import BadRecords
from tfscale.data.pipeline import Pipeline
from tfscale.data.readers import TYPES, CsvFiles, expand_files, infer_type, read_head
from tfscale.errors import ConfigError, DataError
from tfscale.vocabulary import OnError


def csv(paths, *, label: str | None = None, columns=None, column_types: dict | None = None,
        defaults: dict | None = None, header: bool = True, column_names=None, delimiter: str = ",",
        on_error: OnError = "raise"):
    """Rows of CSV files (a path, glob, folder or list), streamed, as dicts of typed columns.

    Types are inferred from the first 200 rows unless given. Empty fields take the
    column's default (0, 0.0 or "" unless given in `defaults`).

    Args:
        paths: the CSV file(s); all with the same columns.
        label: a column to return separately: elements become (features, label).
        columns: the columns to keep (default: all).
        column_types: {"column": "int" | "float" | "string"} to override inference.
        defaults: {"column": value} used for empty fields.
        header: the first line of each file holds the column names.
        column_names: names when there is no header.
        delimiter: field separator.
        on_error: "raise" names the file and line of a malformed row; "skip" drops and counts it.

    Example:
        rows = ts.data.csv("sales/*.csv", label="units", column_types={"store": "string"})
    """
    records = BadRecords()
    files = expand_files(paths, what="csv", on_error=on_error, pipeline_records=records)
    if len(delimiter) != 1:
        raise ConfigError(f"delimiter must be one character, got {delimiter!r}", where="csv(delimiter=...)",
                          fix="use e.g. ',' or ';' or '\\t'")
    head = read_head(files[0], delimiter)
    if not head:
        raise DataError("CSV file is empty", where=files[0], fix="check the file")
    names = list(head[0]) if header else list(column_names or [f"column_{i}" for i in range(len(head[0]))])
    body = head[1:] if header else head
    for given, what in ((label and [label], "label"), (columns, "columns"), (column_types, "column_types"),
                        (defaults, "defaults")):
        unknown = sorted(set(given or ()) - set(names))
        if unknown:
            raise DataError(f"{what} names unknown column(s) {unknown}", where=files[0], fix=f"use names from {names}")
    kinds = {n: (column_types or {}).get(n) or infer_type([r[i] for r in body if i < len(r)])
             for i, n in enumerate(names)}
    bad = {n: k for n, k in kinds.items() if k not in TYPES}
    if bad:
        raise ConfigError(f"unknown column type(s) {bad}", where="column_types", fix=f"use one of {sorted(TYPES)}")
    dtypes = [TYPES[kinds[n]] for n in names]
    fallback = {tf.string: ""}
    values = [(defaults or {}).get(n, fallback.get(t, 0)) for n, t in zip(names, dtypes)]
    source = CsvFiles(files, names=names, dtypes=dtypes, defaults=values, label=label,
                      select=set(columns) if columns else None, delimiter=delimiter, header=header)
    source.name = f"csv({os.path.basename(files[0])}{'...' if len(files) > 1 else ''})"
    return Pipeline(source, on_error=on_error, records=records)
