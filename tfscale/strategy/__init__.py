"""Named strategies (one module each), their registry, and the Keras 3 compatibility layer."""

from tfscale.strategy.auto import choose
from tfscale.strategy.registry import StrategySpec, available, get, register

__all__ = ["StrategySpec", "available", "choose", "get", "register"]
