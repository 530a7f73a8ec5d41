"""The parts a pipeline is made of: `Source` (records from units), `Op` (a step) and `Build` (one build's facts)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import tensorflow as tf

from tfscale.data import badrecords
from tfscale.errors import ConfigError
from tfscale.vocabulary import OnError

# With tf.data's autotuner off (transforms.with_options), AUTOTUNE means "as many as the cores": here the
# autotuner made epochs of one image pipeline alternate between ~2,900 and ~5,100 images/s, without it ~5,000.
AUTOTUNE = tf.data.AUTOTUNE
PARSE_BATCH = 64  # records per call of a vectorized parser (decode_csv, parse_example)


@dataclasses.dataclass(frozen=True)
class Build:
    """What one build of the dataset knows: its input pipeline, determinism, error handling."""

    num_pipelines: int = 1
    pipeline_id: int = 0
    deterministic: bool = False
    on_error: OnError = "raise"
    records: badrecords.BadRecords | None = None
    in_service: bool = False
    shuffle_units: int | None = None  # a seed (or -1 for none) when units are shuffled each epoch
    shared_seed: int | None = None  # every worker reads everything (sliced batches): unseeded shuffles use it
    chunked: bool = False  # elements are chunks of records (a source's read_chunks): batch ops re-batch them
    carry: bool = False  # tf.data service, skip mode: batches carry their dropped count, (batch, dropped)
    sliced: bool = False  # every worker reads everything and takes its slice of each global batch
    epoch: Any = None  # elastic pipelines: the epoch (a tensor) this pass is read for; shuffles seeded by it

    @property
    def map_options(self) -> dict[str, Any]:
        """`Dataset.map`'s parallelism in this build: as many calls as the cores, in order when deterministic."""
        return dict(num_parallel_calls=AUTOTUNE, deterministic=self.deterministic)

    def in_batches(self, ds: tf.data.Dataset, fn: Callable, size: int) -> tf.data.Dataset:
        """`fn` mapped over `ds` `size` elements at a time (a vectorized parser or check), then unbatched."""
        return ds.batch(size, **self.map_options).map(fn, **self.map_options).unbatch()

    def seed_for(self, seed: int | None):
        """A shuffle's seed in this build: `seed` (or the shared one), mixed with the epoch when there is one."""
        seed = self.shared_seed if seed is None else seed
        if self.epoch is None or seed is None:
            return seed
        return tf.constant(seed, tf.int64) * 1_000_003 + tf.cast(self.epoch, tf.int64)

    def reshuffles(self) -> bool:
        """A shuffle draws a new order at every pass (False: the epoch's seed already gives each epoch its own)."""
        return self.epoch is None

    def guard(self, ok, reason: str, key, fix: str, count=None):
        """`badrecords.guard` with this build's mode (returns the keep predicate)."""
        return badrecords.guard(ok, reason, key, on_error=self.on_error, records=self.records, fix=fix,
                                in_service=self.in_service, count=count)

    def count_codes(self, bad_keys, bad_codes, reasons: tuple[str, ...], fixes: tuple[str, ...]):
        """`badrecords.count_codes` (a token once records picked out as bad are counted)."""
        return badrecords.count_codes(bad_keys, bad_codes, reasons, records=self.records, fixes=fixes,
                                      in_service=self.in_service)

    def shuffled(self, units: tf.data.Dataset, count: int) -> tf.data.Dataset:
        if self.shuffle_units is None or count < 2:
            return units
        seed = self.seed_for(None if self.shuffle_units < 0 else self.shuffle_units)
        return units.shuffle(count, seed=seed, reshuffle_each_iteration=self.reshuffles())


def named_label(element, label: str | None, *, kind: str, factory: str):
    """The label of a (features, label) element, for `balance`, where the source's `label` argument named it.

    Args:
        element: the element.
        label: the source's label (None: it was given none).
        kind: what the label names, e.g. "CSV column", "TFRecord feature".
        factory: the call that makes the source, e.g. "ts.data.csv()".

    Raises:
        ConfigError: the source was given no label.
    """
    if label is None:
        fmt, _, noun = kind.partition(" ")
        raise ConfigError(f"this {fmt} pipeline has no label {noun}", where="balance()",
                          fix=f"pass label='{noun}' to balance() or to {factory}")
    return element[1]


