"""The registry of named strategies: name -> (description, builder).

A builder takes the detected `Topology` and the `StrategyConfig` and returns
a `tf.distribute.Strategy`. Built-in strategies live one module each in this
package and register themselves when it is first used.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable

from tfscale.errors import ConfigError

_BUILTINS = ("default", "one_device", "mirrored", "multi_worker", "tpu", "parameter_server")
_REGISTRY: dict[str, "StrategySpec"] = {}
_loaded = False


@dataclasses.dataclass(frozen=True)
class StrategySpec:
    name: str
    description: str
    build: Callable


def register(name: str, description: str):
    """Decorator: registers `fn(topology, config) -> tf.distribute.Strategy` under `name`.

    Example:
        @register("my_strategy", "one line on what it does")
        def build(topology, config):
            return tf.distribute.MirroredStrategy()
    """

    def decorate(fn):
        _REGISTRY[name] = StrategySpec(name, description, fn)
        return fn

    return decorate


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        for module in _BUILTINS:
            importlib.import_module(f"tfscale.strategy.{module}")
        _loaded = True


def get(name: str) -> StrategySpec:
    """Returns the strategy registered as `name`.

    Raises:
        ConfigError: the name is unknown; the message lists the known ones.
    """
    _load_builtins()
    if name == "auto":
        raise ConfigError("'auto' is resolved by tfscale.strategy.choose, not looked up", where="registry.get",
                          fix="call tfscale.strategy.choose(topology, config)")
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown strategy {name!r}", where="strategy name",
                          fix=f"{hint}known strategies: auto, {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def available() -> list[StrategySpec]:
    """Every registered strategy, with 'auto' first."""
    _load_builtins()
    from tfscale.strategy.auto import AUTO_DESCRIPTION

    return [StrategySpec("auto", AUTO_DESCRIPTION, None)] + [_REGISTRY[k] for k in sorted(_REGISTRY)]
