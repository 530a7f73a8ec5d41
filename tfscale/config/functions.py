"""The user's functions that configs name: ``"package.module:function"`` or ``"path/to/file.py:function"``.

`load_function` is the one resolver of these names (`tfscale train`'s model and data, `tfscale tune`'s run
files, `tfscale info --model`, `tfscale.fit(build_model="...")`), with one set of rules:

- the name is ``module:attribute`` (split at the last colon); the attribute may be dotted (``mod:Class.build``);
- a module ending in ``.py`` is a file, looked up in `base_dir` (a run file's folder), then the working directory
  (as a run file's preset file is);
- other modules are imported with `base_dir` (if given) and the working directory on ``sys.path``;
- every failure is a ConfigError naming the key: a malformed name, a missing module (or a module it imports),
  a module that raised while importing, a missing attribute (with the closest names), a non-callable.

Standard library only.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

from tfscale.errors import ConfigError


def load_function(spec: str, *, where: str, base_dir: str | os.PathLike | None = None) -> Callable:
    """The callable named by ``"package.module:function"`` or ``"file.py:function"``.

    Args:
        spec: the name.
        where: the key that holds it, for errors ("model", "run.toml, data").
        base_dir: a run file's folder: ``.py`` paths are looked up there first, then in the working
            directory, and its modules are importable (None: the working directory only).

    Raises:
        ConfigError: a malformed name, a file or module that cannot be found or imported (and why),
            or a missing or non-callable attribute (with the closest names the module has).

    Example:
        build = load_function("mymodels:build_model", where="model")
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise ConfigError(f"{spec!r} is not of the form 'module:function'", where=where,
                          fix="write it as package.module:function, e.g. mymodels:build_model")
    module = _from_file(module_name, base_dir, where, spec) if module_name.endswith(".py") else \
        _import(module_name, base_dir, where, spec)
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


def _import(module_name: str, base_dir, where: str, spec: str):
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    if base_dir is not None and os.fspath(base_dir) not in sys.path:
        sys.path.insert(0, os.fspath(base_dir))
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or module_name
        inner = "" if module_name == missing or module_name.startswith(missing + ".") else f" (it imports {missing!r})"
        beside = f", put it beside the run file ({os.fspath(base_dir)})" if base_dir is not None else ""
        fix = f"check the spelling, run from the project's folder{beside}, or add its folder to PYTHONPATH"
        raise ConfigError(f"module {module_name!r} cannot be imported: no module named {missing!r}{inner}",
                          where=f"{where} = {spec!r}", fix=fix + (f"; install {missing}" if inner else "")) from None
    except Exception as e:  # the user's module raised while importing
        raise _import_failed(module_name, e, where, spec) from None


def _from_file(module_name: str, base_dir, where: str, spec: str):
    folders = ([os.fspath(base_dir)] if base_dir is not None else []) + [os.getcwd()]
    files = [os.path.join(folder, module_name) for folder in folders]
    file = next((f for f in files if os.path.isfile(f)), None)
    if file is None:
        raise ConfigError(f"no file {' or '.join(dict.fromkeys(files))}", where=f"{where} = {spec!r}",
                          fix="give the .py file's path from the run file's folder (or the working directory)")
    loader_spec = importlib.util.spec_from_file_location(os.path.basename(file)[:-3], file)
    module = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:  # the user's file raised while running
        raise _import_failed(module_name, e, where, spec) from None
    return module


def _import_failed(module_name: str, e: Exception, where: str, spec: str) -> ConfigError:
    return ConfigError(f"importing {module_name!r} failed: {type(e).__name__}: {e}", where=f"{where} = {spec!r}",
                       fix=f"fix the error in {module_name}")