class Source:
    """Where records come from. `read` yields (path, index, record) for some of `units`.

    Subclasses set `name` (for messages) and `units` (files or partitions that can
    be given to different workers; None when only records can be dealt out).
    """

    name: str = "source"
    units: tuple[str, ...] | None = None

    def read(self, units: tuple[str, ...] | None, build: Build) -> tf.data.Dataset:
        raise NotImplementedError

    def read_bare(self, units: tuple[str, ...] | None, build: Build) -> tf.data.Dataset:
        """The elements `read` would give, without their (path, index) keys (sources that can override it)."""
        raise NotImplementedError

    def read_chunks(self, units: tuple[str, ...] | None, build: Build) -> tf.data.Dataset | None:
        """Bare elements in chunks (vectors of them), for a pipeline batched right after reading; None if not."""
        return None

    def parse(self, records: tf.data.Dataset, build: Build) -> tf.data.Dataset:
        """Turns raw records into elements, keeping (path, index, element); checks bad records."""
        return records

    def needs_parse(self) -> bool:
        """`parse` does something (so elements must be read with their keys)."""
        return type(self).parse is not Source.parse

    def label_of(self, element):
        """The class label of an element, for `balance` (default: the second item of a pair).

        A source whose ``label`` names a column or feature returns `named_label` instead."""
        if isinstance(element, (tuple, list)) and len(element) == 2:
            return element[1]
        raise ConfigError(f"cannot find the label of {self.name}'s elements", where="Pipeline.balance()",
                          fix="pass label=<dict key, tuple index or function>")

    def class_counts(self) -> dict | None:
        """Records per class when known without reading (image folders); else None."""
        return None

    def find_bad(self):
        """After an unnamed read/decode failure: a `DataError` naming the bad unit, found by a scan; else None."""
        return None

    def unit_counts(self) -> tuple[int, ...] | None:
        """Records in each of `units` when known without reading (image folders, converted shards); else None."""
        return None


@dataclasses.dataclass(frozen=True)
class Op:
    """One step after the source. `vectorized` maps work on a batch as on one element."""

    name: str
    apply: Callable[[tf.data.Dataset, Build], tf.data.Dataset]
    vectorized: bool | Callable[[Build], bool] = False  # or a test of the build (decoding: not in skip mode)
    keeps_records: bool = True  # False for take/skip/filter/repeat/batch: sample() may not move before it
    payload: Any = None
    fn: Callable | None = None  # a map's element function, a filter's predicate (run on (element, dropped))
    agnostic: bool = False  # never looks inside elements (take, skip, repeat, shuffle, cache, batch)
    splits: bool = False  # per image: the same result on a batch and on its parts (decode, resize, normalize)
    carry: Callable[[tf.data.Dataset, Build], tf.data.Dataset] | None = None  # its apply on (batch, dropped)
    own: bool = False  # its functions are tfscale's, CPU only: set up quickly (see functions.py); never a user's

    def vectorized_in(self, build: Build) -> bool:
        return self.vectorized(build) if callable(self.vectorized) else self.vectorized

    def carried(self, ds: tf.data.Dataset, build: Build) -> tf.data.Dataset:
        """This op on elements (element, dropped) of a `Build.carry` build: dropped counts pass it.

        A filter loses the counts of the batches it removes.
        """
        if self.carry is not None:
            return self.carry(ds, build)
        if self.agnostic:
            return self.apply(ds, build)
        if self.fn is None:
            raise ConfigError(f"{self.name} cannot run on a tf.data service in skip mode after batching",
                              where=self.name, fix="give it as .map(fn) or .filter(fn), or use on_error='raise'")
        fn = self.fn
        if self.payload == "filter":
            return ds.filter(lambda element, dropped: _call(fn, element))
        return ds.map(lambda element, dropped: (_call(fn, element), dropped), num_parallel_calls=AUTOTUNE,
                      deterministic=build.deterministic)


def _call(fn, element):
    return fn(*element) if isinstance(element, tuple) else fn(element)
