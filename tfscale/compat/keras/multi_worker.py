"""The Keras 3 compatibility layer: what today's Keras 3 + TensorFlow need to work together (part of Keras'
quarantine, `tfscale.compat.keras`).

Everything here works around an upstream bug and names it, so it can be
deleted the day upstream fixes it.  Nothing here patches Keras or TensorFlow
for the whole process: the fixes live on tfscale's own strategy subclass and
apply only to models built under its scope. Checked on Keras 3.13-3.15 with
TensorFlow 2.20-2.21; `needs_reduce_fix` gates the reduce fix on the Keras
version. Private TensorFlow used: `tensorflow.python.distribute`'s
`CollectiveAllReduceExtended` (subclassed, its `_initialize_local_devices` and
`_num_workers`), `distribute_lib.Strategy.__init__` (to pass that extended) and
`values.PerReplica`; TensorFlow has no public way to give a multi-worker
strategy several CPU replicas or to build per-replica values.

keras-team/keras#20585 (also tensorflow/tensorflow#72388, ray-project/ray#47464):
`Model.fit` under MultiWorkerMirroredStrategy fails in Keras 3 because

1. `TensorFlowTrainer._maybe_symbolic_build` reduces the whole first batch, a
   nested structure, with one `strategy.reduce` call, which
   CollectiveAllReduceStrategy accepts only tensor by tensor; and
2. `reduce_per_replica` reduces scalar logs with `axis=0`, which fails on rank-0 values.

`MultiWorkerStrategy.reduce` below takes structures apart and drops `axis` on
scalars. It also gives each worker more than one CPU replica (logical CPU
devices), which TensorFlow's strategy does not allow (it uses one CPU device).

keras-team/keras#19246: `steps_per_execution > 1` fails on several workers (the
steps run inside a `tf.cond`, where the optimizer's cross-worker `merge_call`
breaks); `MultiWorkerStrategy.run` turns the obscure placeholder error into a
ConfigError saying so.

Not a bug but a cost: Keras averages every scalar log of a train or test step
(loss, each metric) over the replicas with its own `strategy.reduce` call, so a
step runs one cross-worker collective per log value besides the gradients'.
`MultiWorkerStrategy.run` averages them all in one collective instead (the same
means), which saves a gRPC round trip per value and step (with one replica per
worker the logs are plain tensors; Keras still reduces each one).

Two more version-specific workarounds live beside the code they concern, in
tfscale/data/sharding/tf_distribute.py (`strategy_batches`; the private fields it sets through
`tfscale.compat.tensorflow`):

3. Keras 3.15 `evaluate` under MirroredStrategy reports a wrong loss for a
   `distribute_datasets_from_function` dataset whose batch dimension is static
   (`drop_remainder=True`); seen here (1.2455 for a true 1.3078), related to
   keras-team/keras#19891. tfscale filters out the incomplete batch instead.
4. `DistributedDatasetsFromFunction.cardinality` is one worker's count of
   per-replica batches (local replicas x steps), which Keras reads as steps
   per epoch; tfscale sets it to the steps.
5. Not a bug but a cost: on several workers TensorFlow's distributed iterator
   runs a cross-worker collective before every step to agree on whether every
   worker still has data (unless the dataset is infinite). tfscale's input
   gives every worker the same number of steps by construction, so
   `distribute` turns that check off for it.

6. An input whose workers may run unequal steps (`sharded=True`, a `Shardable`)
   keeps that check and has UNKNOWN cardinality, so Keras runs steps until
   `get_next` raises OutOfRange (when no worker has data left). In the traced
   step, the ops that do not read the batch, the optimizer's
   `iterations.assign_add(1)` among them, can run before that op fails: one
   extra update per epoch (8 batches, 9 iterations), which moves Adam's bias
   correction, learning-rate schedules and warmup. Plain Keras 3.15 does it too
   with any input of unknown cardinality. `MultiWorkerStrategy.run` makes
   every op of a Keras step wait for the step's batch (`_after_data`). Steps
   where only some workers have data (the others get empty batches) are real
   steps and still update.
"""

from __future__ import annotations

import functools

import keras
import tensorflow as tf

from tfscale import compat
from tfscale.errors import ConfigError

try:  # private TensorFlow: see the module docstring
    from tensorflow.python.distribute import collective_all_reduce_strategy as _collective
    from tensorflow.python.distribute import distribute_lib as _distribute_lib
    from tensorflow.python.distribute import values as _values

    _collective.CollectiveAllReduceExtended._initialize_local_devices  # noqa: B018 - overridden below
except (ImportError, AttributeError) as e:
    raise compat.changed("TensorFlow", tf.__version__, f"what multi_worker builds on ({e})", "2.20-2.21",
                         needed_for="the multi_worker strategy (Keras 3 fit on several workers)") from None

# The first Keras release with keras-team/keras#20585 fixed; None while it is open.
KERAS_FIT_FIXED_IN: tuple[int, int] | None = None


def _keras_version() -> tuple[int, int]:
    major, minor = keras.__version__.split(".")[:2]
    return int(major), int(minor)


def needs_reduce_fix(version: tuple[int, int] | None = None) -> bool:
    """True for the Keras 3 versions whose `fit` fails under multi-worker strategies."""
    version = version or _keras_version()
    return version[0] >= 3 and (KERAS_FIT_FIXED_IN is None or version < KERAS_FIT_FIXED_IN)


