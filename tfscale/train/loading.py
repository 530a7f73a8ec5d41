"""Building the user's model: a model function (or its ``"module:function"`` name, `tfscale.config.functions`),
checked to give a Keras model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras

from tfscale.config.functions import load_function
from tfscale.errors import ConfigError


def make_model(build_model: Callable | str, kwargs: Mapping[str, Any] | None = None, *,
               where: str = "model") -> keras.Model:
    """Calls the model function (or ``"module:function"``) and checks it returned a Keras model."""
    fn = load_function(build_model, where=where) if isinstance(build_model, str) else build_model
    name = build_model if isinstance(build_model, str) else getattr(fn, "__qualname__", repr(fn))
    try:
        model = fn(**dict(kwargs or {}))
    except TypeError as e:
        if kwargs and "argument" in str(e):
            raise ConfigError(f"{name} rejected its arguments {sorted(kwargs)}: {e}", where=f"{where}_args",
                              fix="give only the keyword arguments the function accepts") from None
        raise
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{name} returned {type(model).__name__}, not a Keras model", where=where,
                          fix="return a keras.Model (Sequential, functional or subclassed) from the function")
    return model
