"""One order of examples for any number of workers: the batches of a pipeline with `elastic()`.

The global order of an elastic pipeline is a function of (seed, epoch) only:
every worker reads the whole input in one deterministic order (its units, and
its records, shuffled with seeds mixed with the epoch from `tfscale.data.epochs`),
and global batch k holds records ``k * G`` to ``(k + 1) * G`` of that order. Worker w
of W keeps rows ``w * G / W`` to ``(w + 1) * G / W`` of each global batch, as for
NumPy arrays. So global batch k holds the same records on 1 worker or 16, and a
checkpoint taken after k steps resumes on any number of workers at exactly the
next batch (`Pipeline.starting_at`).

Two ways to keep a worker's rows, chosen per pipeline:

- "rows" (records per file known: `tfscale data convert` folders, image folders;
  nothing changes the count; only maps and shuffles after reading): the rows are
  picked by position right after reading, before parsing or decoding. Every
  worker reads every record's bytes, but parses and decodes only its own.
- "slices" (anything else: CSV and text globs, generators, filters, skip mode):
  every worker runs the whole pipeline and takes its slice of each global batch.

Only training input (whole global batches) is elastic; evaluation input is read
as usual.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfscale.data import epochs, transforms
from tfscale.data.core import Build, Op
from tfscale.data.sharding import plans
from tfscale.errors import ConfigError
from tfscale.vocabulary import ElasticMode

SHARED_SEED = 20240917  # unseeded shuffles: every worker and every run must draw one order


def mode_of(pipe) -> ElasticMode:
    """"rows" when a worker can pick its rows right after reading, else "slices" (see the module docstring)."""
    if pipe.source.unit_counts() is None or not pipe._keeps_count():
        return "slices"
    plain = all(op.payload == "shuffle" or (op.keeps_records and not op.name.startswith("cache")) for op in pipe.ops)
    return "rows" if plain else "slices"


def check(pipe) -> None:
    """Raises where a pipeline cannot keep one order for every worker count."""
    if pipe.service_options:
        raise ConfigError("elastic() and service() do not go together: a tf.data service deals elements to workers "
                          "as they ask, so the order depends on timing", where=repr(pipe),
                          fix="drop .service(...) for an elastic order, or drop .elastic()")
    cached = [op.name for op in pipe.ops if op.name.startswith("cache")]
    if cached:
        raise ConfigError("cache() with elastic(): the cache would keep epoch 0's order, while an elastic pipeline "
                          "reads every epoch in its own order", where=repr(pipe),
                          fix="drop .cache() (or .elastic(): then a resume on another worker count restarts the epoch)")


def batches(pipe, input_context: tf.distribute.InputContext, batch_size: int, *, static: bool) -> tf.data.Dataset:
    """This input pipeline's per-replica batches of `batch_size`, whole global batches only, in the elastic order.

    `pipe.start_records` records of the first pass are left out (a resumed epoch).
    """
    check(pipe)
    workers, index = input_context.num_input_pipelines, input_context.input_pipeline_id
    global_batch = batch_size * input_context.num_replicas_in_sync
    per_worker = global_batch // workers
    build = Build(deterministic=True, on_error=pipe.on_error, records=pipe.records, shared_seed=SHARED_SEED,
                  shuffle_units=pipe.shuffle_units)
    mode, start = mode_of(pipe), pipe.start_records
    total = sum(pipe.source.unit_counts()) if mode == "rows" else None

    def one_epoch(epoch):
        # TensorFlow seeds a shuffle with (global seed, its seed); the global seed is the one set when the
        # function is traced, which differs between a run and its resumption (tfscale.fit sets `seed` after
        # building the first input). Within this function's graph it is fixed, so the order is too.
        tf.compat.v1.set_random_seed(SHARED_SEED)
        this = dataclasses.replace(build, epoch=epoch)
        if mode == "rows":
            return _rows(pipe, this, total // global_batch * global_batch, start, global_batch, per_worker, index,
                         batch_size, static)
        this = dataclasses.replace(this, sliced=True)
        elements = transforms.apply_ops(pipe._records(this), pipe.ops, this, pipe.records)
        return plans.per_replica_batches(elements.skip(start), input_context, global_batch, batch_size, True)

    ds = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).map(
        lambda _: tf.py_function(epochs.next_epoch, [], tf.int64)).flat_map(one_epoch)
    if total is not None:  # Keras reads the steps per epoch from the cardinality
        local = max(1, input_context.num_replicas_in_sync // workers)
        ds = ds.apply(tf.data.experimental.assert_cardinality((total // global_batch - start // global_batch) * local))
    return transforms.with_options(ds, build)


def _rows(pipe, build: Build, usable: int, start: int, global_batch: int, per_worker: int, index: int,
          batch_size: int, static: bool) -> tf.data.Dataset:
    """The records of every worker in one order, this worker's rows picked by position, then mapped and batched.

    Shuffles run on the records as read (the pipeline's other ops are maps, which give the same results in any
    order), so a worker shuffles every record's bytes but decodes only its own.
    """
    records = pipe._records(build)
    for op in pipe.ops:
        if op.payload == "shuffle":
            records = op.apply(records, build)
    mine = records.take(usable).skip(start).enumerate(start).filter(
        lambda i, *_: tf.equal((i % global_batch) // per_worker, index)).map(lambda i, *e: e[0] if len(e) == 1 else e)
    ops = tuple(op for op in pipe.ops if op.payload != "shuffle")
    ops += (Op("batch", transforms.batch_op(batch_size, True, static=static), keeps_records=False, payload="batch",
               agnostic=True, own=True),)
    return transforms.apply_ops(mine, ops, build, pipe.records)
