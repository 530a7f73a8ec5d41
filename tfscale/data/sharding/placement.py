"""Input placed for an engine: what `Scale.input` and `Scale.distribute` call, and only they (a contract of
pyproject.toml's import-linter section: the layers above `Scale` go through it).

`place_input(engine, data, ...)` reads three members the `Engine` declares (`InputEngine`) and picks by them, and
by input, loading TensorFlow only for tf.data input:

- an engine with a tf.distribute strategy (`tf_strategy`): per-replica batches through
  `distribute_datasets_from_function` (tf_distribute.py); arrays become a tf.data.Dataset;
- no strategy, tf.data input (a Dataset, a tfscale pipeline): this process's part of each global batch
  (its stream of `input_shards`), as a tf.data.Dataset (processes.py);
- no strategy, NumPy arrays or a generator (function): the same as a `keras.utils.PyDataset`, without
  TensorFlow (arrays.py).

It returns a `DistributedInput`: the batches and what the optimizer and callbacks read of them.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Protocol

from tfscale.compat import tensorflow as tf_compat
from tfscale.data.sharding import is_tf_input
from tfscale.errors import DataError

log = logging.getLogger("tfscale")


class InputEngine(Protocol):
    """What `place_input` reads of an engine (`tfscale.strategy.engine.Engine` declares each)."""

    @property
    def tf_strategy(self) -> Any:
        """The `tf.distribute.Strategy` whose input functions place the batches; None: the engine takes
        each process's part of every global batch (`input_shards`)."""

    @property
    def input_shards(self) -> tuple[int, int]:
        """(input streams each global batch is read in, this process's stream)."""

    @property
    def num_replicas(self) -> int:
        """Data-parallel replicas over all processes: what the global batch is split into."""


@dataclasses.dataclass(frozen=True)
class DistributedInput:
    """Batches of the user's data placed for one engine, and what the optimizer and callbacks read of them.

    Attributes:
        dataset: what `model.fit` takes on that engine: a distributed dataset (TensorFlow), a
            tf.data.Dataset or a `keras.utils.PyDataset` (JAX).
        global_batch_size: examples per step over all replicas.
        per_replica_batch_size: examples per step on each replica.
        steps: steps in one pass over the data, where known before reading it (None: unknown or infinite).
        equal_steps: every worker runs the same number of steps by construction (False for input that
            engines or services deal unevenly, and for already-sharded input).
    """

    dataset: Any
    global_batch_size: int
    per_replica_batch_size: int
    steps: int | None
    equal_steps: bool


def place_input(engine: InputEngine, data, *, global_batch_size: int, per_replica_batch_size: int,
                drop_remainder: bool = True, wrap=None, where: str = "Scale.distribute(data)",
                sharded: bool = False) -> DistributedInput:
    """This process's batches of `data` (unbatched examples) for `engine`, prefetched.

    Args:
        engine: the Scale's engine.
        data: a tf.data.Dataset or tfscale.data pipeline of unbatched examples; NumPy arrays (x, y);
            on the JAX engine also a generator function.
        global_batch_size: examples per step over all replicas.
        per_replica_batch_size: examples per step on each replica.
        drop_remainder: leave out the last incomplete global batch (training input).
        wrap: applied to each tf.data input pipeline's final dataset (e.g. `InputTimer.wrap`).
        where: how the caller names `data`, for errors (e.g. "train_data").
        sharded: `data` is this worker's own shard (an engine such as Ray Data dealt it): read it as it
            is, `global_batch_size // workers` examples per step, steps not assumed equal (`AlreadySharded`).

    Raises:
        DataError: input of a kind the engine cannot read, named with what it accepts.
    """
    batches, equal = _batches(engine, data, global_batch_size, per_replica_batch_size, drop_remainder, wrap, where,
                              sharded)
    return DistributedInput(batches, global_batch_size, per_replica_batch_size, _steps(batches),
                            equal and not sharded)


