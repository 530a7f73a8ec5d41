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

# public name -> the module that defines it
_LAZY = {
    "BadRecords": "badrecords", "image_folder": "images", "Index": "index", "lookup": "index",
    "Pipeline": "pipeline", "Shardable": "sharding", "distribute": "sharding", "batch_sizes": "batching",
    "from_dask": "sources", "from_generator": "sources", "from_numpy": "sources", "from_pandas": "sources",
    "text_lines": "sources", "tfds": "sources", "csv": "tables", "tfrecord": "tfrecord",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tfscale.data.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfscale.data' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
