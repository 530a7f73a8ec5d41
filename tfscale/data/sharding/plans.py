"""Input plans shared by both engines: whole global batches sliced per worker, and equal steps for pipelines.

MultiWorkerMirroredStrategy needs every worker to run the same number of
steps: a worker whose data ends first leaves the others in a collective that
fails (e.g. "input depth must be evenly divisible by filter depth"). So every
worker's input yields the same number of per-replica batches:

- A plain `tf.data.Dataset` of unbatched elements is batched globally and each
  worker takes its slice of every global batch (DATA sharding): every global
  batch holds exactly the elements it would hold without distribution, so a run
  on N replicas follows the same trajectory as a run on one.
- A tfscale pipeline (`batched_dataset_for`) is planned by `plan_for`:
  * "files": the records per file are known (image folders, shards written by
    `tfscale data convert`) and nothing after reading changes the count (no
    sample/balance/filter/take/skip/repeat, on_error="raise"): files are dealt
    to workers balanced by records (largest first to the lightest worker), and
    every worker is cut to the same number of full steps. The records left out
    (fewer than the largest file plus one global batch; each epoch other ones
    when files are shuffled) are logged, never dropped silently.
  * "records": the total is known but there are fewer files than workers (or
    in-memory data): records are dealt round robin and cut the same way.
  * "slices": counts unknown (CSV, text, generators, filters, skip mode):
    every worker reads everything in the same order (deterministic, unseeded
    shuffles get a seed shared by all workers) and takes its slice of each
    global batch, as for a plain dataset. Correct for any data, at the cost of
    every worker reading and preprocessing all of it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol, runtime_checkable

import tensorflow as tf

from tfscale.data.batching import batch_sizes  # noqa: F401 - re-exported: the batch contract
from tfscale.vocabulary import ShardingMode

log = logging.getLogger("tfscale")


@runtime_checkable
class Shardable(Protocol):
    """Input that shards itself: unbatched elements for one input pipeline."""

    def dataset_for(self, input_context: tf.distribute.InputContext) -> tf.data.Dataset: ...


class AlreadySharded:
    """This worker's own examples: an engine handed each worker its shard (Ray Data's `get_dataset_shard`).

    `Scale.distribute(data, sharded=True)` wraps `data` in it: tfscale neither
    auto-shards (tf.data's AutoShardPolicy is OFF) nor slices global batches;
    each worker batches its own examples into `global_batch_size // workers`.
    Shards may differ in size, so the steps are not assumed equal
    (`equal_steps` is False): on the TensorFlow engine every step still asks
    whether each worker has data, and a worker whose shard ended gets empty
    batches until the others' end; the JAX engine needs shards of equal steps.
    """

    equal_steps = False

    def __init__(self, dataset: tf.data.Dataset):
        self.dataset = dataset

    def dataset_for(self, input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        return self.dataset  # the same on every input pipeline of this worker: one pipeline per worker


def without_auto_shard(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options)


def per_replica_batches(dataset: tf.data.Dataset, input_context: tf.distribute.InputContext,
                        global_batch_size: int, per_replica_batch_size: int, drop_remainder: bool) -> tf.data.Dataset:
    """This input pipeline's per-replica batches; each global batch keeps exactly its elements.

    Whole global batches are formed first; worker w takes its contiguous slice
    of each and splits it into one batch per local replica, so every worker
    sees the same number of steps. An incomplete last global batch is filtered
    out rather than dropped with `drop_remainder=True`: that would give the
    batch dimension a static size, and Keras 3.15 `evaluate` under
    MirroredStrategy then reports a wrong loss for a dataset from
    `distribute_datasets_from_function` (seen here: 1.2455 for a true 1.3078).
    """
    workers = input_context.num_input_pipelines
    per_worker = global_batch_size // workers
    batches = dataset.batch(global_batch_size)
    if drop_remainder:
        batches = batches.filter(lambda *b: tf.shape(tf.nest.flatten(b)[0])[0] == global_batch_size)
    if workers > 1:
        start = input_context.input_pipeline_id * per_worker
        batches = batches.map(lambda *b: _unwrap(tf.nest.map_structure(lambda t: t[start:start + per_worker], b)),
                              num_parallel_calls=tf.data.AUTOTUNE)
    if per_worker != per_replica_batch_size:
        batches = batches.rebatch(per_replica_batch_size)
    return batches


@dataclasses.dataclass(frozen=True)
class Plan:
    """How one input pipeline of a multi-worker tfscale pipeline gets its records (see the module docstring).

    Attributes:
        mode: "files", "records" or "slices".
        units: this worker's units ("files").
        take: records this worker keeps per epoch ("files", "records").
        left_out: records per epoch no worker uses, so all run the same steps.
    """

    mode: ShardingMode
    units: tuple | None = None
    take: int | None = None
    left_out: int = 0


def deal_units(counts: tuple[int, ...], workers: int) -> list[list[int]]:
    """Unit indices per worker, balanced by records: largest unit first to the worker with fewest records.

    Deterministic (ties go to the lower index), so every worker computes the same deal.
    """
    loads, dealt = [0] * workers, [[] for _ in range(workers)]
    for i in sorted(range(len(counts)), key=lambda i: (-counts[i], i)):
        w = min(range(workers), key=lambda k: (loads[k], len(dealt[k]), k))
        loads[w] += counts[i]
        dealt[w].append(i)
    return [sorted(d) for d in dealt]


def plan_for(source, workers: int, index: int, *, countable: bool, batch: int, drop_remainder: bool) -> Plan:
    """The plan of input pipeline `index` of `workers` for `source`.

    Args:
        source: a `tfscale.data.core.Source`.
        workers: number of input pipelines (workers).
        index: this input pipeline.
        countable: nothing after reading changes how many records there are.
        batch: records one worker consumes per step (per-replica batch x local replicas).
        drop_remainder: incomplete batches are dropped: cut every worker to whole steps.
    """
    step = batch if drop_remainder else 1
    units = source.units
    counts = source.unit_counts() if countable and units is not None else None
    total = sum(counts) if counts is not None else (getattr(source, "count", None) if countable else None)
    if total is None:
        log.info("%s: DATA sharding by slices of each global batch: counts unknown, so each of %d workers "
                 "reads everything", source.name, workers)
        return Plan("slices")
    if counts is not None and len(units) >= workers:
        dealt = deal_units(counts, workers)
        loads = [sum(counts[i] for i in d) for d in dealt]
        mode, mine = "files", tuple(units[i] for i in dealt[index])
    else:
        loads = [total // workers + (w < total % workers) for w in range(workers)]
        mode, mine = "records", None
    take = min(loads) // step * step
    plan = Plan(mode, mine, take, total - take * workers)
    log.info("%s: %s sharding, %s%d records for input pipeline %d (loads %s)", source.name, mode.upper(),
             f"{len(mine)} of {len(units)} files, " if mine else "", take, index, loads)
    if plan.left_out >= batch * workers:
        log.warning("%s: %d of %d records per epoch left out so every worker runs as many steps (files of "
                    "uneven size); write more, smaller shards to lose less", source.name, plan.left_out, total)
    elif plan.left_out:
        log.info("%s: %d of %d records per epoch left out (every worker runs as many steps)", source.name,
                 plan.left_out, total)
    return plan


def pipeline_batches(data, input_context: tf.distribute.InputContext, global_batch_size: int, batch_size: int,
                     drop_remainder: bool, wrap=None) -> tf.data.Dataset:
    """One input pipeline's batches of `batch_size`, prefetched, tf.data auto-sharding off.

    A tfscale pipeline batches (and plans) itself, with vectorized maps per batch; a `Shardable`
    gives its unbatched elements; a plain dataset is sliced from whole global batches. `wrap` is
    applied last (e.g. `InputTimer.wrap`).
    """
    if hasattr(data, "batched_dataset_for"):
        ds = data.batched_dataset_for(input_context, batch_size, drop_remainder)
    elif isinstance(data, Shardable):
        ds = data.dataset_for(input_context).batch(batch_size, drop_remainder=drop_remainder)
    else:
        ds = per_replica_batches(data, input_context, global_batch_size, batch_size, drop_remainder)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return without_auto_shard(wrap(ds) if wrap else ds)


def steps_per_epoch(dataset: tf.data.Dataset, global_batch_size: int, drop_remainder: bool) -> int | None:
    """Global steps in one pass over `dataset`, or None where its size is unknown or infinite."""
    n = int(dataset.cardinality())
    if n < 0:
        return None
    return n // global_batch_size if drop_remainder else -(-n // global_batch_size)


def _unwrap(elements: tuple):
    return elements[0] if len(elements) == 1 else elements


def equal_steps(data) -> bool:
    """Every input pipeline of `distribute(data)` yields the same number of batches, by construction.

    True for a plain dataset (every worker slices each global batch) and for a
    tfscale pipeline planned by `plan_for`; False for a `Shardable` and a
    pipeline read through a tf.data service (it deals elements as workers ask).
    """
    if isinstance(data, tf.data.Dataset):
        return True
    return bool(getattr(data, "equal_steps", False))
