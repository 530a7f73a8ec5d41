"""tfscale: one Keras 3 model definition, from a laptop to a multi-GPU box, a TPU and a cluster.

    import tfscale as ts
    scale = ts.Scale.auto()
    with scale.scope():
        model = build_model()

`import tfscale` imports TensorFlow, Keras and the standard library only;
optional packages load inside the functions that need them.
"""

from __future__ import annotations

import importlib

from tfscale import errors
from tfscale.config import StrategyConfig
from tfscale.errors import ClusterError, ConfigError, DataError, ExportError, TfscaleError
from tfscale.scale import Scale

__version__ = "0.1.0"

# Subpackages loaded on first use, so `import tfscale` stays as cheap as `import tensorflow`.
_LAZY_MODULES = ("cluster", "data", "export", "strategy", "train", "tuning", "recipes")
_LAZY_FUNCTIONS = {"launch": "tfscale.cluster.launcher", "fit": "tfscale.train.fit", "tune": "tfscale.tuning"}

__all__ = ["ClusterError", "ConfigError", "DataError", "ExportError", "Scale", "StrategyConfig", "TfscaleError",
           "errors", *_LAZY_MODULES, *_LAZY_FUNCTIONS]


def __getattr__(name: str):
    if name in _LAZY_FUNCTIONS:
        module = importlib.import_module(_LAZY_FUNCTIONS[name])
        return getattr(module, name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"tfscale.{name}")
    raise AttributeError(f"module 'tfscale' has no attribute {name!r}")
