"""The steps a `Pipeline` chains: record filters (sample, balance), maps, cache, batching, options."""

from __future__ import annotations

import collections
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from tfscale.data import badrecords
from tfscale.data.core import AUTOTUNE, Build, Op
from tfscale.errors import ConfigError

_BUCKETS = 1 << 30  # hash resolution of sample() and balance(): fractions to ~1e-9


def _record_hash(path, index, salt: str):
    key = tf.strings.join([path, "#", tf.strings.as_string(index), "#", salt])
    return tf.strings.to_hash_bucket_fast(key, _BUCKETS)


class Sample:
    """Keeps a record when the hash of (file, position, seed) falls under `fraction`."""

    def __init__(self, fraction: float, seed: int):
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"sample fraction must be in (0, 1], got {fraction}", where="Pipeline.sample()",
                              fix="give the share of records to keep, e.g. 0.1")
        self.fraction, self.seed = fraction, seed
        self._threshold = int(round(fraction * _BUCKETS))

    def __call__(self, path, index, element):
        return _record_hash(path, index, f"sample{self.seed}") < self._threshold


class Balance:
    """Keeps each record of class c with probability min(counts) / counts[c], by a seeded hash."""

    def __init__(self, counts: dict, label_fn: Callable, seed: int):
        counts = {k: int(v) for k, v in counts.items() if int(v) > 0}
        if len(counts) < 2:
            raise ConfigError(f"balance() needs at least 2 classes, found {len(counts)}", where="Pipeline.balance()",
                              fix="check the label column, or leave balance() out")
        rarest = min(counts.values())
        self.keep = {k: rarest / v for k, v in counts.items()}
        self.label_fn, self.seed = label_fn, seed
        keys = list(self.keep)
        self._is_text = isinstance(keys[0], (str, bytes))
        if self._is_text:
            names = [k.decode() if isinstance(k, bytes) else k for k in keys]
            self._table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(names, [self.keep[k] for k in keys], tf.string, tf.float64), 0.0)
        else:
            probs = np.zeros(max(keys) + 1)
            for k in keys:
                probs[k] = self.keep[k]
            self._probs = tf.constant(probs, tf.float64)

    def __call__(self, path, index, element):
        label = self.label_fn(element)
        if self._is_text:
            prob = self._table.lookup(tf.strings.as_string(label) if label.dtype != tf.string else label)
        else:
            prob = tf.gather(self._probs, tf.clip_by_value(tf.cast(label, tf.int64), 0, len(self._probs) - 1))
        threshold = tf.cast(tf.round(prob * _BUCKETS), tf.int64)
        return _record_hash(path, index, f"balance{self.seed}") < threshold


def sample_filter(fraction: float, seed: int) -> Sample:
    return Sample(fraction, seed)


def balance_filter(counts: dict, label_fn: Callable, seed: int) -> Balance:
    return Balance(counts, label_fn, seed)


def label_getter(source, label: Any) -> Callable:
    """A function element -> label from a dict key, a tuple index, a function or the source's default."""
    if label is None:
        return source.label_of
    if callable(label):
        return label
    return lambda element: element[label]


def count_values(values: tf.data.Dataset) -> dict:
    """Counts of each value in a dataset of scalars (one pass, in batches)."""
    counts: collections.Counter = collections.Counter()
    for batch in values.batch(65536).prefetch(2):
        keys, _, n = tf.unique_with_counts(tf.reshape(batch, [-1]))
        for k, c in zip(keys.numpy().tolist(), n.numpy().tolist()):
            counts[k.decode() if isinstance(k, bytes) else k] += c
    return dict(counts)


def map_op(fn: Callable, *, vectorized: bool, name: str) -> Op:
    def apply(ds, build: Build):
        return ds.map(fn, num_parallel_calls=AUTOTUNE, deterministic=build.deterministic)

    return Op(name, apply, vectorized=vectorized)


def batch_op(batch_size: int, drop_remainder: bool, *, static: bool = True) -> Callable:
    """Batches; with static=False an incomplete last batch is filtered out instead of dropped.

    Filtering keeps the batch dimension unknown, as `sharding.per_replica_batches`
    does for Keras 3.15 `evaluate` under MirroredStrategy.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}", where="batch_size", fix="give a positive number")

    def apply(ds, build: Build):
        # a serial batch: copying a batch is cheap next to decoding, and parallel batching measured slower
        # on image pipelines here (a stage of threads competing with the parallel maps)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder and static)
        if drop_remainder and not static:
            ds = ds.filter(lambda *b: tf.shape(tf.nest.flatten(b)[0])[0] == batch_size)
        return ds

    return apply


def cache_op(path: str | None) -> Callable:
    def apply(ds, build: Build):
        if path is None:
            return ds.cache()
        suffix = f"-{build.pipeline_id}-of-{build.num_pipelines}" if build.num_pipelines > 1 else ""
        return ds.cache(path + suffix)

    return apply


def batches_last(ops: tuple[Op, ...], build: Build | None = None) -> list[Op]:
    """Moves each batch op before the run of vectorized maps that precede it (batch-then-map)."""
    build = build or Build()
    out: list[Op] = []
    for op in ops:
        if op.payload == "batch":
            k = len(out)
            while k and out[k - 1].vectorized_in(build):
                k -= 1
            out = out[:k] + [op] + out[k:]
        else:
            out.append(op)
    return out


def apply_ops(ds: tf.data.Dataset, ops: tuple[Op, ...], build: Build, records) -> tf.data.Dataset:
    """Applies `ops` (batches moved before vectorized maps); in skip mode, reports at each epoch end."""
    reported = build.on_error != "skip"
    for op in batches_last(ops, build):
        if not reported and (op.payload == "batch" or op.name.startswith("repeat")):
            ds, reported = badrecords.end_of_epoch(ds, records, in_service=build.in_service), True
        ds = op.apply(ds, build)
    if not reported:
        ds = badrecords.end_of_epoch(ds, records, in_service=build.in_service)
    return ds


def with_options(ds: tf.data.Dataset, build: Build) -> tf.data.Dataset:
    """tfscale's dataset options: its own sharding (no auto-shard pass and warning), determinism, fusion."""
    options = tf.data.Options()
    options.deterministic = build.deterministic
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.map_fusion = True
    options.threading.max_intra_op_parallelism = 1  # tf.data already runs elements in parallel
    options.autotune.enabled = False  # AUTOTUNE stages then run on every core, see AUTOTUNE in core.py
    return ds.with_options(options)
