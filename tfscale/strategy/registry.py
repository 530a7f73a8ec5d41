"""The registry of named strategies, per engine: (name, backend) -> (description, builder).

A TensorFlow builder takes the detected `Topology` and the `StrategyConfig` and
returns a `tf.distribute.Strategy`; a JAX builder returns a
`keras.distribution.Distribution` (or None: no distribution). Built-in
strategies live one module each in this package (JAX ones in strategy/jax/)
and register themselves when the registry is first used; their modules import
their framework only inside the builder, so every strategy can be listed
anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib
from collections.abc import Callable

from tfscale.config.strategy import preset_names
from tfscale.errors import ConfigError
from tfscale.vocabulary import BACKENDS, JAX, TENSORFLOW

_BUILTINS = ("default", "one_device", "mirrored", "multi_worker", "tpu", "parameter_server",
             "jax.data_parallel", "jax.model_parallel", "jax.one_device", "jax.tpu")
_REGISTRY: dict[tuple[str, str], "StrategySpec"] = {}
_loaded = False
_TITLES = {TENSORFLOW: "TensorFlow (tf.distribute)", JAX: "JAX (keras.distribution)"}


class Capability(enum.Enum):
    """What a strategy declares about itself; engines and callers act on these, never on a strategy's name."""

    ONE_PROCESS = "one_process"
    """It trains within one process (its devices only): under a launch of several workers each would train
    alone, so `decide` refuses it there."""
    LOCKSTEP = "lockstep"
    """Every worker process runs the same program in step: they meet at exit (the exit barrier) and share keys
    (`Engine.exchange`: the shared-checkpoint check, agreeing on a preemption step). The strategies named
    when a one-process strategy is refused under a launch."""
    SERVERS = "servers"
    """The cluster's worker and ps tasks serve variables and functions (`Scale.serve()`) and hold no strategy;
    only the chief trains."""
    CLUSTER_RUNTIME = "cluster_runtime"
    """It runs on TensorFlow's cluster runtime even in one process (keras-tuner trains its trials under no
    such strategy: keras-team/keras-tuner#531, #910)."""
    COMPILES_ITSELF = "compiles_itself"
    """It compiles for its own devices (TPUStrategy): `jit_compile` is left as asked."""


@dataclasses.dataclass(frozen=True)
class StrategySpec:
    """A registered strategy.

    Attributes:
        capabilities: what it declares (`Capability`).
    """

    name: str
    description: str
    build: Callable | None
    backend: str = TENSORFLOW
    capabilities: frozenset = frozenset()

    @property
    def one_process(self) -> bool:
        return Capability.ONE_PROCESS in self.capabilities

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities


def register(name: str, description: str, *, backend: str = TENSORFLOW, capabilities=(), one_process: bool = False,
             override: bool = False):
    """Decorator: registers `fn(topology, config)` as strategy `name` of `backend`.

    `capabilities` declares what the strategy needs and does (`Capability`): a strategy whose workers run
    in step declares `Capability.LOCKSTEP` and gets the exit barrier and the key-value exchange as
    `multi_worker` does. `one_process=True` is `Capability.ONE_PROCESS`. A name that is taken is refused
    unless `override=True` (the same function registered again, as a module imported twice does, is fine).

    Raises:
        ConfigError: `name` is "auto" or already names another strategy of `backend`.

    Example:
        @register("my_strategy", "one line on what it does", capabilities={Capability.LOCKSTEP})
        def build(topology, config):
            return tf.distribute.MultiWorkerMirroredStrategy()
    """
    declared = frozenset(Capability(c) for c in capabilities) | ({Capability.ONE_PROCESS} if one_process else set())
    _load_builtins()  # a user's strategy is checked against the built-in names too

    def decorate(fn):
        taken = _REGISTRY.get((backend, name))
        same = taken is not None and (getattr(taken.build, "__module__", None), getattr(
            taken.build, "__qualname__", None)) == (getattr(fn, "__module__", None), getattr(fn, "__qualname__", None))
        if name == "auto" or (taken is not None and not same and not override):
            raise ConfigError(f"strategy {name!r} of the {backend} engine exists already"
                              + (f" ({taken.description})" if taken is not None else " (it picks one for the machine)"),
                              where=f"register({name!r}, backend={backend!r})",
                              fix="choose another name" + ("" if name == "auto" else ", or pass override=True to replace it"))
        _REGISTRY[(backend, name)] = StrategySpec(name, description, fn, backend, declared)
        return fn

    return decorate


def _load_builtins() -> None:
    global _loaded
    if _loaded:  # also while loading: the built-ins' own register() calls come back here
        return
    _loaded = True
    try:
        for module in _BUILTINS:
            importlib.import_module(f"tfscale.strategy.{module}")
    except BaseException:
        _loaded = False
        raise


def names(backend: str) -> list[str]:
    """The strategies `backend` has, 'auto' first."""
    _load_builtins()
    return ["auto"] + sorted(name for b, name in _REGISTRY if b == backend)


def only_backend(name: str) -> str | None:
    """The one backend that has strategy `name` (None: both, neither, or "auto")."""
    _load_builtins()
    having = [b for b in BACKENDS if (b, name) in _REGISTRY]
    return having[0] if len(having) == 1 else None


def get(name: str, backend: str = TENSORFLOW) -> StrategySpec:
    """Returns the strategy registered as `name` for `backend`.

    Raises:
        ConfigError: the name is unknown, or belongs to the other engine only; the message
            lists the strategies this backend has.
    """
    _load_builtins()
    if name == "auto":
        raise ConfigError("'auto' is resolved by tfscale.strategy.choose, not looked up", where="registry.get",
                          fix="call tfscale.strategy.choose(topology, config, backend)")
    if (backend, name) in _REGISTRY:
        return _REGISTRY[(backend, name)]
    here = ", ".join(names(backend))
    others = [b for b in BACKENDS if b != backend and (b, name) in _REGISTRY]
    if others:
        raise ConfigError(f"{name!r} is a {_TITLES[others[0]]} strategy, but this process trains on "
                          f"{_TITLES[backend]}", where="strategy name",
                          fix=f"use one of the {backend} strategies: {here}; or run on KERAS_BACKEND={others[0]} "
                              f"(`tfscale launch --backend {others[0]}`)")
    close = difflib.get_close_matches(name, [n for b, n in _REGISTRY if b == backend], n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    if name in preset_names():  # a run file's strategy = "laptop": a name; the preset is "laptop.toml"
        hint = f'{name!r} is a strategy preset shipped with tfscale: give it as "{name}.toml" (Scale.from_preset). '
    raise ConfigError(f"unknown strategy {name!r}", where="strategy name",
                      fix=f"{hint}known {backend} strategies: {here}")


def available(backend: str | None = None) -> list[StrategySpec]:
    """Every registered strategy of `backend` (all backends: None), with 'auto' first for each."""
    _load_builtins()
    from tfscale.strategy.auto import AUTO_DESCRIPTIONS

    specs = []
    for b in ([backend] if backend else BACKENDS):
        specs.append(StrategySpec("auto", AUTO_DESCRIPTIONS[b], None, b))
        specs += [_REGISTRY[(b, n)] for n in names(b)[1:]]
    return specs
