"""The JAX engine: a `keras.distribution.Distribution` behind the `Engine` interface.

Keras' JAX trainer reads the process-wide distribution in `fit` (the
distribution's own `scope()` only lasts while the model is built), so the
engine sets it for the process when it is built: ``with scale.scope():`` builds
the model, and ``model.fit`` after it trains under the same distribution, as on
TensorFlow. Closing the scope checks a model-parallel layout (layout.py).
"""

from __future__ import annotations

import contextlib
import math
from collections import defaultdict
from typing import Any

import keras

from tfscale.cluster import detect
from tfscale.compat import keras as keras_compat
from tfscale.strategy.backend import JAX
from tfscale.strategy.engine import Engine
from tfscale.strategy.jax import runtime

MIN_FLOAT16_CAPABILITY = (7, 0)


class JaxEngine(Engine):
    """A Keras distribution on JAX (None: one device, Keras' default placement).

    Attributes:
        distribution: the `keras.distribution.Distribution`, set for the whole process.
    """

    backend = JAX

    def __init__(self, name: str, distribution, topology):
        super().__init__(name, topology)
        self.distribution = distribution

    @classmethod
    def start(cls, config, topology=None):
        """Host devices and the distributed runtime (before JAX starts its devices), then JAX's devices."""
        topology = topology or detect(config.cluster, tpu=config.tpu, gpus=0)
        runtime.start(topology, config)
        return runtime.probe(topology)

    @classmethod
    def build(cls, name: str, spec, topology, config) -> "JaxEngine":
        distribution = spec.build(topology, config)
        keras.distribution.set_distribution(distribution)
        return cls(name, distribution, topology)

    @contextlib.contextmanager
    def scope(self):
        keras.distribution.set_distribution(self.distribution)  # the same for the process; set again if replaced
        yield
        if hasattr(self.distribution, "check"):  # model_parallel: review the layout of the model just built
            self.distribution.check()

    @property
    def num_replicas(self) -> int:
        return 1 if self.distribution is None else int(self.distribution.num_model_replicas)

    @property
    def devices(self) -> list:
        """This process's devices in the mesh."""
        import jax

        if self.distribution is None:
            return jax.local_devices()[:1]
        names = set(self.distribution.device_mesh.devices.flatten().tolist())
        return [d for d in jax.local_devices() if f"{d.platform}:{d.id}" in names]

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    @property
    def summary(self) -> str:
        return (f"{self.num_replicas} replica(s) over {self.num_processes} worker(s) x {self.num_devices} "
                f"{self.accelerator} device(s)")

    @property
    def keras_distribution(self):
        return self.distribution

    @property
    def input_shards(self) -> tuple[int, int]:
        """(streams, this process's stream): each global batch is split over model replicas or processes."""
        processes = self.num_processes
        if self.distribution is None or processes == 1:
            return 1, 0
        if self.num_replicas >= processes:
            return processes, self.rank
        return self.num_replicas, int(self.distribution.data_shard_id)

    def barrier(self, name: str, timeout: float = 3600.0) -> None:
        """JAX's barrier across processes (a small collective on every device)."""
        if self.num_processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def exchange(self, key: str, value: str, timeout: float = 600.0) -> list[str] | None:
        """Through the key-value store of JAX's distributed runtime (its coordination service), by rank."""
        if self.num_processes < 2:
            return [value]
        client = runtime.key_value_client()
        if client is None:
            return None
        client.key_value_set(f"tfscale/{key}/{self.rank}", value)
        return [client.blocking_key_value_get(f"tfscale/{key}/{rank}", int(timeout * 1000))
                for rank in range(self.num_processes)]

    def forget(self, key: str) -> None:
        client = runtime.key_value_client() if self.num_processes > 1 else None
        if client is not None:
            client.key_value_delete(f"tfscale/{key}/{self.rank}")

    @contextlib.contextmanager
    def host_weights(self, model):
        """Weights sharded over devices of other processes (a model-parallel mesh across hosts) are
        gathered to every process while the context lasts (a collective: every process enters it),
        then put back, so Keras can save them."""
        import jax
        from jax.experimental import multihost_utils

        variables = list(model.weights) + list(getattr(model.optimizer, "variables", None) or [])
        spread = [v for v in variables if isinstance(v.value, jax.Array) and not v.value.is_fully_addressable]
        originals = [keras_compat.held_value(v) for v in spread]
        try:
            for v, value in zip(spread, originals):
                keras_compat.set_held_value(v, multihost_utils.process_allgather(value, tiled=True))
            yield
        finally:
            for v, value in zip(spread, originals):
                keras_compat.set_held_value(v, value)

    def float16_capable(self) -> bool:
        if self.accelerator != "GPU":
            return False
        capabilities = [getattr(d, "compute_capability", None) for d in self.devices]
        return all(c is not None and tuple(int(p) for p in str(c).split(".")[:2]) >= MIN_FLOAT16_CAPABILITY
                   for c in capabilities)

    def describe(self, model=None) -> dict[str, Any]:
        mesh = getattr(self.distribution, "device_mesh", None)
        described: dict[str, Any] = {
            "engine": JAX, "distribution": type(self.distribution).__name__ if self.distribution else None,
            "mesh": None if mesh is None else dict(zip(mesh.axis_names, (int(n) for n in mesh.shape))),
            "devices": [f"{d.platform}:{d.id}" for d in self.devices]}
        if model is not None:
            if hasattr(self.distribution, "check"):
                self.distribution.check()
            described.update(variable_placement(model))
            placer = getattr(self.distribution, "placer", None)
            for row in described["variables"] if placer is not None else ():
                placed = placer.placements.get(row["path"])  # which layout rule placed it ("auto: ...", a pattern)
                row["rule"] = placed.rule if placed is not None else ""
        return described


def _bytes_by_device(value) -> dict[str, int]:
    here: dict[str, int] = defaultdict(int)
    for shard in getattr(value, "addressable_shards", None) or ():
        here[str(shard.device)] += int(shard.data.nbytes)
    return here


def variable_placement(model) -> dict[str, Any]:
    """Each weight's sharding and bytes per device, read from its array's shards; the largest device totals
    of the weights and of the optimizer's state (slots follow their variable's sharding)."""
    rows, per_device = [], defaultdict(int)
    for v in model.weights:
        value = v.value
        here = _bytes_by_device(value)
        for device, size in here.items():
            per_device[device] += size
        spec = getattr(getattr(value, "sharding", None), "spec", None)
        rows.append({"path": v.path, "shape": [int(d) for d in v.shape], "dtype": str(v.dtype),
                     "sharding": "replicated" if spec is None or not any(spec) else str(tuple(spec)),
                     "bytes": int(math.prod(v.shape) * value.dtype.itemsize),
                     "bytes_per_device": max(here.values(), default=0)})
    optimizer = defaultdict(int)
    for v in getattr(getattr(model, "optimizer", None), "variables", None) or ():
        for device, size in _bytes_by_device(v.value).items():
            optimizer[device] += size
    return {"variables": rows, "bytes_per_device": max(per_device.values(), default=0),
            "bytes": sum(r["bytes"] for r in rows), "optimizer_bytes_per_device": max(optimizer.values(), default=0)}
