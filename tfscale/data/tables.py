"""CSV files: streamed line by line (larger than memory), typed columns, defaults for missing values.

Each line is checked before parsing (number of fields, numbers where numbers
are expected), so a malformed row is named by file and line (raise) or
dropped and counted (skip).
"""

from __future__ import annotations

import csv as csv_lib
import os

import tensorflow as tf

from tfscale.data.badrecords import BadRecords, gate
from tfscale.data.core import AUTOTUNE, Build
from tfscale.data.sources import LineFiles, expand_files
from tfscale.errors import ConfigError, DataError

TYPES = {"int": tf.int64, "int64": tf.int64, "int32": tf.int32, "float": tf.float32, "float32": tf.float32,
         "float64": tf.float64, "string": tf.string, "str": tf.string}
_INT = r"\s*[+-]?\d+\s*"
_FLOAT = r"(?i)\s*[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|nan|inf|infinity)\s*"
_FIX = "correct or remove the line, or build the pipeline with on_error='skip'"


def _infer(values: list[str]) -> str:
    present = [v for v in values if v.strip()]
    for kind, caster in (("int", int), ("float", float)):
        try:
            for v in present:
                caster(v)
            return kind if present else "string"
        except ValueError:
            continue
    return "string"


def _read_head(path: str, delimiter: str, rows: int = 200) -> list[list[str]]:
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
            keep = build.guard(lines_ok(lines), "malformed CSV row", keys, _FIX)
            if build.on_error == "skip":
                paths, ns, lines = (tf.boolean_mask(t, keep) for t in (paths, ns, lines))
            else:
                lines = gate(lines, keep)
            values = tf.io.decode_csv(lines, record_defaults, field_delim=delim)
            row = {name: v for name, v in zip(names, values) if name in keep_cols}
            element = row if self.label is None else ({k: v for k, v in row.items() if k != self.label},
                                                     row[self.label])
            return paths, ns, element

        par = dict(num_parallel_calls=AUTOTUNE, deterministic=build.deterministic)
        return records.batch(64, **par).map(parse, **par).unbatch()

    def label_of(self, element):
        if self.label is None:
            raise ConfigError("this CSV pipeline has no label column", where="balance()",
                              fix="pass label='column' to balance() or to ts.data.csv()")
        return element[1]


def csv(paths, *, label: str | None = None, columns=None, column_types: dict | None = None,
        defaults: dict | None = None, header: bool = True, column_names=None, delimiter: str = ",",
        on_error: str = "raise"):
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
    from tfscale.data.pipeline import Pipeline

    records = BadRecords()
    files = expand_files(paths, what="csv", on_error=on_error, pipeline_records=records)
    if len(delimiter) != 1:
        raise ConfigError(f"delimiter must be one character, got {delimiter!r}", where="csv(delimiter=...)",
                          fix="use e.g. ',' or ';' or '\\t'")
    head = _read_head(files[0], delimiter)
    if not head:
        raise DataError("CSV file is empty", where=files[0], fix="check the file")
    names = list(head[0]) if header else list(column_names or [f"column_{i}" for i in range(len(head[0]))])
    body = head[1:] if header else head
    for given, what in ((label and [label], "label"), (columns, "columns"), (column_types, "column_types"),
                        (defaults, "defaults")):
        unknown = sorted(set(given or ()) - set(names))
        if unknown:
            raise DataError(f"{what} names unknown column(s) {unknown}", where=files[0], fix=f"use names from {names}")
    kinds = {n: (column_types or {}).get(n) or _infer([r[i] for r in body if i < len(r)]) for i, n in enumerate(names)}
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
