"""Which Keras backend this process trains on, and so which engine tfscale uses.

Keras fixes its backend at the first ``import keras`` (``KERAS_BACKEND``, else
``~/.keras/keras.json``, else TensorFlow; Keras writes that file with
"tensorflow" on its first import, so only another backend there counts as a choice). tfscale follows it: the TensorFlow
backend trains under tf.distribute, the JAX backend under keras.distribution.
Nothing here imports TensorFlow, JAX or Keras unless Keras is already loaded.

`resolve` may still choose for the process while Keras is not imported: a
strategy that only exists on JAX (``data_parallel``, ``model_parallel``), or a
machine without TensorFlow, sets ``KERAS_BACKEND=jax`` before Keras loads.
Once Keras runs on TensorFlow, asking for a JAX strategy is a ConfigError.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
from collections.abc import Mapping

from tfscale.compat import keras as keras_compat
from tfscale.errors import ConfigError, install_hint
from tfscale.vocabulary import JAX, TENSORFLOW, Backend

log = logging.getLogger("tfscale")

_ALIASES = {"tf": TENSORFLOW, "tensorflow": TENSORFLOW, "jax": JAX}


def normalize(name: str, *, where: str = "KERAS_BACKEND") -> Backend:
    """'tensorflow' or 'jax' for a backend name; a ConfigError for anything else (torch, numpy, ...)."""
    backend = _ALIASES.get(str(name).strip().lower())
    if backend is None:
        raise ConfigError(f"Keras backend {name!r} has no tfscale engine", where=where,
                          fix="use KERAS_BACKEND=tensorflow (tf.distribute) or KERAS_BACKEND=jax "
                              "(keras.distribution: TPUs, model parallelism)")
    return backend


def keras_loaded() -> str | None:
    """The backend of the Keras already imported in this process, or None while Keras is not imported."""
    keras = sys.modules.get("keras")
    config = getattr(keras, "config", None)
    if config is None or not hasattr(config, "backend"):
        return None
    return normalize(config.backend(), where="the Keras imported in this process")


def _keras_json(environ: Mapping[str, str]) -> str | None:
    home = environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend")
    except (OSError, ValueError, AttributeError):
        return None


def installed(backend: str) -> bool:
    """The backend's framework can be imported here (without importing it)."""
    if backend in sys.modules:
        return sys.modules[backend] is not None  # None: imports of it are blocked
    try:
        return importlib.util.find_spec(backend) is not None
    except (ImportError, ValueError):
        return False


def configured(environ: Mapping[str, str] | None = None) -> tuple[str | None, str]:
    """(backend, where it comes from) as Keras would pick it, without importing Keras; None if nothing says."""
    environ = os.environ if environ is None else environ
    loaded = keras_loaded()
    if loaded:
        return loaded, "Keras is already imported on it"
    if environ.get("KERAS_BACKEND"):
        return normalize(environ["KERAS_BACKEND"]), f"KERAS_BACKEND={environ['KERAS_BACKEND']}"
    from_json = _keras_json(environ)
    # Keras writes keras.json with "tensorflow" on its first import: only another backend there is a choice
    if from_json and normalize(from_json, where="~/.keras/keras.json") != TENSORFLOW:
        return normalize(from_json), "~/.keras/keras.json"
    return None, "Keras' default"


def current(environ: Mapping[str, str] | None = None) -> str:
    """The backend Keras runs (or will run) on in this process: 'tensorflow' or 'jax'. Pure: sets nothing."""
    backend, _ = configured(environ)
    if backend:
        return backend
    return TENSORFLOW if installed(TENSORFLOW) or not installed(JAX) else JAX


def resolve(wanted: str | None = None, *, strategy: str | None = None, listing=None,
            environ: Mapping[str, str] | None = None) -> str:
    """The backend for a Scale that asks for `wanted` (None: whatever this process runs on).

    `strategy` is the strategy name that wants it, `listing(backend)` the strategies a backend
    has (both for messages).
    While Keras is not imported and nothing names a backend, `wanted` (or JAX on a
    machine without TensorFlow) decides, and ``KERAS_BACKEND`` is set so that
    Keras loads on it.

    Raises:
        ConfigError: `wanted` contradicts the backend Keras runs on (or was told to run on),
            or its framework is not installed.
    """
    environ = os.environ if environ is None else environ
    backend, source = configured(environ)
    if backend is None:
        backend = wanted or current(environ)
        if backend != TENSORFLOW or not installed(TENSORFLOW):
            os.environ["KERAS_BACKEND"] = backend  # Keras is not imported yet: it will load on this backend
            log.info("Keras backend %s (nothing named one; %s)", backend,
                     "the strategy asked for it" if wanted else "TensorFlow is not installed")
    elif wanted and wanted != backend:
        raise ConfigError(
            f"{strategy!r} is a {wanted} strategy, but this process runs Keras on {backend} ({source})",
            where="tfscale.Scale(...) / KERAS_BACKEND",
            fix=f"pick a {backend} strategy ({', '.join(listing(backend)) if listing else '`tfscale info` lists them'}), "
                f"or start the process with KERAS_BACKEND={wanted} (`tfscale launch --backend {wanted}`, or set it "
                f"before anything imports keras)")
    if not installed(backend):
        extra = "jax" if backend == JAX else "tensorflow"
        raise ConfigError(f"Keras is set to run on {backend}, which is not installed", where=source,
                          fix=install_hint(extra))
    return backend


def keras_on_tensorflow() -> bool:
    """True where Keras runs (or will run) on TensorFlow: TensorFlow ops can run on this process's models."""
    return current() == TENSORFLOW


def set_random_seed(seed: int) -> None:
    """`keras.utils.set_random_seed`, but TensorFlow's seed only where TensorFlow is loaded already.

    Keras' own imports TensorFlow wherever it is installed, to seed it: ~4 s of CPU in every JAX process that
    never uses it. A process whose input runs on tf.data has loaded it by the time it seeds.
    """
    import keras

    if "tensorflow" in sys.modules or keras.backend.backend() == "torch":
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np

    keras_compat.set_random_seed(seed)  # Keras' own seed, through its internals: no TensorFlow imported
    random.seed(seed)
    np.random.seed(seed)
