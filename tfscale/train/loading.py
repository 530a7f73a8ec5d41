"""The user's model and data: a model function (or its ``"module:function"`` name, `tfscale.config.functions`),
checked to give a Keras model; the examples a run file's ``[data]`` table names (`tfscale train` and `tfscale tune`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import keras

from tfscale import data as tfscale_data
from tfscale.config import DataConfig
from tfscale.config.functions import load_function
from tfscale.data import sharding  # as_dataset and from_numpy load TensorFlow on first use (a shuffle buffer)
from tfscale.data.sharding.arrays import is_arrays
from tfscale.errors import ConfigError

log = logging.getLogger("tfscale")


def make_model(build_model: Callable | str, kwargs: Mapping[str, Any] | None = None, *,
               where: str = "model") -> keras.Model:
    """Calls the model function (or ``"module:function"``) and checks it returned a Keras model."""
    fn = load_function(build_model, where=where) if isinstance(build_model, str) else build_model
    name = build_model if isinstance(build_model, str) else _function_name(fn)
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


def _function_name(fn) -> str:
    """``module:function`` of a function, as a run file names it (its repr for other callables)."""
    qualname, module = getattr(fn, "__qualname__", None), getattr(fn, "__module__", None)
    if qualname is None:
        return repr(fn)
    return f"{module}:{qualname}" if module and module != "__main__" else qualname


def load_data(data: DataConfig, *, base_dir: str | os.PathLike | None = None):
    """(train, validation or None) from the functions a run file's ``[data]`` table names; train shuffled if asked.

    What the functions return goes to `Scale.input` as it is (arrays stay arrays, so the JAX engine
    reads them without TensorFlow); only a shuffle buffer makes arrays a tfscale.data pipeline, with an
    elastic order (each epoch shuffled by (seed, epoch)): a restarted job resumes at the exact next batch.

    Args:
        data: the ``[data]`` table.
        base_dir: the run file's folder, where the functions are looked up first (`load_function`).
    """
    train = _call(load_function(data.train, where="data.train", base_dir=base_dir), data.args, "data.train")
    validation = None
    if data.validation:
        validation = _call(load_function(data.validation, where="data.validation", base_dir=base_dir), data.args,
                           "data.validation")
    if data.shuffle_buffer and hasattr(train, "batched_dataset_for"):
        log.warning("data.shuffle_buffer ignored: a tfscale.data pipeline shuffles itself")
    elif data.shuffle_buffer and is_arrays(train):  # an elastic order: a restart resumes at the exact batch
        train = tfscale_data.from_numpy(*train).shuffle(data.shuffle_buffer, seed=data.seed, files=False).elastic()
    elif data.shuffle_buffer:
        train = sharding.as_dataset(train, "data.train") if not sharding.is_tf_input(train) else train
        train = train.shuffle(data.shuffle_buffer, seed=data.seed, reshuffle_each_iteration=True)
    return train, validation


def _call(fn, args: Mapping[str, Any], where: str):
    try:
        return fn(**args)
    except TypeError as e:
        if args and "argument" in str(e):
            raise ConfigError(f"{where} rejected the arguments {sorted(args)}: {e}", where="data.args",
                              fix="give only keyword arguments the data functions accept") from None
        raise
