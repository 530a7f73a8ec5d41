"""`Scale`: the one object users hold. A thin facade over an engine (strategy/), data/ and the training
blocks beside it (optimizer.py, callbacks.py).

The engine follows Keras' backend: tf.distribute on TensorFlow, keras.distribution
on JAX (strategy/engine.py). Nothing here imports TensorFlow or JAX: the blocks, which
load Keras, are imported when `optimizer()` or `callbacks()` is called. `input()` is the
one way from tfscale's upper layers to the data layer's placement (`tfscale.fit`,
`tfscale train` and tuning come through it).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from tfscale import config as config_lib
from tfscale.data.batching import batch_sizes
from tfscale.data.sharding import placement
from tfscale.data.sharding.placement import DistributedInput
from tfscale.errors import ConfigError
from tfscale.strategy import backend as backend_lib
from tfscale.strategy import registry
from tfscale.strategy.engine import decide, engine_class

log = logging.getLogger("tfscale")


class Scale:
    """Chooses, builds and holds the distribution for the environment found, on TensorFlow or JAX.

    Args:
        strategy: a registered strategy name, or "auto" (`tfscale info` lists them per backend).
        replicas: replicas per worker; on a CPU-only machine, that many logical CPU devices
            (TensorFlow) or host devices (JAX).
        config: a full `StrategyConfig` (instead of `strategy`, `replicas` and options).
        topology: a detected `Topology` to use instead of detecting one.
        **options: other `StrategyConfig` fields, e.g. communication="ring" (TensorFlow),
            mesh=(1, 2) and layout="auto" (JAX), collective_timeout=60 (both).

    Raises:
        ConfigError: an unknown strategy or option, a strategy or option of the other engine,
            or a backend that is not installed.

    Example:
        scale = tfscale.Scale("mirrored", replicas=2)       # TensorFlow
        scale = tfscale.Scale("model_parallel", mesh=(1, 2), layout="auto")   # JAX
        with scale.scope():
            model = build_model()
    """

    def __init__(self, strategy: str = "auto", *, replicas: int | None = None,
                 config: config_lib.StrategyConfig | None = None, topology=None, **options: Any):
        if config is None:
            config = config_lib.with_options(config_lib.StrategyConfig, None,
                                             {"name": strategy, "replicas": replicas, **options},
                                             what="Scale option", where="tfscale.Scale(...)")
        else:
            config = config_lib.with_options(config_lib.StrategyConfig, config,
                                             {**options, **({"replicas": replicas} if replicas is not None else {})},
                                             what="Scale option", where="tfscale.Scale(config=...)")
        # Unset replicas / collective_timeout come from `tfscale launch` (TFSCALE_REPLICAS_PER_WORKER, ...).
        config = config_lib.with_launch_environment(config)
        self.backend = backend_lib.resolve(registry.only_backend(config.name), strategy=config.name,
                                           listing=registry.names)
        self.config = config_lib.engine_options(config, self.backend)
        # The global batches of the training input given to distribute(): read only by training_batch_size().
        self._training_batches: set[int] = set()
        self.topology = engine_class(self.backend).start(self.config, topology)
        decision = decide(self.config, self.topology, self.backend)
        self.name, self.reason = decision.name, decision.reason
        self.engine = decision.build(self.topology, self.config)
        log.info("%r (%s)", self, self.reason)

    @classmethod
    def auto(cls, **options: Any) -> "Scale":
        """The strategy the environment calls for (TPU, cluster, GPUs, CPU replicas)."""
        return cls("auto", **options)

    @classmethod
    def from_preset(cls, path: str | os.PathLike, *, overrides: tuple[str, ...] = ()) -> "Scale":
        """A Scale from a TOML preset (strategies/*.toml), with optional ``key=value`` overrides."""
        return cls(config=config_lib.load_strategy_preset(path, overrides))

    # ------------------------------------------------------------------ what it holds

    @property
    def strategy(self):
        """The `tf.distribute.Strategy` (TensorFlow engine only)."""
        if self.backend != backend_lib.TENSORFLOW:
            raise ConfigError("scale.strategy is the tf.distribute strategy, and this Scale trains on JAX",
                              where="Scale.strategy", fix="use scale.scope() and scale.distribution (the Keras "
                                                          "distribution) on JAX")
        return self.engine.tf_strategy

    @property
    def distribution(self):
        """The `keras.distribution.Distribution` (JAX engine only; None for one_device)."""
        if self.backend != backend_lib.JAX:
            raise ConfigError("scale.distribution is the Keras distribution of the JAX engine, and this Scale "
                              "trains on TensorFlow", where="Scale.distribution", fix="use scale.strategy")
        return self.engine.keras_distribution

    @property
    def is_server(self) -> bool:
        """True on worker and ps tasks of a parameter-server cluster: they call `serve()` and wait."""
        return self.engine.is_server

    def scope(self):
        """Build and compile the model inside it (on JAX, closing it checks a model-parallel layout)."""
        return self.engine.scope()

    @property
    def num_replicas(self) -> int:
        """Data-parallel replicas in sync across all workers: what a global batch is split into."""
        return self.engine.num_replicas

    @property
    def num_workers(self) -> int:
        return self.topology.num_workers

    @property
    def is_chief(self) -> bool:
        """True on the one process that writes checkpoints, logs and exports."""
        return self.engine.is_chief

    @property
    def rank(self) -> int:
        return self.engine.rank

    def __repr__(self) -> str:
        if self.is_server:
            return (f"Scale(parameter_server: {self.topology.task_type} {self.topology.task_index}, serving; "
                    f"cluster from {self.topology.manager})")
        role = "chief" if self.is_chief else f"{self.topology.task_type} {self.topology.task_index}"
        return f"Scale({self.name}: {self.engine.summary}; {role}; cluster from {self.topology.manager}; {self.backend})"

    def describe(self, model=None) -> dict[str, Any]:
        """What was chosen and why, as plain data (for `tfscale info --json`).

        With a model built under `scope()`: each variable's sharding and bytes per device
        (on JAX read from its arrays), and the largest device total.
        """
        config = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "layout"}
        config["layout"] = self.config.layout if isinstance(self.config.layout, (str, dict, type(None))) else \
            type(self.config.layout).__name__
        return {"backend": self.backend, "strategy": self.name, "reason": self.reason,
                "num_replicas": self.num_replicas, "num_workers": self.num_workers, "is_chief": self.is_chief,
                "topology": self.topology.to_dict(), "config": config, "engine": self.engine.describe(model)}

    # ------------------------------------------------------------------ delegates

    def batch_sizes(self, global_batch_size: int | None = None,
                    per_replica_batch_size: int | None = None) -> tuple[int, int]:
        """(global, per-replica) batch sizes from either one; an error when it does not divide."""
        return batch_sizes(self.num_replicas, global_batch_size, per_replica_batch_size)

    def input(self, data, *, global_batch_size: int | None = None, per_replica_batch_size: int | None = None,
              drop_remainder: bool = True, wrap=None, sharded: bool = False,
              where: str = "Scale.distribute(data)") -> DistributedInput:
        """`distribute`, with what was decided: the batches (`.dataset`, for `model.fit`), the global and
        per-replica batch, the steps per epoch where known, and whether every worker has equal steps.

        Give it to `optimizer(..., training_input=...)` and `callbacks(..., training_input=...)` to scale the
        learning rate and count examples by it explicitly (`tfscale.fit` does): unlike `distribute`, it leaves
        nothing behind in the Scale for them to find. Arguments as for `distribute`; `where` names `data` in
        errors (e.g. "train_data").

        Example:
            train = scale.input(dataset, global_batch_size=256)
            with scale.scope():
                model.compile(optimizer=scale.optimizer("adam", base_lr=1e-3, base_batch_size=64,
                                                        training_input=train), loss=...)
            model.fit(train.dataset, epochs=5, callbacks=scale.callbacks(training_input=train))
        """
        global_batch, per_replica = self.batch_sizes(global_batch_size, per_replica_batch_size)
        return placement.place_input(self.engine, data, global_batch_size=global_batch,
                                     per_replica_batch_size=per_replica, drop_remainder=drop_remainder, wrap=wrap,
                                     where=where, sharded=sharded)

    def distribute(self, data, *, global_batch_size: int | None = None, per_replica_batch_size: int | None = None,
                   drop_remainder: bool = True, wrap=None, sharded: bool = False):
        """Batches of `data` (unbatched examples) for this engine, sharded by worker, prefetched: what
        `model.fit` takes (`input(...).dataset`).

        `data` is a tf.data.Dataset, a tfscale.data pipeline or NumPy arrays (x, y); on JAX also a
        generator function. Every worker gets the same number of steps. `wrap` is applied to each
        tf.data input pipeline (e.g. `InputTimer.wrap`). With `drop_remainder` (training input), its
        global batch is what `optimizer()` scales the learning rate to when not told
        (`training_batch_size`).

        `sharded=True`: `data` is already this worker's own shard (an engine dealt it, e.g. Ray Data's
        `get_dataset_shard`): tfscale neither auto-shards nor slices it, each worker batches its own
        examples (`global_batch_size // workers` per step), and shards may end at different steps
        (TensorFlow engine; the JAX engine needs equal steps).

        Example:
            train = scale.distribute(tf.data.Dataset.from_tensor_slices((x, y)), global_batch_size=256)
            model.fit(train, epochs=5)
        """
        placed = self.input(data, global_batch_size=global_batch_size, per_replica_batch_size=per_replica_batch_size,
                            drop_remainder=drop_remainder, wrap=wrap, sharded=sharded)
        if drop_remainder:  # training input: what optimizer() and callbacks() read when not given a batch
            self._training_batches.add(placed.global_batch_size)
        return placed.dataset

    def training_batch_size(self, training_input: DistributedInput | None = None, *,
                            where: str = "Scale.training_batch_size()") -> int | None:
        """The global batch training runs with: `training_input`'s, else the one of the training input
        (drop_remainder=True) given to `distribute` so far; None where none was. What `optimizer()` and
        `callbacks()` read when not given a global batch.

        Raises:
            ConfigError: no `training_input`, and training input of several global batch sizes was placed.
        """
        if training_input is not None:
            return training_input.global_batch_size
        sizes = sorted(self._training_batches)
        if len(sizes) > 1:
            raise ConfigError(f"scale.distribute was given training input with several global batch sizes {sizes}",
                              where=where, fix=f"give {where} the training batch: global_batch_size=..., or "
                                               "training_input=scale.input(...)")
        return sizes[0] if sizes else None

    def evaluate(self, model, data, *, global_batch_size: int | None = None,
                 per_replica_batch_size: int | None = None, verbose="auto") -> dict[str, float]:
        """`model`'s metrics on every example of `data` (unbatched, as for `distribute`), each counted once, on
        every engine: on JAX with several replicas the last incomplete global batch is evaluated on every replica
        and counted once (`evaluation.py`), where `model.evaluate(scale.distribute(..., drop_remainder=False))`
        leaves it out. Every process calls it together and gets the same figures.

        Example:
            metrics = scale.evaluate(model, (x_test, y_test), global_batch_size=64)   # {"loss": ..., ...}
        """
        from tfscale.scale.evaluation import evaluate

        global_batch, per_replica = self.batch_sizes(global_batch_size, per_replica_batch_size)
        return evaluate(self, model, data, global_batch_size=global_batch, per_replica_batch_size=per_replica,
                        verbose=verbose)

    def optimizer(self, name="adam", **options: Any):
        """A Keras optimizer whose learning rate is scaled to the global batch (`optimizer.build_optimizer`)."""
        from tfscale.scale.optimizer import build_optimizer

        return build_optimizer(self, name, **options)

    def callbacks(self, **options: Any) -> list:
        """Checkpoints, TensorBoard, throughput, NaN guard, chief-only progress (`callbacks.build_callbacks`)."""
        from tfscale.scale.callbacks import build_callbacks

        return build_callbacks(self, **options)

    def barrier(self, name: str = "tfscale_barrier", timeout: float = 3600.0) -> None:
        """Every worker waits here until all have arrived; e.g. before exiting, after the chief's export.

        Example:
            if scale.is_chief:
                ts.export.tflite(model, "m.tflite")
            scale.barrier("exported")      # the others do not exit while the chief still works
        """
        self.engine.barrier(name, timeout)

    def serve(self, *, join: bool = True):
        """On a worker or ps task of a parameter-server cluster: run this task's server."""
        from tfscale.strategy.parameter_server import serve

        return serve(self.topology, join=join)
