"""`Scale`: the one object users hold. A thin facade over cluster/, strategy/, data/ and train/."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import tensorflow as tf

from tfscale import config as config_lib
from tfscale.cluster import Topology, detect
from tfscale.cluster.devices import configure_threads
from tfscale.strategy import choose, registry

log = logging.getLogger("tfscale")


class Scale:
    """Chooses, builds and holds a tf.distribute strategy for the environment found.

    Args:
        strategy: a registered strategy name, or "auto" (`tfscale info` lists them).
        replicas: replicas per worker; on a CPU-only machine, that many logical CPU devices.
        config: a full `StrategyConfig` (instead of `strategy`, `replicas` and options).
        topology: a detected `Topology` to use instead of detecting one.
        **options: other `StrategyConfig` fields, e.g. communication="ring", collective_timeout=60.

    Example:
        scale = tfscale.Scale("mirrored", replicas=2)
        with scale.scope():
            model = build_model()
    """

    def __init__(self, strategy: str = "auto", *, replicas: int | None = None,
                 config: config_lib.StrategyConfig | None = None, topology: Topology | None = None, **options: Any):
        if config is None:
            config = config_lib.with_options(config_lib.StrategyConfig, None,
                                             {"name": strategy, "replicas": replicas, **options},
                                             what="Scale option", where="tfscale.Scale(...)")
        elif options or replicas is not None:
            config = dataclasses.replace(config, **options, **({"replicas": replicas} if replicas else {}))
        # Unset replicas / collective_timeout come from `tfscale launch` (TFSCALE_REPLICAS_PER_WORKER, ...).
        config = config_lib.with_launch_environment(config)
        self.config = config
        # Global batch sizes given to distribute(), so scale.optimizer() can scale the learning rate to them.
        self.distributed_batch_sizes: set[int] = set()
        configure_threads(config.intra_op_threads, config.inter_op_threads)
        self.topology = topology or detect(config.cluster, tpu=config.tpu)
        if config.name == "auto":
            self.name, self.reason = choose(self.topology, config)
        else:
            self.name, self.reason = config.name, "asked for by name"
        spec = registry.get(self.name)
        # Worker and ps tasks of a parameter-server cluster only serve; the chief builds the strategy.
        self._strategy = None if self.is_server else spec.build(self.topology, config)
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
    def strategy(self) -> tf.distribute.Strategy:
        if self._strategy is None:
            from tfscale.errors import ClusterError

            raise ClusterError(f"this process is a {self.topology.task_type} task of a parameter-server cluster "
                               "and holds no strategy", where="Scale.strategy",
                               fix="call scale.serve() when scale.is_server, and train on the chief")
        return self._strategy

    @property
    def is_server(self) -> bool:
        """True on worker and ps tasks of a parameter-server cluster: they call `serve()` and wait."""
        return self.name == "parameter_server" and self.topology.task_type in ("worker", "ps")

    def scope(self):
        """The strategy's scope: build and compile the model inside it."""
        return self.strategy.scope()

    @property
    def num_replicas(self) -> int:
        """Replicas in sync across all workers."""
        return 0 if self.is_server else self._strategy.num_replicas_in_sync

    @property
    def num_workers(self) -> int:
        return self.topology.num_workers

    @property
    def is_chief(self) -> bool:
        """True on the one process that writes checkpoints, logs and exports."""
        return self.topology.is_chief

    @property
    def rank(self) -> int:
        return self.topology.rank

    def __repr__(self) -> str:
        if self.is_server:
            return (f"Scale(parameter_server: {self.topology.task_type} {self.topology.task_index}, serving; "
                    f"cluster from {self.topology.manager})")
        per_worker = self.num_replicas // max(1, self.num_workers) if self.name != "parameter_server" else "?"
        role = "chief" if self.is_chief else f"{self.topology.task_type} {self.topology.task_index}"
        return (f"Scale({self.name}: {self.num_replicas} replica(s) = {self.num_workers} worker(s) x "
                f"{per_worker} {self.topology.accelerator}; {role}; cluster from {self.topology.manager})")

    def describe(self) -> dict[str, Any]:
        """What was chosen and why, as plain data (for `tfscale info --json`)."""
        return {"strategy": self.name, "reason": self.reason, "num_replicas": self.num_replicas,
                "num_workers": self.num_workers, "is_chief": self.is_chief, "topology": self.topology.to_dict(),
                "config": dataclasses.asdict(self.config)}

    # ------------------------------------------------------------------ delegates

    def batch_sizes(self, global_batch_size: int | None = None,
                    per_replica_batch_size: int | None = None) -> tuple[int, int]:
        """(global, per-replica) batch sizes from either one; an error when it does not divide."""
        from tfscale.data.sharding import batch_sizes

        return batch_sizes(self.num_replicas, global_batch_size, per_replica_batch_size)

    def distribute(self, data, *, global_batch_size: int | None = None, per_replica_batch_size: int | None = None,
                   drop_remainder: bool = True):
        """Per-replica batches of `data` (unbatched examples), sharded by worker, prefetched.

        Example:
            train = scale.distribute(tf.data.Dataset.from_tensor_slices((x, y)), global_batch_size=256)
            model.fit(train, epochs=5)
        """
        from tfscale.data.sharding import distribute

        global_batch, per_replica = self.batch_sizes(global_batch_size, per_replica_batch_size)
        if drop_remainder:  # training input: scale.optimizer() scales the learning rate to it (tfscale.train)
            self.distributed_batch_sizes.add(global_batch)
        return distribute(self.strategy, data, global_batch_size=global_batch,
                          per_replica_batch_size=per_replica, drop_remainder=drop_remainder)

    def optimizer(self, name="adam", **options: Any):
        """A Keras optimizer whose learning rate is scaled to the global batch (`tfscale.train.build_optimizer`)."""
        from tfscale.train.optimizer import build_optimizer

        return build_optimizer(self, name, **options)

    def callbacks(self, **options: Any) -> list:
        """Checkpoints, TensorBoard, throughput, NaN guard, chief-only progress (`tfscale.train.build_callbacks`)."""
        from tfscale.train.callbacks import build_callbacks

        return build_callbacks(self, **options)

    def serve(self, *, join: bool = True):
        """On a worker or ps task of a parameter-server cluster: run this task's server."""
        from tfscale.strategy.parameter_server import serve

        return serve(self.topology, join=join)
