"""The steps a `Pipeline` chains: record filters (sample, balance), maps, cache, batching, options."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from tfscale.data import badrecords
from tfscale.data.core import Build, Op
from tfscale.data.functions import own_functions
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
        return ds.map(fn, **build.map_options)

    return Op(name, apply, vectorized=vectorized, fn=fn)


MICRO_BATCH = 16  # images a decode call takes when a batch is decoded in parts (see `apply_ops`; skip mode: SKIP_PART)


class Batcher:
    """Batches; with static=False an incomplete last batch is filtered out instead of dropped.

    Filtering keeps the batch dimension unknown, as `sharding.per_replica_batches`
    does for Keras 3.15 `evaluate` under MirroredStrategy. `parts` and `join`
    split the batching around per-image ops (see `apply_ops`).
    """

    def __init__(self, batch_size: int, drop_remainder: bool, static: bool):
        if batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {batch_size}", where="batch_size",
                              fix="give a positive number")
        self.size, self.drop, self.static = batch_size, drop_remainder, static

    def __call__(self, ds: tf.data.Dataset, build: Build) -> tf.data.Dataset:
        # a serial batch: copying a batch is cheap next to decoding, and parallel batching measured slower
        # on image pipelines here (a stage of threads competing with the parallel maps)
        if build.chunked:  # chunks of records from the source: sliced into batches, no per-record stage
            return self.join(ds)
        return self._filtered(ds.batch(self.size, drop_remainder=self.drop and self.static))

    def parts(self, ds: tf.data.Dataset, build: Build) -> tf.data.Dataset:
        """Batches of MICRO_BATCH (SKIP_PART in skip mode) or fewer, to be `join`ed after the per-image ops."""
        size = min(badrecords.SKIP_PART if build.on_error == "skip" else MICRO_BATCH, self.size)
        return ds.rebatch(size) if build.chunked else ds.batch(size)

    def join(self, ds: tf.data.Dataset) -> tf.data.Dataset:
        return self._filtered(ds.rebatch(self.size, drop_remainder=self.drop and self.static))

    def _filtered(self, ds):
        if self.drop and not self.static:
            ds = ds.filter(lambda *b: tf.shape(tf.nest.flatten(b)[0])[0] == self.size)
        return ds


def batch_op(batch_size: int, drop_remainder: bool, *, static: bool = True) -> Batcher:
    """The batching step of a pipeline (see `Batcher`)."""
    return Batcher(batch_size, drop_remainder, static)


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


def take_records(chunks: tf.data.Dataset, count: int) -> tf.data.Dataset:
    """The first `count` records of a dataset of chunks (vectors of records), cut inside a chunk if need be."""

    def step(seen, chunk):
        size = tf.size(chunk, out_type=tf.int64)
        return seen + size, (seen, chunk[:tf.maximum(tf.minimum(size, count - seen), 0)])

    cut = chunks.scan(tf.constant(0, tf.int64), step).take_while(lambda seen, chunk: seen < count)
    return cut.map(lambda seen, chunk: chunk)


def apply_ops(ds: tf.data.Dataset, ops: tuple[Op, ...], build: Build, records) -> tf.data.Dataset:
    """Applies `ops` (batches moved before vectorized maps); in skip mode, reports at the end of each pass.

    A batch followed by image decoding (and only per-image ops after it) is decoded in parts of
    MICRO_BATCH images, joined after: more, shorter calls keep both cores busy (a 64-image call
    of JPEGs takes ~15 ms). With `build.chunked`, `ds` holds chunks of records and the first op is
    the batch. With `build.carry`, batches become (batch, dropped) and later ops run `Op.carried`.
    """
    reported, carrying = build.on_error != "skip", False
    ordered = batches_last(ops, build)
    i = 0
    while i < len(ordered):
        op = ordered[i]
        if not reported and op.name.startswith("repeat"):  # else at the end: after the decode op's drops
            ds, reported = _end_of_epoch(ds, records, build), True
        run = _per_image_run(ordered, i, build)
        if run:  # decoded in parts, joined into whole batches (skip mode: whole again after drops)
            whole = dataclasses.replace(build, chunked=False)
            with own_functions():
                ds = op.apply.parts(ds, build)
            for part in run:
                with own_functions(part.own):
                    ds = part.apply(ds, whole)
            with own_functions():
                ds = op.apply.join(ds)
            i, build = i + len(run) + 1, whole
            continue
        with own_functions(op.own):
            ds = op.carried(ds, build) if carrying else op.apply(ds, build)
        if build.chunked and op.payload == "batch":
            build = dataclasses.replace(build, chunked=False)
        if build.carry and op.payload == "batch":  # from here on (batch, records dropped in making it)
            with own_functions():
                ds = ds.map(lambda *e: (e[0] if len(e) == 1 else e, tf.constant(0, tf.int64)))
            carrying = True
        i += 1
    if not reported:
        ds = _end_of_epoch(ds, records, build)
    return ds


def _end_of_epoch(ds: tf.data.Dataset, records, build: Build) -> tf.data.Dataset:
    with own_functions():
        return badrecords.end_of_epoch(ds, records, in_service=build.in_service)


def _per_image_run(ordered: list[Op], i: int, build: Build) -> list[Op]:
    """The ops after batch op `i` to run per part of a batch: a decode op and only per-image ops to the end.

    Parts when a batch is larger than MICRO_BATCH, and always in skip mode (a decode op may drop
    bad images: joining the parts makes the batches whole again).
    """
    batcher = ordered[i].apply
    if not isinstance(batcher, Batcher) or build.carry:
        return []
    run = ordered[i + 1:]
    if not any(o.payload == "decode" for o in run) or not all(o.splits and o.vectorized_in(build) for o in run):
        return []
    return run if batcher.size > MICRO_BATCH or build.on_error == "skip" else []


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
