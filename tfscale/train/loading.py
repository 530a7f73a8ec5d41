"""Finding the user's code: ``"module:function"`` names, and checking that a model function gives a model."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import keras

from tfscale.errors import ConfigError


def resolve(spec: str, *, where: str) -> Callable:
    """The callable named by ``"package.module:function"`` (the working directory is importable).

    Raises:
        ConfigError: a malformed name, a module that cannot be imported (and why), or a missing
            or non-callable attribute (with the closest names the module has).
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise ConfigError(f"{spec!r} is not of the form 'module:function'", where=where,
                          fix="write it as package.module:function, e.g. mymodels:build_model")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or module_name
        inner = "" if module_name == missing or module_name.startswith(missing + ".") else f" (it imports {missing!r})"
        raise ConfigError(f"module {module_name!r} cannot be imported: no module named {missing!r}{inner}",
                          where=f"{where} = {spec!r}", fix="check the spelling, run from the project's folder, "
                          "or add its folder to PYTHONPATH" + (f"; install {missing}" if inner else "")) from None
    except Exception as e:  # the user's module raised while importing
        raise ConfigError(f"importing {module_name!r} failed: {type(e).__name__}: {e}", where=f"{where} = {spec!r}",
                          fix=f"fix the error in {module_name}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"the closest names it has: {', '.join(close)}" if close else "check the function's name"
            raise ConfigError(f"{module_name!r} has no attribute {attr!r}", where=f"{where} = {spec!r}", fix=hint)
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{spec!r} is a {type(obj).__name__}, not a function", where=where,
                          fix="name a function (or class) that builds it")
    return obj


def make_model(build_model: Callable | str, kwargs: Mapping[str, Any] | None = None, *,
               where: str = "model") -> keras.Model:
    """Calls the model function (or ``"module:function"``) and checks it returned a Keras model."""
    fn = resolve(build_model, where=where) if isinstance(build_model, str) else build_model
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
