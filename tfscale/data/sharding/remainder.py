"""The last incomplete global batch of an evaluation, counted once where every replica needs one batch shape.

On the JAX engine with several replicas every replica and process takes a batch of the same shape, so
N examples in global batches of B give ``N // B`` whole batches and ``r = N % B`` examples that no even
split holds (1,001 in batches of 64 over 2 processes: 15 batches and 41 examples). `Scale.evaluate`
evaluates the whole batches as usual, then the r examples as one batch in which *every* replica holds all
r (``copies`` = replicas: a global batch of ``copies * r``), and adds ``1 / copies`` of the metric states
that batch added to those of the whole batches: each example counted once, exactly, for metrics whose
state sums over examples (Keras' loss tracker, means, sums, confusion counts, AUC's buckets).

Padding with sample weight 0 cannot do this in Keras 3.15: the loss tracker counts a batch's rows, padding
included, and metrics compiled as `metrics=` (not `weighted_metrics=`) get no sample weights.

Input whose order is fixed by the input itself is split this way: NumPy arrays, tf.data datasets and
generator functions. A tfscale.data pipeline deals files or records per worker (plans.py), so its
remainder is no one range of examples: it is not split (`tail` is None, and the caller says what is left out).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator

import numpy as np

from tfscale.data.sharding.arrays import ArrayBatches, _leaves, _map, _stack, is_arrays
from tfscale.data.sharding.position import skip_examples
from tfscale.errors import DataError


@dataclasses.dataclass(frozen=True)
class Remainder:
    """How an evaluation of `examples` splits into whole global batches and the rest.

    Attributes:
        examples: examples in the input.
        whole_steps: whole global batches (read as usual, `drop_remainder=True`).
        tail: one batch holding the rest on every replica (a `keras.utils.PyDataset` of this process's part),
            or None where nothing is left over.
        copies: how many times the tail's examples are in it (the replicas): the metric states it adds are
            divided by this.
    """

    examples: int
    whole_steps: int
    tail: object | None
    copies: int


def splittable(data) -> bool:
    """Input whose remainder is one range of examples: arrays, a tf.data.Dataset, a generator function."""
    if hasattr(data, "batched_dataset_for") or hasattr(data, "dataset_for"):
        return False  # a tfscale pipeline: its own plan deals the examples
    tf = sys.modules.get("tensorflow")
    return (is_arrays(data) or (callable(data) and not isinstance(data, type))
            or (tf is not None and isinstance(data, tf.data.Dataset)))


def count_examples(data, where: str) -> int:
    """Examples in `data` (arrays, a tf.data.Dataset or a generator function; read once where not known).

    Raises:
        DataError: an infinite dataset, which no evaluation ends.
    """
    if is_arrays(data):
        return len(_leaves(data)[0])
    if callable(data) and not isinstance(data, type):
        return sum(1 for _ in data())
    n = int(data.cardinality())
    if n == -1:  # tf.data.INFINITE_CARDINALITY
        raise DataError(f"{where} is an infinite dataset (.repeat() without a count): an evaluation never ends",
                        where=where, fix="evaluate a finite dataset: drop .repeat(), or .take(n) the examples")
    return n if n >= 0 else int(data.reduce(np.int64(0), lambda count, _: count + 1))


def _examples_from(data, start: int):
    """The examples of `data` from `start` on, as arrays (the caller knows there are fewer than a batch)."""
    rest = skip_examples(data, start)
    if is_arrays(rest):
        return rest
    examples = list(rest() if callable(rest) else rest.as_numpy_iterator())
    return _stack(examples)


def remainder(engine, data, *, global_batch_size: int, where: str) -> Remainder:
    """The split of `data` (unbatched examples that `splittable` accepts) for `engine` (an `InputEngine`).

    Raises:
        DataError: an infinite dataset.
    """
    examples = count_examples(data, where)
    whole, rest = divmod(examples, global_batch_size)
    if not rest:
        return Remainder(examples, whole, None, 1)
    copies = engine.num_replicas
    streams, index = engine.input_shards
    tail = _examples_from(data, whole * global_batch_size)
    tiled = _map(lambda a: np.concatenate([np.asarray(a)] * copies), tail)  # every replica holds all r
    batches = ArrayBatches(tiled, global_batch_size=copies * rest, shards=streams, index=index)
    return Remainder(examples, whole, batches, copies)


def one_pass(data):
    """`data` as input that can be read more than once: a generator object is read into a list first."""
    if isinstance(data, Iterator):
        examples = list(data)
        return lambda: iter(examples)
    return data
