"""Streaming input pipelines that sample, clean, shard and keep every replica fed.

    import tfscale as ts
    train = ts.data.image_folder("photos/train", image_size=(96, 96)).sample(0.1, seed=1)
    train = scale.distribute(train, global_batch_size=256)

Sources return a `Pipeline`; its methods (sample, balance, map, decode_images,
standardize, vectorize, cache, shuffle, ...) return new pipelines. Optional
packages (pandas, dask, tensorflow_datasets, PIL) load only inside the
functions that need them.

The names below load on first use, so that TensorFlow-free parts of the package
(`tfscale.data.batching`, `tfscale.data.arrays`, what the JAX engine reads NumPy
arrays and generators with) import without TensorFlow.
"""

from __future__ import annotations

import importlib
import sys
import types

from tfscale import errors

# public name -> the module that defines it
_LAZY = {
    "BadRecords": "badrecords", "image_folder": "image_folder", "Index": "records.index", "lookup": "records.index",
    "Pipeline": "pipeline", "Shardable": "sharding", "batch_sizes": "batching",
    "from_dask": "sources", "from_generator": "sources", "from_numpy": "sources", "from_pandas": "sources",
    "text_lines": "sources", "tfds": "sources", "csv": "tables", "tfrecord": "tfrecord",
}

__all__ = sorted(_LAZY)


def _load(name: str):
    try:  # TensorFlow (tf.data) missing, on a JAX-only install: a ConfigError naming the extra to install
        module = importlib.import_module(f"tfscale.data.{_LAZY[name]}")
    except ModuleNotFoundError as e:
        raise errors.missing_module(e, where=f"tfscale.data.{name}") from None
    return getattr(module, name)


class _Package(types.ModuleType):
    """Resolves the public names on every access: a submodule of the same name (`tfrecord`) never shadows them."""

    def __getattribute__(self, name: str):
        if name in _LAZY:
            return _load(name)
        return super().__getattribute__(name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(_LAZY))


sys.modules[__name__].__class__ = _Package
