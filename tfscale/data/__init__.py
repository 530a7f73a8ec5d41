"""Streaming input pipelines that sample, clean, shard and keep every replica fed.

    import tfscale as ts
    train = ts.data.image_folder("photos/train", image_size=(96, 96)).sample(0.1, seed=1)
    train = scale.distribute(train, global_batch_size=256)

Sources return a `Pipeline`; its methods (sample, balance, map, decode_images,
standardize, vectorize, cache, shuffle, ...) return new pipelines. Optional
packages (pandas, dask, tensorflow_datasets, PIL) load only inside the
functions that need them.
"""

from tfscale.data.badrecords import BadRecords
from tfscale.data.images import image_folder
from tfscale.data.index import Index, lookup
from tfscale.data.pipeline import Pipeline
from tfscale.data.sharding import Shardable, batch_sizes, distribute
from tfscale.data.sources import from_dask, from_generator, from_numpy, from_pandas, text_lines, tfds
from tfscale.data.tables import csv
from tfscale.data.tfrecord import tfrecord

__all__ = ["BadRecords", "Index", "Pipeline", "Shardable", "batch_sizes", "csv", "distribute", "from_dask",
           "from_generator", "from_numpy", "from_pandas", "image_folder", "lookup", "text_lines", "tfds", "tfrecord"]
