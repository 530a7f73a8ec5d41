"""Reading configs: TOML files, ``--set key=value`` overrides, and typed, checked dataclass building."""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any

from tfscale.errors import ConfigError


def check_choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{value!r} is not an accepted value", where=where,
                          fix=f"use one of: {', '.join(choices)}")


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a TOML file into a dict, with a `ConfigError` for a missing or malformed file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist", where=path,
                          fix="check the path") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path!r} is a folder", where=path, fix="give the .toml file in it") from None
    except OSError as e:  # no permission, a file where a folder should be, ...
        raise ConfigError(f"config file {path!r} cannot be read: {e.strerror}", where=path,
                          fix="check the path and the file's permissions") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file is not UTF-8 text ({e.reason} at byte {e.start})", where=path,
                          fix="give a TOML file saved as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file is not valid TOML: {e}", where=path,
                          fix="correct the TOML syntax at the position given") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses one ``--set`` item, ``a.b=value``, into (["a", "b"], value).

    The value is read as a TOML value (numbers, booleans, strings, arrays);
    anything that is not valid TOML is taken as a plain string.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value", where="--set",
                          fix="write it as --set section.key=value, e.g. --set train.epochs=3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Returns a copy of `data` with each ``key.path=value`` override applied."""
    result = _deep_copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for part in keys[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r} goes inside {part!r}, which is a value, not a table",
                                  where="--set", fix="check the key path")
            node = child
        node[keys[-1]] = value
    return result


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


T = typing.TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any], *, source: str, prefix: str = "") -> T:
    """Builds the frozen dataclass `cls` from `data`, checking keys and types.

    Args:
        cls: a dataclass type.
        data: the values, e.g. one table of a TOML file.
        source: where the values came from (a file name), for error messages.
        prefix: the table name, so errors say ``strategy.replicas``.

    Raises:
        ConfigError: an unknown key (with the closest known one), or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown key {dotted!r}", where=source,
                              fix=f"{hint}known keys: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, dotted, source)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(e.what, where=f"{source}, {e.where}" if e.where else source, fix=e.fix) from None


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, source, "a list", value)
        return tuple(_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _type_error(key, source, "a table", value)
        return dict(value)
    if origin is typing.Literal:  # a `tfscale.vocabulary` type: the message of `check_choice`, as __post_init__ gives
        try:
            check_choice(key, value, args)
        except ConfigError as e:
            raise ConfigError(e.what, where=f"{source}, {e.where}", fix=e.fix) from None
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise _type_error(key, source, "a table", value)
        return from_mapping(hint, value, source=source, prefix=f"{key}.")
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise _type_error(key, source, "true or false", value)
    if hint is int and isinstance(value, bool):
        raise _type_error(key, source, "a whole number", value)
    if isinstance(hint, type) and not isinstance(value, hint):
        names = {int: "a whole number", float: "a number", str: "a string"}
        raise _type_error(key, source, names.get(hint, hint.__name__), value)
    return value


def _type_error(key: str, source: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key!r} must be {expected}, got {value!r} ({type(value).__name__})",
                       where=source, fix=f"give {key} as {expected}")


def with_options(cls: type[T], config: T | None, options: Mapping[str, Any], *, what: str, where: str) -> T:
    """`config` (or the defaults of `cls`) with keyword `options` applied; unknown names are errors.

    Args:
        cls: the config dataclass.
        config: a config to start from, or None for the defaults.
        options: keyword arguments a caller passed, e.g. to `tfscale.fit(...)`.
        what: how the options are named in the message, e.g. "tfscale.fit option".
        where: the call, e.g. "tfscale.fit(...)".
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}", where=where, fix=f"use only: {', '.join(sorted(known))}")
    if config is None:
        return cls(**options)
    return dataclasses.replace(config, **options) if options else config