def _batches(engine: InputEngine, data, global_batch_size: int, per_replica_batch_size: int, drop_remainder: bool,
             wrap, where: str, sharded: bool):
    """(what `model.fit` takes, whether every worker has the same steps)."""
    if sharded:
        data = _already_sharded(engine, data, global_batch_size, where)
        if not is_tf_input(data):  # NumPy arrays on the JAX engine: this process's batches of its own arrays
            from tfscale.data.sharding.arrays import host_batches

            shards, _ = engine.input_shards
            return host_batches(data, global_batch_size=global_batch_size // shards, shards=1, index=0,
                                drop_remainder=True), False
    strategy = engine.tf_strategy
    if strategy is not None:
        from tfscale.data.sharding.plans import equal_steps
        from tfscale.data.sharding.tf_distribute import as_dataset, strategy_batches

        data = as_dataset(data, where)
        return strategy_batches(strategy, data, global_batch_size=global_batch_size,
                                per_replica_batch_size=per_replica_batch_size, drop_remainder=drop_remainder,
                                wrap=wrap, where=where), equal_steps(data)
    shards, index = engine.input_shards
    if not drop_remainder and engine.num_replicas > 1:  # the batch is split: every part needs one shape
        log.warning("%s: the last incomplete global batch (if any) is left out: on the JAX engine every replica and "
                    "process takes a batch of the same shape; scale.evaluate(model, data) counts every example (but "
                    "a tfscale.data pipeline's: it deals files or records per worker)", where)
        drop_remainder = True
    if is_tf_input(data):
        from tfscale.data.sharding.plans import equal_steps
        from tfscale.data.sharding.processes import process_batches
        from tfscale.data.sharding.tf_distribute import as_dataset

        data = as_dataset(data, where)
        return process_batches(data, shards=shards, index=index, global_batch_size=global_batch_size,
                               drop_remainder=drop_remainder, wrap=wrap, where=where), equal_steps(data)
    from tfscale.data.sharding.arrays import host_batches

    batches = host_batches(data, global_batch_size=global_batch_size, shards=shards, index=index,
                           drop_remainder=drop_remainder)
    if batches is None:
        raise DataError(f"{where} is a {type(data).__name__}, which tfscale cannot distribute", where=where,
                        fix="pass a tf.data.Dataset or tfscale.data pipeline of unbatched examples, NumPy arrays "
                            "(x, y), or a generator function yielding examples")
    return batches, True  # every process slices the same global batches (a generator is counted first)


def _already_sharded(engine: InputEngine, data, global_batch_size: int, where: str):
    """`data` as an `AlreadySharded` dataset (without a tf.distribute strategy, NumPy arrays: the arrays, read
    per process).

    Raises:
        DataError: a global batch that does not split evenly over the workers, or a tfscale pipeline
            (it plans its own sharding: drop sharded=True).
    """
    if hasattr(data, "batched_dataset_for"):
        raise DataError(f"{where} is a tfscale.data pipeline, which shards itself over the workers",
                        where=f"{where}, sharded=True",
                        fix="drop sharded=True, or pass this worker's shard as a tf.data.Dataset or NumPy arrays")
    workers, _ = engine.input_shards
    if global_batch_size % workers:
        raise DataError(f"global batch {global_batch_size} does not split evenly over {workers} workers",
                        where=f"{where}, sharded=True", fix=f"use a multiple of {workers}")
    if engine.tf_strategy is None and not is_tf_input(data):
        return data
    from tfscale.data.sharding.plans import AlreadySharded
    from tfscale.data.sharding.tf_distribute import as_dataset

    return AlreadySharded(as_dataset(data, where))


def _steps(batches) -> int | None:
    """The steps per epoch `model.fit` will see, where known: a PyDataset's or a finite dataset's length, or
    the steps a distributed dataset reports (tf_distribute.py sets them)."""
    try:
        steps = len(batches)
    except TypeError:
        steps = tf_compat.distributed_steps(batches)  # what a tf.distribute dataset reports (tf_distribute.py)
    return int(steps) if isinstance(steps, int) and steps > 0 else None
