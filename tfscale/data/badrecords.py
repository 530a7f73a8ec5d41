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
import threading

import tensorflow as tf

from tfscale.errors import ConfigError, DataError

log = logging.getLogger("tfscale")

ON_ERROR = ("raise", "skip")
MARK = "tfscale bad record"  # the prefix of raise-mode messages, turned into DataError by `as_data_error`


def check_on_error(value: str) -> str:
    if value not in ON_ERROR:
        raise ConfigError(f"on_error={value!r} is not accepted", where="on_error",
                          fix="use on_error='raise' (stop and name the record) or 'skip' (drop, count, report)")
    return value


class BadRecords:
    """Counts of records dropped in skip mode, by reason, with the last few keys seen.

    Counting happens in Python, only for bad records (the good ones never call
    into Python), so it costs nothing on clean data.
    """

    def __init__(self, keep_recent: int = 20):
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._seen: dict[str, collections.Counter[str]] = {}
        self.recent: collections.deque[str] = collections.deque(maxlen=keep_recent)

    def note(self, reason: str, key: str) -> None:
        """Counts one dropped record (called from the input pipeline)."""
        with self._lock:
            self._counts[reason] += 1
            self.recent.append(f"{reason}: {key}")
        log.debug("skipped %s: %s", reason, key)

    def counts(self) -> dict[str, int]:
        """Records dropped since the pipeline was made, by reason."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def since_last(self, reader: str = "log") -> dict[str, int]:
        """Records dropped since `reader` last asked, by reason (what one epoch dropped)."""
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

            def on_epoch_end(self, epoch, logs=None):
                delta = records.since_last(f"callback-{id(self)}")  # the pipeline itself logs them
                self.history.append(delta)
                if logs is not None:
                    logs["skipped_records"] = sum(delta.values())

        return SkippedRecords()


def guard(ok: tf.Tensor, reason: str, key: tf.Tensor, *, on_error: str, records: BadRecords | None,
          fix: str, in_service: bool = False) -> tf.Tensor:
    """In-graph handling of one record's check; returns `ok` (a filter predicate in skip mode).

    raise: a failing op whose message names the reason, the key (file and line or
    record) and the fix; the caller must use the result (or `gate` its input with it).
    skip: counts the record in `records` when `ok` is False. `ok` and `key` may be
    vectors (a batch of records checked at once).
    """
    ok = tf.convert_to_tensor(ok)
    if on_error == "raise":
        # One cheap op instead of an Assert (which costs ~30 us per element in a tf.data map):
        # parsing the message as a number fails, and TF's error carries the message.
        message = tf.strings.join([f"{MARK}: {reason}; where: ", key, f"; fix: {fix}"])
        return tf.equal(tf.strings.to_number(tf.where(ok, "1", message), tf.int32), 1)

    def drop():
        bad_keys = tf.boolean_mask(tf.reshape(key, [-1]), tf.logical_not(tf.reshape(ok, [-1])))
        if in_service or records is None:
            tf.print("tfscale: skipped", reason, bad_keys, output_stream="file://stderr", summarize=-1)
        else:
            tf.py_function(lambda ks: [records.note(reason, k.decode("utf-8", "replace")) for k in ks.numpy()],
                           [bad_keys], [])
        return tf.identity(ok)

    return tf.cond(tf.reduce_all(ok), lambda: tf.identity(ok), drop)


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

    def report(_):
        if in_service:
            return tf.constant(0, tf.int64)
        return tf.py_function(lambda: (records.report(), 0)[1], [], tf.int64)

    return dataset.concatenate(tf.data.Dataset.range(1).map(report).flat_map(lambda _: empty))


def _zeros(spec):
    if not isinstance(spec, tf.TensorSpec):
        raise TypeError(spec)
    return tf.zeros([d if d is not None else 0 for d in spec.shape], spec.dtype)
