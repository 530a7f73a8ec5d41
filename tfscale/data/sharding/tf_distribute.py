"""The TensorFlow engine's input: per-replica batches through `distribute_datasets_from_function`.

Workarounds for today's TF/Keras live here, named (see compat/keras/multi_worker.py, 3-5; the private
fields they set are reached through compat/tensorflow.py):
the incomplete last batch is filtered rather than dropped (keras-team/keras#19891),
the distributed dataset reports steps, and the per-step "does every worker still
have data" collective is off where every worker runs the same steps by construction.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfscale.compat import tensorflow as tf_compat
from tfscale.data.sharding.plans import Shardable, equal_steps, pipeline_batches, steps_per_epoch
from tfscale.errors import DataError


def as_dataset(data, where: str = "Scale.distribute(data)"):
    """Unbatched examples as a tf.data input: a Dataset or a tfscale pipeline as they are; arrays sliced.

    Raises:
        DataError: anything else, naming what was given.
    """
    if isinstance(data, (tf.data.Dataset, Shardable)):
        return data
    if isinstance(data, np.ndarray) or (isinstance(data, (tuple, dict)) and data and all(
            isinstance(v, np.ndarray) for v in (data.values() if isinstance(data, dict) else data))):
        return tf.data.Dataset.from_tensor_slices(data)
    raise DataError(f"{where} is a {type(data).__name__}, which tfscale cannot distribute", where=where,
                    fix="pass a tf.data.Dataset of unbatched examples, a tfscale.data pipeline, or NumPy arrays (x, y)")


def strategy_batches(strategy: tf.distribute.Strategy, data, *, global_batch_size: int, per_replica_batch_size: int,
                     drop_remainder: bool = True, wrap=None, where: str = "Scale.distribute(data)"):
    """Builds per-replica batches of `data` for `strategy` (the TensorFlow engine's part of `placement.place_input`).

    Args:
        strategy: the strategy `fit` will run under.
        data: a `tf.data.Dataset` of unbatched elements, or a `Shardable`.
        global_batch_size: examples per step over all replicas.
        per_replica_batch_size: examples per step on each replica.
        drop_remainder: drop the last incomplete global batch (default), so every
            step has the same shape on every replica.
        wrap: applied to each input pipeline's final dataset (e.g. `InputTimer.wrap`).
        where: how the caller names `data`, for errors.

    Returns:
        A `tf.distribute.DistributedDataset` that `model.fit` accepts.
    """
    data = as_dataset(data, where)

    distributed = strategy.distribute_datasets_from_function(
        lambda context: pipeline_batches(data, context, global_batch_size, per_replica_batch_size, drop_remainder,
                                         wrap))
    steps = None if isinstance(data, Shardable) else steps_per_epoch(data, global_batch_size, drop_remainder)
    # TF reports the cardinality of one worker's dataset of per-replica batches (local replicas x steps),
    # and Keras reads it as steps per epoch; give it the steps, so progress bars end where the data does.
    if isinstance(distributed, tf.data.Dataset):  # the default strategy: a plain dataset
        if steps is not None:
            distributed = distributed.apply(tf.data.experimental.assert_cardinality(steps))
    elif steps is not None:
        tf_compat.set_distributed_steps(distributed, steps)
    elif _several_workers(strategy) and not equal_steps(data):
        # Workers with unequal steps: each one's cardinality is its own, and Keras would end the epoch of the
        # one with less data first, leaving the others in a collective. Unknown, Keras reads until TF's
        # per-step "has data" check (kept below) ends every worker's epoch at the same step.
        tf_compat.set_distributed_steps(distributed, tf.data.UNKNOWN_CARDINALITY)
    if _several_workers(strategy) and _replicas_end_together(strategy, data, drop_remainder):
        # On several workers TF's iterator runs a collective before every step to agree that all still have
        # data (a gRPC round trip per step); here every replica gets a batch at every step, so it is not needed.
        tf_compat.skip_data_check(distributed)
    return distributed


def _several_workers(strategy) -> bool:
    return tf_compat.in_multi_worker_mode(strategy)


def _replicas_end_together(strategy, data, drop_remainder: bool) -> bool:
    """Every replica gets a batch at every step and all run out at the same step.

    Workers do when their pipelines yield equal steps; the replicas of one worker
    do when every batch is whole (drop_remainder), or when there is only one: an
    incomplete last batch would otherwise leave a replica without data.
    """
    one_replica_per_worker = len(getattr(strategy.extended, "worker_devices", ())) == 1
    return equal_steps(data) and (drop_remainder or one_replica_per_worker)
