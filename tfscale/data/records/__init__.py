"""TFRecord shards as `tfscale data convert` writes them, and what reads them back.

- format.py: shard and index names, `dataset.json`, feature specs, one record;
- files.py: TFRecord sources (any TFRecord files, and converted image shards), truncated files named or counted;
- index.py: key -> (shard, offset) beside the shards, so `lookup(key)` reads one record without scanning;
- manifest.py: what the shards were made from (source files and options), to tell when they are stale.

The public factory is `tfscale.data.tfrecord` (data/tfrecord.py).
"""
