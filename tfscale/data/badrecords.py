"""Bad records: `on_error="raise"` names the file and record; `"skip"` counts and reports every drop.

Every stage that can meet a bad record (a missing file, a malformed CSV row, a
corrupt image, a truncated TFRecord) first computes a cheap in-graph `ok`
flag, then calls `guard`. In raise mode a failed check stops the pipeline with
a message naming the record; in skip mode the record is dropped, counted here
and reported at the end of each pass over the data (a log line), through
`BadRecords.counts()` and through the Keras callback `BadRecords.callback()`.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading

import tensorflow as tf

from tfscale.errors import ConfigError, DataError
from tfscale.vocabulary import ON_ERROR, OnError

log = logging.getLogger("tfscale")

# images a decode call takes in skip mode (16 in raise mode, `transforms.MICRO_BATCH`): each call is also a small
# dataset of its own there (`retried`, ~170 us here), so parts are larger. Measured side by side on 2 cores (Fashion-
# MNIST, clean data, batch 64) against parts of 16 through a parallel map and `ignore_errors` (which dropped a part
# with an undecodable image whole): CPU per image 15-17 % less for 28x28 PNGs and 2-8 % less for 256x256 JPEGs
# (parts of 16: 5-14 % more); peak memory with 224x224x3 images 92 MB more (32: 70 MB): `retried` decodes ahead
SKIP_PART = 64

MARK = "tfscale bad record"  # the prefix of raise-mode messages, turned into DataError by `as_data_error`


def check_on_error(value: str) -> OnError:
    if value not in ON_ERROR:
        raise ConfigError(f"on_error={value!r} is not accepted", where="on_error",
                          fix="use on_error='raise' (stop and name the record) or 'skip' (drop, count, report)")
    return value


class BadRecords:
    """Counts of records dropped in skip mode, by reason, with the last few keys seen.

    The pipeline adds each dropped record's key to a table of its reason in-graph
    (adding no keys costs a few microseconds, where a Python call, a queue or a
    `tf.cond` in a tf.data function costs up to a millisecond here); the tables are
    emptied into the counts whenever they are read (and at the end of every pass),
    so clean data never calls into Python.
    """

    def __init__(self, keep_recent: int = 20):
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._seen: dict[str, collections.Counter[str]] = {}
        self._tables: dict[str, tf.lookup.experimental.MutableHashTable] = {}
        self._coded: dict[tuple[str, ...], tf.lookup.experimental.MutableHashTable] = {}
        self.recent: collections.deque[str] = collections.deque(maxlen=keep_recent)

    def add(self, reason: str, keys: tf.Tensor, counts: tf.Tensor):
        """In-graph: counts `counts` records under each of `keys` (vectors, often empty) for `reason`.

        Keys name records, so one pass adds each at most once (the tables are emptied at each pass's end).
        """
        return self._table(self._tables, reason).insert(keys, counts)

    def add_coded(self, reasons: tuple[str, ...], keys: tf.Tensor, codes: tf.Tensor):
        """In-graph: counts one record under each of `keys` for reason ``reasons[code - 1]`` (one table insert
        for several checks; see `count_codes`)."""
        return self._table(self._coded, reasons).insert(keys, tf.cast(codes, tf.int64))

    def _table(self, tables: dict, name) -> tf.lookup.experimental.MutableHashTable:
        """`tables[name]`, made on first use (eagerly, also while a dataset function is traced)."""
        with self._lock:
            if name not in tables:
                with tf.init_scope():
                    tables[name] = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, 0)
            return tables[name]

    def _drain(self) -> None:
        for reason, table in list(self._tables.items()):
            for key, count in self._emptied(table):
                self.note(reason, key, count)
        for reasons, table in list(self._coded.items()):
            for key, code in self._emptied(table):
                self.note(reasons[code - 1], key)

    @staticmethod
    def _emptied(table) -> list[tuple[str, int]]:
        keys, values = table.export()
        if not int(tf.size(keys)):
            return []
        table.remove(keys)
        return [(key.decode("utf-8", "replace"), int(value)) for key, value in zip(keys.numpy(), values.numpy())]

    def note(self, reason: str, key: str, count: int = 1) -> None:
        """Counts `count` dropped records (called from the input pipeline)."""
        with self._lock:
            self._counts[reason] += count
            self.recent.append(f"{reason}: {key}")
        log.debug("skipped %d %s: %s", count, reason, key)

    def counts(self) -> dict[str, int]:
        """Records dropped since the pipeline was made, by reason."""
        self._drain()
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        self._drain()
        with self._lock:
            return sum(self._counts.values())

    def since_last(self, reader: str = "log") -> dict[str, int]:
        """Records dropped since `reader` last asked, by reason (what one epoch dropped)."""
        self._drain()
        with self._lock:
            seen = self._seen.get(reader, collections.Counter())
            delta = {k: v - seen[k] for k, v in self._counts.items() if v - seen[k]}
            self._seen[reader] = collections.Counter(self._counts)
            return delta

    def report(self) -> dict[str, int]:
        """Logs what was dropped since the last report (a warning when anything was) and returns it."""
        delta = self.since_last("log")
        if delta:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(delta.items()))
            last = list(self.recent)[-3:]
            log.warning("input pipeline skipped %d bad record(s) this epoch (on_error='skip'): %s; last: %s",
                        sum(delta.values()), detail, "; ".join(last))
        return delta

    def callback(self):
        """A Keras callback adding `skipped_records` (dropped this epoch) to the epoch logs; keeps `history`."""
        import keras

        records = self

        class SkippedRecords(keras.callbacks.Callback):
            """Adds logs["skipped_records"] (dropped this epoch) and logs the reasons."""

            def __init__(self):
                super().__init__()
                self.history: list[dict[str, int]] = []
                records.since_last(f"callback-{id(self)}")  # counts from here on

            def on_epoch_end(self, epoch, logs=None):
                delta = records.since_last(f"callback-{id(self)}")  # the pipeline itself logs them
                self.history.append(delta)
                if logs is not None:
                    logs["skipped_records"] = sum(delta.values())

        return SkippedRecords()


def guard(ok: tf.Tensor, reason: str, key: tf.Tensor, *, on_error: OnError, records: BadRecords | None,
          fix: str, in_service: bool = False, count=None) -> tf.Tensor:
    """In-graph handling of one record's check; returns `ok` (a filter predicate in skip mode).

    raise: a failing op whose message names the reason, the key (file and line or
    record) and the fix; the caller must use the result (or `gate` its input with it).
    skip: counts the record in `records` when `ok` is False. `ok` and `key` may be
    vectors (a batch of records checked at once); `count`: records a bad key stands
    for (default 1; a damaged TFRecord file loses all the records after the damage).
    """
    ok = tf.convert_to_tensor(ok)
    if on_error == "raise":
        # One cheap op instead of an Assert (which costs ~30 us per element in a tf.data map):
        # parsing the message as a number fails, and TF's error carries the message.
        message = tf.strings.join([f"{MARK}: {reason}; where: ", key, f"; fix: {fix}"])
        return tf.equal(tf.strings.to_number(tf.where(ok, "1", message), tf.int32), 1)

    # no tf.cond (it costs milliseconds in a tf.data function here): the bad keys are picked out (an
    # empty vector when all are good) and handed on in one op that does nothing for an empty vector
    bad = tf.logical_not(tf.reshape(ok, [-1]))
    bad_keys = tf.boolean_mask(tf.reshape(key, [-1]), bad)
    if in_service or records is None:  # the worker's log names them (see note_counts for the counts)
        lines = tf.strings.reduce_join(tf.strings.join([f"tfscale: skipped {reason}: ", bad_keys, "\n"]))
        done = tf.print(lines, output_stream=sys.stderr, end="")  # the process's stderr (never a file)
    else:
        counts = tf.ones_like(bad_keys, tf.int64) if count is None else \
            tf.boolean_mask(tf.broadcast_to(tf.cast(count, tf.int64), tf.shape(bad)), bad)
        done = records.add(reason, bad_keys, counts)
    return after(ok, done)


def count_codes(bad_keys: tf.Tensor, bad_codes: tf.Tensor, reasons: tuple[str, ...], *,
                records: BadRecords | None, fixes: tuple[str, ...], in_service: bool = False) -> tf.Tensor:
    """Skip mode: counts records already picked out as bad, `bad_codes` i meaning ``reasons[i - 1]``, in one
    table insert (a `guard` per reason costs ~13 us an image in a 16-image decode call here); returns a token
    to wait on (`after`). Kept apart so that the call picking them out can stay free of stateful ops."""
    if in_service or records is None:  # printed by `guard`, one reason at a time
        kept = [guard(tf.not_equal(bad_codes, i + 1), reason, bad_keys, on_error="skip", records=records, fix=fix,
                      in_service=in_service) for i, (reason, fix) in enumerate(zip(reasons, fixes))]
        return tf.stack(kept)
    return records.add_coded(reasons, bad_keys, bad_codes)


SERVICE_REASON = "bad record on a tf.data service worker (its log names it)"


def note_counts(dataset: tf.data.Dataset, records: BadRecords, where: str) -> tf.data.Dataset:
    """Consumer side of `Build.carry`: (element, dropped) -> element, adding `dropped` to `records`.

    One Python call per element (a batch), so counts from a tf.data service worker reach this process.
    """

    def note(dropped):
        count = int(dropped.numpy())
        if count:
            records.note(SERVICE_REASON, where, count)
        return dropped

    def strip(element, dropped):
        dropped = tf.py_function(note, [dropped], tf.int64)
        return tf.nest.map_structure(lambda t: after(t, dropped), element)

    return dataset.map(strip)


def after(tensor: tf.Tensor, token: tf.Tensor) -> tf.Tensor:
    """`tensor`, computed only once `token` is: the note is not pruned away."""
    with tf.control_dependencies([token]):
        return tf.identity(tensor)


def gate(text: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """`text` unchanged, but only once `keep` (from `guard`) is computed, so its check runs first."""
    length = tf.strings.length(text) * tf.cast(keep, tf.int32)
    return tf.strings.substr(text, length * 0, length)


def as_data_error(error: Exception) -> Exception:
    """The DataError a raise-mode check produced, or `error` unchanged."""
    text = str(error)
    start = text.find(MARK + ": ")
    if start < 0:
        return error
    body = text[start + len(MARK) + 2:].split("\n")[0].rstrip("]").rstrip().replace("\\'", "'")
    parts = dict(p.split(": ", 1) if ": " in p else ("what", p) for p in body.split("; "))
    what = next(iter(parts.values())) if parts else body
    return DataError(f"bad record: {what}", where=parts.get("where"), fix=parts.get("fix"))


def end_of_epoch(dataset: tf.data.Dataset, records: BadRecords, *, in_service: bool) -> tf.data.Dataset:
    """`dataset` followed by a report of what this pass skipped (no element added)."""
    try:
        empty = tf.data.Dataset.from_tensors(tf.nest.map_structure(_zeros, dataset.element_spec)).take(0)
    except (TypeError, ValueError, AttributeError):
        return dataset  # exotic element (ragged/sparse): the Keras callback still reports

    def tail(_):  # one small function (each costs milliseconds to set up when the pass ends)
        if in_service:
            return empty
        return empty.take(tf.py_function(lambda: (records.report(), 0)[1], [], tf.int64))

    return dataset.concatenate(tf.data.Dataset.range(1).flat_map(tail))


def _zeros(spec):
    if not isinstance(spec, tf.TensorSpec):
        raise TypeError(spec)
    return tf.zeros([d if d is not None else 0 for d in spec.shape], spec.dtype)
