"""Named strategies per engine (one module each; JAX ones in strategy/jax/), the registry, auto's choice,
the engines behind `Scale` (the Keras 3 compatibility layer they build on is in tfscale/compat/keras/)."""

from tfscale.strategy.auto import choose
from tfscale.strategy.registry import StrategySpec, available, get, names, register

__all__ = ["StrategySpec", "available", "choose", "get", "names", "register"]
