"""The engine seam: what `Scale` and the layers it delegates to need from a distribution, on either backend.

`Scale` holds an `Engine`. The TensorFlow engine (tf_engine.py) wraps a
`tf.distribute.Strategy`; the JAX engine (jax/engine.py) a
`keras.distribution.Distribution`. `Scale`, `train/`, `tuning/`, export and input
read only this interface, and every member they read is declared here (input
placement reads `tf_strategy`, `input_shards` and `num_replicas`); only the
strategies themselves look at which engine it is.

Building one is three steps, so that the choice can be shown and tested without
building anything:

1. `engine_class(backend).start(config) -> Topology`: what must happen before
   the framework initializes its devices (TensorFlow's thread pools; JAX's host
   device count and `jax.distributed.initialize`), then the devices found;
2. `decide(config, topology, backend) -> Decision`: pure, the strategy and why
   (`tfscale info` stops here);
3. `Decision.build(topology, config) -> Engine`: the strategy's own effects
   (logical CPU devices, the global Keras distribution) and framework objects.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import importlib
from typing import Any

from tfscale.errors import ConfigError
from tfscale.strategy import registry
from tfscale.strategy.auto import choose
from tfscale.strategy.backend import JAX, TENSORFLOW

# Each engine's module loads with its framework, only when a Scale is built on it.
_ENGINES = {TENSORFLOW: ("tfscale.strategy.tf_engine", "TensorFlowEngine"),
            JAX: ("tfscale.strategy.jax.engine", "JaxEngine")}


@dataclasses.dataclass(frozen=True)
class Decision:
    """The strategy chosen for this process, before anything is built.

    Attributes:
        backend: the engine: "tensorflow" or "jax".
        name: the registered strategy name.
        reason: why (auto's reason, or "asked for by name").
    """

    backend: str
    name: str
    reason: str

    def build(self, topology, config) -> "Engine":
        """The engine for this decision: applies its process-wide effects and builds the framework objects."""
        return engine_class(self.backend).build(self.name, registry.get(self.name, self.backend), topology, config)


def engine_class(backend: str) -> type["Engine"]:
    """The `Engine` subclass of `backend` (its module loads its framework)."""
    module, cls = _ENGINES[backend]
    return getattr(importlib.import_module(module), cls)


def decide(config, topology, backend: str) -> Decision:
    """The strategy for `config` on `topology` and `backend`; pure (nothing is built or set).

    Raises:
        ConfigError: a strategy name this backend does not have (the message lists those it has).
    """
    if config.name == "auto":
        name, reason = choose(topology, config, backend)
    else:
        name, reason = config.name, "asked for by name"
    spec = registry.get(name, backend)  # an unknown or other-engine name fails here, before any effect
    if spec.one_process and topology.num_workers > 1:
        spanning = [n for n in registry.names(backend)
                    if n != "auto" and registry.get(n, backend).has(registry.Capability.LOCKSTEP)]
        raise ConfigError(f"strategy {name!r} trains within one process, and this is worker {topology.rank} of a "
                          f"{topology.num_workers}-worker cluster ({topology.manager}): each worker would train "
                          "alone, on its own copy of the model", where=f"strategy {name!r}",
                          fix=f"use 'auto' (it picks {spanning[0]!r} here) or one of {', '.join(map(repr, spanning))}; "
                              "or start one process without the launcher")
    return Decision(backend, name, reason)


class Engine(abc.ABC):
    """One distribution of one process: scope, replicas, rank, input placement, description.

    Attributes:
        backend: "tensorflow" or "jax".
        name: the strategy's registered name.
        topology: the cluster this process belongs to (with the devices the engine found).
    """

    backend: str

    @classmethod
    @abc.abstractmethod
    def start(cls, config, topology=None):
        """Step 1: the effects that precede any device query, then the Topology with the devices found.

        Args:
            config: the checked `StrategyConfig`.
            topology: a Topology to use instead of detecting one (its devices are kept).
        """

    @classmethod
    @abc.abstractmethod
    def build(cls, name: str, spec, topology, config) -> "Engine":
        """Step 3: the engine of strategy `name` (its registry `spec`) on `topology`."""

    def __init__(self, name: str, topology):
        self.name = name
        self.topology = topology

    def has(self, capability: "registry.Capability") -> bool:
        """Whether this engine's strategy declares `capability` (a strategy's behaviour follows what it
        declares in the registry, never its name)."""
        return registry.get(self.name, self.backend).has(capability)

    @abc.abstractmethod
    def scope(self):
        """The context in which to build and compile the model."""

    @property
    @abc.abstractmethod
    def num_replicas(self) -> int:
        """Data-parallel replicas in sync over all processes: what the global batch is split into."""

    @property
    @abc.abstractmethod
    def num_devices(self) -> int:
        """Devices this process computes on."""

    @property
    def num_processes(self) -> int:
        return self.topology.num_workers

    @property
    def rank(self) -> int:
        return self.topology.rank

    @property
    def is_chief(self) -> bool:
        """The one process that writes checkpoints, logs and exports."""
        return self.topology.is_chief

    @property
    def accelerator(self) -> str:
        """"TPU", "GPU" or "CPU"."""
        return self.topology.accelerator

    @property
    def summary(self) -> str:
        """How the replicas are laid out, for `repr(scale)`, e.g. "2 replica(s) = 2 worker(s) x 1 CPU"."""
        per_worker = self.num_replicas // max(1, self.num_processes)
        return f"{self.num_replicas} replica(s) = {self.num_processes} worker(s) x {per_worker} {self.accelerator}"

    def float16_capable(self) -> bool:
        """The accelerators run float16 fast (tensor cores), for precision "auto"."""
        return False

    @property
    def is_server(self) -> bool:
        """A task that serves variables and functions and holds no strategy (`Capability.SERVERS`: the worker
        and ps tasks of a parameter-server cluster call `Scale.serve()`); it trains nothing."""
        return False

    @property
    def tf_strategy(self):
        """The `tf.distribute.Strategy` that places input batches and that APIs taking one use (keras-tuner);
        None on JAX, whose Keras distribution is process-wide and whose input is split by `input_shards`."""
        return None

    @property
    def keras_distribution(self):
        """The `keras.distribution.Distribution` set for the process (JAX); None on TensorFlow and on one device."""
        return None

    @property
    def input_shards(self) -> tuple[int, int]:
        """(input streams, this process's stream): how many parts each global batch is read in, over the
        cluster, and which one this process reads (one per process unless the engine says otherwise)."""
        return self.num_processes, self.rank

    def barrier(self, name: str, timeout: float = 3600.0) -> None:
        """Every process of the cluster waits here until all have arrived (nothing to wait for in one process)."""

    def exchange(self, key: str, value: str, timeout: float = 600.0) -> list[str] | None:
        """Every process's `value` for `key` (non-empty strings), by rank; every process calls it together.

        [value] in one process; None where this engine has no way to exchange (the caller skips what needed it).
        """
        return [value] if self.num_processes < 2 else None

    def forget(self, key: str) -> None:
        """Drops this process's value of an `exchange` key once every process has read it (frees the store)."""

    def host_weights(self, model):
        """A context in which every weight of `model` (and its optimizer) can be read on this host, as
        saving needs; entered by every process together (it may gather across them)."""
        return contextlib.nullcontext()

    def jit_compile(self, wanted):
        """The `jit_compile` to compile with on this engine, for the one asked for ("auto", True, False)."""
        return wanted

    def prepare_optimizer(self, optimizer):
        """The optimizer, with what this engine needs to train it correctly (returned)."""
        return optimizer

    @abc.abstractmethod
    def describe(self, model=None) -> dict[str, Any]:
        """What the engine runs on, as plain data; with a model, each variable's placement and bytes per device."""
