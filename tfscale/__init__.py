"""tfscale: one Keras 3 model definition, from a laptop to a multi-GPU box, a TPU and a cluster.

    import tfscale as ts
    scale = ts.Scale.auto()
    with scale.scope():
        model = build_model()

`import tfscale` imports only the standard library: TensorFlow and Keras load
when `Scale` (or a subpackage that needs them) is first used, so the launcher
and `tfscale --help` start at once; optional packages load inside the
functions that need them.
"""

from __future__ import annotations

import importlib
import sys

if sys.version_info < (3, 11):  # pip refuses the install (requires-python); a copy on sys.path still gets here
    raise ImportError(f"tfscale needs Python 3.11 or newer (tomllib), and this is Python "
                      f"{sys.version.split()[0]}. Where: {sys.executable}. Fix: make the virtual environment with "
                      f"python3.11 or newer (python3.11 -m venv .venv) and install tfscale there")

from tfscale import errors  # noqa: E402 - after the version check, which must run first
from tfscale.config import StrategyConfig
from tfscale.errors import ClusterError, ConfigError, DataError, ExportError, TfscaleError

__version__ = "0.1.0"

# Loaded on first use, so `import tfscale` loads no TensorFlow (the launcher starts at once).
_LAZY_MODULES = ("cluster", "data", "export", "strategy", "train", "tuning", "recipes", "ray")
_LAZY_FUNCTIONS = {"Scale": "tfscale.scale", "launch": "tfscale.cluster.launch.launcher", "fit": "tfscale.train.fit",
                   "tune": "tfscale.tuning"}

__all__ = ["ClusterError", "ConfigError", "DataError", "ExportError", "Scale", "StrategyConfig", "TfscaleError",
           "errors", *_LAZY_MODULES, *_LAZY_FUNCTIONS]


def __getattr__(name: str):
    if name in _LAZY_FUNCTIONS or name in _LAZY_MODULES:
        try:  # an optional package (TensorFlow on a JAX-only install, ...) missing: a ConfigError naming the extra
            module = importlib.import_module(_LAZY_FUNCTIONS.get(name, f"tfscale.{name}"))
        except ModuleNotFoundError as e:
            raise errors.missing_module(e, where=f"tfscale.{name}") from None
        return getattr(module, name) if name in _LAZY_FUNCTIONS else module
    raise AttributeError(f"module 'tfscale' has no attribute {name!r}")
