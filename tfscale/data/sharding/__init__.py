"""Input for a Scale: each engine's batches of the user's data, every worker with the same steps.

`distribute(engine, data, ...)` is what `Scale.distribute` calls. It chooses by
engine and by input, and loads TensorFlow only for tf.data input:

============================  ==============================================================
TensorFlow engine             per-replica batches, `distribute_datasets_from_function`
                              (tf_distribute.py); arrays become a tf.data.Dataset
JAX engine, tf.data input     this process's part of each global batch, as a tf.data.Dataset
(Dataset, tfscale pipeline)   (processes.py)
JAX engine, NumPy arrays or   the same as a `keras.utils.PyDataset`, without TensorFlow
a generator (function)        (arrays.py)
============================  ==============================================================

Both engines share the plans (plans.py): whole global batches sliced per worker
for plain data, and "files" / "records" / "slices" plans for tfscale pipelines.
The names of plans.py and tf_distribute.py are re-exported here on first use.
"""

from __future__ import annotations

import importlib
import logging
import sys

from tfscale.data.batching import batch_sizes
from tfscale.errors import DataError

log = logging.getLogger("tfscale")

_LAZY = {"AlreadySharded": "plans", "Shardable": "plans", "Plan": "plans", "deal_units": "plans", "plan_for": "plans",
         "per_replica_batches": "plans", "steps_per_epoch": "plans", "equal_steps": "plans",
         "without_auto_shard": "plans", "as_dataset": "tf_distribute", "_replicas_end_together": "tf_distribute",
         "process_batches": "processes", "skip_examples": "position"}

__all__ = ["batch_sizes", "distribute", "is_tf_input", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tfscale.data.sharding.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfscale.data.sharding' has no attribute {name!r}")


def is_tf_input(data) -> bool:
    """A tf.data.Dataset or a tfscale.data pipeline (what needs TensorFlow to be read)."""
    if hasattr(data, "batched_dataset_for") or hasattr(data, "dataset_for"):
        return True
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, getattr(getattr(tf, "data", None), "Dataset", ()))


def distribute(engine, data, *, global_batch_size: int, per_replica_batch_size: int, drop_remainder: bool = True,
               wrap=None, where: str = "Scale.distribute(data)", sharded: bool = False):
    """This process's batches of `data` (unbatched examples) for `engine`, prefetched.

    Args:
        engine: the Scale's engine (or a `tf.distribute.Strategy`).
        data: a tf.data.Dataset or tfscale.data pipeline of unbatched examples; NumPy arrays (x, y);
            on the JAX engine also a generator function.
        global_batch_size: examples per step over all replicas.
        per_replica_batch_size: examples per step on each replica.
        drop_remainder: leave out the last incomplete global batch (training input).
        wrap: applied to each tf.data input pipeline's final dataset (e.g. `InputTimer.wrap`).
        where: how the caller names `data`, for errors (e.g. "train_data").
        sharded: `data` is this worker's own shard (an engine such as Ray Data dealt it): read it as it
            is, `global_batch_size // workers` examples per step, steps not assumed equal (`AlreadySharded`).

    Returns:
        What `model.fit` takes on that engine: a distributed dataset (TensorFlow), a tf.data.Dataset
        or a `keras.utils.PyDataset` (JAX).

    Raises:
        DataError: input of a kind the engine cannot read, named with what it accepts.
    """
    if sharded:
        data = _already_sharded(engine, data, global_batch_size, where)
        if not is_tf_input(data):  # NumPy arrays on the JAX engine: this process's batches of its own arrays
            from tfscale.data.sharding.arrays import host_batches

            shards, _ = engine.input_shards
            return host_batches(data, global_batch_size=global_batch_size // shards, shards=1, index=0,
                                drop_remainder=True)
    if getattr(engine, "backend", "tensorflow") == "tensorflow":
        from tfscale.data.sharding.tf_distribute import distribute as tf_distribute

        strategy = getattr(engine, "strategy", engine)
        return tf_distribute(strategy, data, global_batch_size=global_batch_size,
                             per_replica_batch_size=per_replica_batch_size, drop_remainder=drop_remainder, wrap=wrap,
                             where=where)
    shards, index = engine.input_shards
    if not drop_remainder and engine.num_replicas > 1:  # the batch is split: every part needs one shape
        log.warning("%s: the last incomplete global batch (if any) is left out: on the JAX engine every replica and "
                    "process takes a batch of the same shape; evaluate the rest on one device to count every example",
                    where)
        drop_remainder = True
    if is_tf_input(data):
        from tfscale.data.sharding.processes import process_batches

        return process_batches(data, shards=shards, index=index, global_batch_size=global_batch_size,
                               drop_remainder=drop_remainder, wrap=wrap, where=where)
    from tfscale.data.sharding.arrays import host_batches

    batches = host_batches(data, global_batch_size=global_batch_size, shards=shards, index=index,
                           drop_remainder=drop_remainder)
    if batches is None:
        raise DataError(f"{where} is a {type(data).__name__}, which tfscale cannot distribute", where=where,
                        fix="pass a tf.data.Dataset or tfscale.data pipeline of unbatched examples, NumPy arrays "
                            "(x, y), or a generator function yielding examples")
    return batches


def _already_sharded(engine, data, global_batch_size: int, where: str):
    """`data` as an `AlreadySharded` dataset (JAX engine, NumPy arrays: the arrays, read per process).

    Raises:
        DataError: a global batch that does not split evenly over the workers, or a tfscale pipeline
            (it plans its own sharding: drop sharded=True).
    """
    if hasattr(data, "batched_dataset_for"):
        raise DataError(f"{where} is a tfscale.data pipeline, which shards itself over the workers",
                        where=f"{where}, sharded=True",
                        fix="drop sharded=True, or pass this worker's shard as a tf.data.Dataset or NumPy arrays")
    workers = _workers(engine)
    if global_batch_size % workers:
        raise DataError(f"global batch {global_batch_size} does not split evenly over {workers} workers",
                        where=f"{where}, sharded=True", fix=f"use a multiple of {workers}")
    if getattr(engine, "backend", "tensorflow") != "tensorflow" and not is_tf_input(data):
        return data
    from tfscale.data.sharding.plans import AlreadySharded
    from tfscale.data.sharding.tf_distribute import as_dataset

    return AlreadySharded(as_dataset(data, where))


def _workers(engine) -> int:
    """Input pipelines (worker processes) of `engine`."""
    if getattr(engine, "backend", "tensorflow") != "tensorflow":
        return engine.input_shards[0]
    strategy = getattr(engine, "strategy", engine)
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    return max(1, len(spec.get("worker", ())) + len(spec.get("chief", ())))