class _Extended(_collective.CollectiveAllReduceExtended):
    """CollectiveAllReduceExtended that can use several logical CPU devices per worker."""

    def __init__(self, container_strategy, cluster_resolver, communication_options, cpu_replicas):
        self._tfscale_cpu_replicas = cpu_replicas
        super().__init__(container_strategy, cluster_resolver=cluster_resolver,
                         communication_options=communication_options)

    def _initialize_local_devices(self, cluster_resolver, worker_device):
        devices, device_type = super()._initialize_local_devices(cluster_resolver, worker_device)
        if device_type == "CPU" and self._tfscale_cpu_replicas > 1:
            devices = tuple(f"{worker_device}/device:CPU:{i}" for i in range(self._tfscale_cpu_replicas))
        return devices, device_type


class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy on which Keras 3 `fit`/`evaluate`/`predict` work.

    Still an instance of `tf.distribute.MultiWorkerMirroredStrategy`, so Keras
    and TensorFlow treat it as that strategy everywhere else.
    """

    def __init__(self, cluster_resolver=None, communication_options=None, cpu_replicas: int = 1):
        communication_options = communication_options or tf.distribute.experimental.CommunicationOptions()
        # Skip MultiWorkerMirroredStrategy.__init__ only to pass our own extended.
        _distribute_lib.Strategy.__init__(
            self, _Extended(self, cluster_resolver, communication_options, cpu_replicas))
        self._tfscale_fix_reduce = needs_reduce_fix()
        self._tfscale_reduced: dict[int, tf.Tensor] = {}  # logs averaged by run(), by id, until Keras reduces them

    def run(self, fn, args=(), kwargs=None, options=None):
        keras_step = _is_keras_step(fn) and self.extended._num_workers > 1
        if keras_step and (getattr(fn.__self__, "steps_per_execution", 1) or 1) > 1:
            # keras-team/keras#19246: Keras runs the steps of one execution inside a tf.cond, where the
            # cross-worker merge_call of the optimizer fails ("You must feed a value for placeholder").
            raise ConfigError(
                f"steps_per_execution={fn.__self__.steps_per_execution} does not work on several workers with "
                f"Keras {keras.__version__} (keras-team/keras#19246)", where="model.compile(steps_per_execution=...)",
                fix="compile with steps_per_execution=1 (the default) for multi-worker training")
        if _is_keras_step(fn):
            fn = _after_data(fn)
        outputs = super().run(fn, args=args, kwargs=kwargs, options=options)
        return self._mean_scalar_logs(outputs) if keras_step else outputs

    def _mean_scalar_logs(self, outputs):
        """Averages the float scalar leaves of a Keras step's outputs over all replicas in one collective."""
        leaves = tf.nest.flatten(outputs)
        local = [_replica_values(v) for v in leaves]  # with one replica per worker, run() gives plain tensors
        picked = [i for i, v in enumerate(local) if v is not None
                  and all(t.shape.rank == 0 and t.dtype.is_floating for t in v)]
        replicas = {len(local[i]) for i in picked}
        if len(picked) < 2 or len(replicas) != 1:
            return outputs
        per_replica = [tf.stack([tf.cast(local[i][r], tf.float32) for i in picked]) for r in range(replicas.pop())]
        value = per_replica[0] if len(per_replica) == 1 else _values.PerReplica(tuple(per_replica))
        means = tf.unstack(super().reduce(tf.distribute.ReduceOp.MEAN, value, None))
        self._tfscale_reduced.clear()
        for i, mean in zip(picked, means):
            leaves[i] = tf.cast(mean, local[i][0].dtype)
            self._tfscale_reduced[id(leaves[i])] = leaves[i]
        return tf.nest.pack_sequence_as(outputs, leaves)

    def reduce(self, reduce_op, value, axis):
        if id(value) in self._tfscale_reduced and self._tfscale_reduced[id(value)] is value:
            return value  # a log already averaged over all replicas by run()
        if not self._tfscale_fix_reduce:
            return super().reduce(reduce_op, value, axis)
        # keras-team/keras#20585 (1): Keras passes a nested batch; reduce leaf by leaf.
        if not _is_leaf(value):
            return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
        # keras-team/keras#20585 (2): Keras reduces scalar logs with axis=0.
        if axis is not None and _rank(self, value) == 0:
            axis = None
        return super().reduce(reduce_op, value, axis)


def _is_keras_step(fn) -> bool:
    """True for a Keras model's train_step or test_step (whose outputs Keras averages as logs)."""
    return getattr(fn, "__name__", None) in ("train_step", "test_step") and isinstance(
        getattr(fn, "__self__", None), keras.Model)


def _after_data(fn):
    """`fn` with every op it creates waiting for the data it is given (module docstring, 6).

    Keras calls a step on `iterator.get_next()`; when the input has ended, that
    op fails with OutOfRange, but in a traced step the ops that do not consume
    the batch (the optimizer's `iterations.assign_add(1)`, a seed generator's
    state) can run before it fails: one update too many per epoch. With a
    control dependency on the batch they never start on a step without data.
    """

    @functools.wraps(fn)
    def step(*args, **kwargs):
        batch = [t for t in tf.nest.flatten((args, kwargs), expand_composites=True) if isinstance(t, tf.Tensor)]
        with tf.control_dependencies(batch):
            return fn(*args, **kwargs)

    return step


def _replica_values(value) -> tuple | None:
    """This worker's per-replica values of a step output (a plain tensor is one replica's); else None."""
    if isinstance(value, tf.distribute.DistributedValues):
        return tuple(value.values)
    return (value,) if isinstance(value, tf.Tensor) else None


def _is_leaf(value) -> bool:
    return isinstance(value, (tf.Tensor, tf.Variable, tf.distribute.DistributedValues)) or not tf.nest.is_nested(value)


def _rank(strategy, value) -> int | None:
    if isinstance(value, tf.distribute.DistributedValues):
        value = strategy.experimental_local_results(value)[0]
    shape = getattr(value, "shape", None)
    return None if shape is None else shape.rank
