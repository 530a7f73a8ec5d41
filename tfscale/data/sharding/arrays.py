"""Per-process batches of NumPy arrays and Python generators, without TensorFlow (the JAX engine's input).

Both are `keras.utils.PyDataset`s. Each global batch holds the same examples as
without distribution; process `index` of `shards` takes its contiguous slice of
it, so every process runs the same steps and a run on N devices or processes
follows the trajectory of a run on one. Batches come in order whatever index
Keras asks for: `fit` shuffles a PyDataset's batch order by default
(``shuffle=True``), differently on every process, which would mix slices of
different global batches. Shuffle the examples beforehand, or use
``ts.data.from_numpy(...).shuffle(...)``.

A generator is read in full by every process (the "slices" plan): it must yield
the same examples in the same order everywhere. Give a function that returns a
new iterator (a generator function): it is called once to count the steps, then
once per epoch. A generator object can be read only once, so it is read into
memory first.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping

import keras
import numpy as np

from tfscale.errors import ConfigError

log = logging.getLogger("tfscale")


def is_arrays(data) -> bool:
    """NumPy arrays as (x, y[, w]), {name: array} or one array, all of the same length."""
    if isinstance(data, np.ndarray):
        return True
    values = list(data.values()) if isinstance(data, Mapping) else data if isinstance(data, (tuple, list)) else None
    return bool(values) and all(isinstance(v, np.ndarray) or is_arrays(v) for v in values)


def _leaves(data) -> list[np.ndarray]:
    if isinstance(data, np.ndarray):
        return [data]
    values = data.values() if isinstance(data, Mapping) else data
    return [leaf for v in values for leaf in _leaves(v)]


def _map(fn, data):
    if isinstance(data, np.ndarray):
        return fn(data)
    if isinstance(data, Mapping):
        return {k: _map(fn, v) for k, v in data.items()}
    return tuple(_map(fn, v) for v in data)


def _as_keras_batch(batch):
    """Keras wants (x,), (x, y) or (x, y, w): a bare array or dict is the model's input alone."""
    return batch if isinstance(batch, tuple) else (batch,)


class _InOrder(keras.utils.PyDataset):
    """A PyDataset that gives its batches in order, one per request, restarting each epoch."""

    steps: int

    def __init__(self):
        super().__init__()
        self._next_step = 0

    @property
    def num_batches(self) -> int:
        return self.steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        if not 0 <= index < self.steps:
            raise IndexError(index)
        step, self._next_step = self._next_step % self.steps, self._next_step + 1
        return self.batch(step)

    def batch(self, step: int):
        raise NotImplementedError

    def on_epoch_begin(self):
        self._next_step = 0

    def on_epoch_end(self):
        self._next_step = 0


class ArrayBatches(_InOrder):
    """This process's slice of every global batch of in-memory arrays.

    Args:
        arrays: (x, y[, w]), a dict of arrays or one array; the first axis is the example.
        global_batch_size: examples per step over all processes.
        shards: input streams the global batch is split into; index: this process's.
        drop_remainder: leave out the last incomplete global batch.
    """

    def __init__(self, arrays, *, global_batch_size: int, shards: int = 1, index: int = 0,
                 drop_remainder: bool = True):
        super().__init__()
        lengths = {len(a) for a in _leaves(arrays)}
        if len(lengths) != 1:
            raise ConfigError(f"the arrays have different lengths {sorted(lengths)}", where="Scale.distribute(data)",
                              fix="give arrays with one example per row, all of the same length")
        self.arrays, self.length = arrays, lengths.pop()
        self.global_batch_size, self.shards, self.index = global_batch_size, shards, index
        self.per_process = global_batch_size // shards
        whole, rest = divmod(self.length, global_batch_size)
        self.steps = whole if drop_remainder or not rest else whole + 1
        if self.steps == 0:
            raise ConfigError(f"{self.length} examples make no global batch of {global_batch_size}",
                              where="Scale.distribute(data)", fix="give more data or a smaller global_batch_size")
        if rest and drop_remainder:
            log.info("%d of %d examples per epoch left out: the last global batch would be incomplete", rest,
                     self.length)

    def batch(self, step: int):
        start = step * self.global_batch_size + self.index * self.per_process
        stop = min(start + self.per_process, self.length)
        return _as_keras_batch(_map(lambda a: a[start:stop], self.arrays))


class GeneratorBatches(_InOrder):
    """This process's slice of every global batch of a stream of examples, read in order.

    Args:
        make_iterator: a function returning a new iterator of unbatched examples (each a tuple
            (x, y), a dict or an array), the same on every process.
        global_batch_size, shards, index: as `ArrayBatches`; incomplete last batches are left out.
    """

    def __init__(self, make_iterator: Callable[[], Iterable], *, global_batch_size: int, shards: int = 1,
                 index: int = 0):
        super().__init__()
        self.make_iterator = make_iterator
        self.global_batch_size, self.shards, self.index = global_batch_size, shards, index
        self.per_process = global_batch_size // shards
        self._iterator: Iterator | None = None
        examples = sum(1 for _ in make_iterator())  # every process counts the same stream: equal steps
        self.steps = examples // global_batch_size
        if self.steps == 0:
            raise ConfigError(f"the generator gave {examples} examples: no global batch of {global_batch_size}",
                              where="Scale.distribute(data)", fix="give more data or a smaller global_batch_size")
        if examples % global_batch_size:
            log.info("%d of %d examples per epoch left out: the last global batch would be incomplete",
                     examples % global_batch_size, examples)

    def batch(self, step: int):
        if step == 0:
            self._iterator = iter(self.make_iterator())
        examples = list(itertools.islice(self._iterator, self.global_batch_size))
        if len(examples) < self.global_batch_size:
            raise ConfigError(f"the generator ended at batch {step} of {self.steps}: it gave fewer examples than "
                              "when counted", where="Scale.distribute(generator)",
                              fix="give a function that yields the same examples every time it is called")
        mine = examples[self.index * self.per_process:(self.index + 1) * self.per_process]
        return _as_keras_batch(_stack(mine))

def _stack(examples: list):
    first = examples[0]
    if isinstance(first, Mapping):
        return {k: _stack([e[k] for e in examples]) for k in first}
    if isinstance(first, (tuple, list)):
        return tuple(_stack([e[i] for e in examples]) for i in range(len(first)))
    return np.stack([np.asarray(e) for e in examples])


def host_batches(data, *, global_batch_size: int, shards: int, index: int, drop_remainder: bool = True):
    """A PyDataset of this process's batches of arrays or a generator (function), or None for other input."""
    if is_arrays(data):
        return ArrayBatches(data, global_batch_size=global_batch_size, shards=shards, index=index,
                            drop_remainder=drop_remainder)
    if callable(data) and not isinstance(data, type):
        return GeneratorBatches(data, global_batch_size=global_batch_size, shards=shards, index=index)
    if isinstance(data, Iterator):  # a generator object: one pass only, so it is read into memory
        examples = list(data)
        log.info("a generator object was read into memory (%d examples): give a generator function to stream",
                 len(examples))
        return GeneratorBatches(lambda: iter(examples), global_batch_size=global_batch_size, shards=shards,
                                index=index)
    return None
