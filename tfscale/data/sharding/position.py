"""The input's position: the examples of a run resumed at global step k are those after k global batches.

tfscale orders examples per global batch, never per worker (plans.py): global batch k of an epoch holds
examples ``k * global_batch_size`` to ``(k + 1) * global_batch_size`` of the epoch's order, and each worker
takes its rows of it. So an epoch resumed after k steps, on any number of workers or replicas, reads exactly
what the uninterrupted run read, once the first ``k * global_batch_size`` examples are skipped.

`skip_examples` does that for the input whose order is fixed by the input itself: NumPy arrays, tf.data
datasets (deterministic ones: a `shuffle` reshuffled per iteration starts a new order at every restart)
and generator functions, and for a tfscale.data pipeline with `elastic()` (its order is the same on
every worker count: `tfscale.data.order`). Another tfscale.data pipeline deals files or records per
worker (the "files" and "records" plans), so its order depends on the worker count: it is not
skipped (None), and the epoch starts again at its first batch.
"""

from __future__ import annotations

import itertools
import sys

from tfscale.data.sharding.arrays import _map, is_arrays


def skip_examples(data, count: int):
    """`data` without its first `count` examples, or None where that is not exact (a tfscale pipeline that is
    not elastic)."""
    if count == 0:
        return data
    if getattr(data, "elastic_order", False):
        return data.starting_at(count)
    if hasattr(data, "batched_dataset_for") or hasattr(data, "dataset_for"):
        return None
    if is_arrays(data):
        return _map(lambda a: a[count:], data)
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(data, tf.data.Dataset):
        return data.skip(count)
    if callable(data) and not isinstance(data, type):
        return lambda: itertools.islice(data(), count, None)
    return None
