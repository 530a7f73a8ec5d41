"""Per-process input from tf.data for the JAX engine: this process's part of every global batch.

Keras' JAX trainer takes each process's local batch and assembles the global
array across processes (`jax.make_array_from_process_local_data`), so every
process must give a batch of the same shape at every step. The plans are the
TensorFlow engine's (plans.py): a plain dataset is batched globally and sliced,
a tfscale pipeline is planned per input pipeline ("files", "records" or
"slices"); here an input pipeline is a process, and its batch is the process's
share of the global batch.
"""

from __future__ import annotations

import logging

import tensorflow as tf

from tfscale.data.sharding.plans import Shardable, pipeline_batches, steps_per_epoch
from tfscale.data.sharding.tf_distribute import as_dataset

log = logging.getLogger("tfscale")


def process_batches(data, *, shards: int, index: int, global_batch_size: int, drop_remainder: bool = True,
                    wrap=None, where: str = "Scale.distribute(data)") -> tf.data.Dataset:
    """This process's batches of `data` (unbatched examples): `global_batch_size // shards` examples each.

    Args:
        data: a tf.data.Dataset, a tfscale.data pipeline, or arrays.
        shards: how many different input streams the global batch is split into (processes, or
            groups of processes that hold one model replica together).
        index: this process's stream.
        global_batch_size: examples per step over all processes.
        drop_remainder: drop the last incomplete global batch. Forced where the batch is split over
            several devices or processes: each must get the same shape.
        wrap: applied to the final dataset (e.g. `InputTimer.wrap`).
        where: how the caller names `data`, for errors.
    """
    data = as_dataset(data, where)
    per_process = global_batch_size // shards
    context = tf.distribute.InputContext(num_input_pipelines=shards, input_pipeline_id=index,
                                         num_replicas_in_sync=shards)
    ds = pipeline_batches(data, context, global_batch_size, per_process, drop_remainder, wrap)
    steps = None if isinstance(data, Shardable) else steps_per_epoch(data, global_batch_size, drop_remainder)
    if steps is not None:  # Keras then knows the steps per epoch from the first one (progress bar, no warning)
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
    return ds
