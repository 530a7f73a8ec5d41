"""`Pipeline`: a chainable description of an input pipeline that shards itself over workers.

A pipeline is a `Source` (records from shardable units: files, partitions),
record filters (`sample`, `balance`) and a list of ops (map, decode, cache,
shuffle, ...). Every method returns a new pipeline; nothing is read until a
dataset is built:

    train = ts.data.image_folder("photos/train", image_size=(96, 96)).sample(0.1, seed=1)
    ds = train.dataset(batch_size=32)              # a plain tf.data.Dataset
    dist = scale.distribute(train, global_batch_size=256)

Sharding (`dataset_for(input_context)`): with at least as many units as input
pipelines each worker reads its own units (FILE); otherwise records are dealt
round robin right after reading, before any parsing or decoding (DATA).
`batched_dataset_for` (what `scale.distribute` uses) also makes every worker
run the same number of steps: see `tfscale.data.sharding` ("files", "records"
or "slices" plan). When nothing comes between reading and batching, a source
that reads chunks of records (TFRecord shards) hands them to the batch as they
are (`Dataset.rebatch`): no per-record stage; ops after the batch run per batch
(see `transforms.apply_ops` for decoding in parts).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import tensorflow as tf

from tfscale.data import badrecords, order, service, sharding, transforms
from tfscale.data.core import AUTOTUNE, Build, Op, Source
from tfscale.data.functions import own_functions
from tfscale.data.images.ops import ImageMethods
from tfscale.data.text import TextMethods
from tfscale.errors import ConfigError
from tfscale.vocabulary import OnError

log = logging.getLogger("tfscale")

_SHARED_SEED = order.SHARED_SEED  # unseeded shuffles when every worker reads everything: all must see one order


@dataclasses.dataclass(frozen=True, eq=False)
class Pipeline(ImageMethods, TextMethods):
    """An input pipeline: chain transforms, then `dataset()` or `scale.distribute(pipeline, ...)`."""

    source: Source
    filters: tuple[Callable, ...] = ()
    ops: tuple[Op, ...] = ()
    deterministic_order: bool = False
    on_error: OnError = "raise"
    records: badrecords.BadRecords = dataclasses.field(default_factory=badrecords.BadRecords)
    shuffle_units: int | None = None
    service_options: dict | None = None
    elastic_order: bool = False
    start_records: int = 0

    def __post_init__(self):
        badrecords.check_on_error(self.on_error)

    def _with(self, **changes) -> "Pipeline":
        pipe = dataclasses.replace(self, **changes)
        if pipe.elastic_order:
            order.check(pipe)  # e.g. a cache() or service() added to an elastic pipeline
        return pipe

    def then(self, op: Op) -> "Pipeline":
        """A new pipeline with `op` appended (what every transform method does)."""
        return self._with(ops=self.ops + (op,))

    def __repr__(self) -> str:
        steps = [f"{type(f).__name__}" for f in self.filters] + [op.name for op in self.ops]
        return f"Pipeline({self.source.name}{''.join(' -> ' + s for s in steps)})"

    # ------------------------------------------------------------------ transforms (see transforms.py)

    def map(self, fn: Callable, *, vectorized: bool = False, name: str = "map") -> Pipeline:
        """Applies `fn` (TF ops) to each element in parallel (AUTOTUNE).

        Args:
            fn: a function of one element (a tuple element is passed as separate arguments).
            vectorized: `fn` gives the same result on a batch as on each element in it
                (e.g. `x / 255`); it then runs once per batch, after batching.
            name: shown in `repr` and messages.
        """
        return self.then(transforms.map_op(fn, vectorized=vectorized, name=name))

    def filter(self, predicate: Callable) -> "Pipeline":
        """Keeps the elements for which `predicate` is True."""
        return self.then(Op("filter", lambda ds, b: ds.filter(predicate), keeps_records=False, fn=predicate,
                            payload="filter"))

    def sample(self, fraction: float, seed: int = 0) -> "Pipeline":
        """Keeps a fixed pseudo-random `fraction` of the records, the same ones on every run and sharding.

        The choice hashes each record's file and position with `seed`, so it is
        made before decoding and needs no shuffle buffer.
        """
        return self._with_filter(transforms.sample_filter(fraction, seed), "sample")

    def balance(self, label: Any = None, seed: int = 0, counts: dict | None = None) -> "Pipeline":
        """Keeps records so that every class is as frequent as the rarest one (deterministic by `seed`).

        Args:
            label: how to find the class of a record: a dict key, a tuple index, a
                function, or None for the source's default ((x, y) pairs: y).
            seed: chooses which records of the frequent classes are kept.
            counts: records per class when known; else image folders know them and
                other sources are counted in one pass over the labels.
        """
        label_fn = transforms.label_getter(self.source, label)
        counts = counts or (self.source.class_counts() if label is None else None) or self._count_labels(label_fn)
        return self._with_filter(transforms.balance_filter(counts, label_fn, seed), "balance")

    def take(self, count: int) -> "Pipeline":
        """The first `count` elements (per input pipeline when distributed)."""
        return self.then(Op(f"take({count})", lambda ds, b: ds.take(count), keeps_records=False, agnostic=True))

    def skip(self, count: int) -> "Pipeline":
        """All but the first `count` elements (per input pipeline when distributed)."""
        return self.then(Op(f"skip({count})", lambda ds, b: ds.skip(count), keeps_records=False, agnostic=True))

    def cache(self, path: str | None = None) -> "Pipeline":
        """Keeps elements after the first pass: in memory, or in files at `path` (one set per worker)."""
        return self.then(Op("cache", transforms.cache_op(path), agnostic=True))

    def shuffle(self, buffer_size: int = 1024, seed: int | None = None, *, files: bool = True) -> "Pipeline":
        """Shuffles elements through a buffer, and (files=True) the order of files each epoch."""
        pipe = self._with(shuffle_units=-1 if seed is None else seed) if files else self
        return pipe.then(Op(f"shuffle({buffer_size})", lambda ds, b: ds.shuffle(
            buffer_size, seed=b.seed_for(seed), reshuffle_each_iteration=b.reshuffles()), agnostic=True,
            payload="shuffle"))

    def repeat(self, count: int | None = None) -> "Pipeline":
        """Repeats the data `count` times (forever when None)."""
        return self.then(Op(f"repeat({count})", lambda ds, b: ds.repeat(count), keeps_records=False, agnostic=True))

    def batch(self, batch_size: int, drop_remainder: bool = False) -> "Pipeline":
        """Batches elements; trailing vectorized maps run on the batches. Not for `scale.distribute`."""
        return self.then(Op(f"batch({batch_size})", transforms.batch_op(batch_size, drop_remainder),
                            keeps_records=False, payload="batch", agnostic=True, own=True))

    def deterministic(self, enabled: bool = True) -> "Pipeline":
        """Same order on every run (default off: parallel stages may reorder elements for speed)."""
        return self._with(deterministic_order=enabled)

    def elastic(self, enabled: bool = True) -> "Pipeline":
        """One order of examples for any number of workers, so a checkpoint resumes exactly on another count.

        Global batch k then holds the same records on 1 worker or 16, in every run: the order is a
        function of the shuffles' seeds and the epoch only (unseeded shuffles get one shared seed).
        `tfscale.fit` resumes such a pipeline at the exact next batch on any number of workers that
        divides the global batch. The cost: every worker reads every record's bytes (it parses and
        decodes only its own where the records per file are known, as in `tfscale data convert`
        folders and image folders; otherwise it runs the whole pipeline). See `tfscale.data.order`.

        Example:
            train = ts.data.tfrecord("shards/", label="label").shuffle(4096, seed=1).elastic()
        """
        return self._with(elastic_order=enabled)

    def starting_at(self, records: int) -> "Pipeline":
        """This elastic pipeline's first pass without its first `records` records (a resumed epoch).

        Raises:
            ConfigError: the pipeline is not elastic (its order depends on the worker count).
        """
        if not self.elastic_order:
            raise ConfigError("only an elastic pipeline can start mid-epoch: this one's order depends on the "
                              "number of workers", where=repr(self), fix="add .elastic() to the pipeline")
        return self._with(start_records=int(records))

    def errors(self, on_error: OnError) -> "Pipeline":
        """Sets how bad records are handled: "raise" (default) or "skip" (counted and reported)."""
        return self._with(on_error=badrecords.check_on_error(on_error))

    def service(self, address: str, *, processing_mode: str = "distributed_epoch",
                job_name: str | None = None) -> "Pipeline":
        """Runs this pipeline on tf.data service workers (`tfscale data serve`) at `address`.

        Example:
            train = ts.data.image_folder("photos", image_size=(96, 96)).service("grpc://10.0.0.5:5050")
        """
        return self._with(service_options=service.check_options(address, processing_mode, job_name))

    # image and text transforms: ImageMethods (images/ops.py) and TextMethods (text.py).

    # ------------------------------------------------------------------ results

    @property
    def skipped(self) -> dict[str, int]:
        """Records dropped so far by on_error="skip", by reason."""
        return self.records.counts()

    def callback(self):
        """A Keras callback that reports skipped records each epoch (logs["skipped_records"])."""
        return self.records.callback()

    def dataset(self, batch_size: int | None = None, drop_remainder: bool = False) -> tf.data.Dataset:
        """A plain `tf.data.Dataset` of the whole data (batched when `batch_size` is given), prefetched."""
        context = tf.distribute.InputContext()
        if batch_size is None:
            ds = self.dataset_for(context)
        else:
            ds = self.batched_dataset_for(context, batch_size, drop_remainder, static=True)
        return ds.prefetch(AUTOTUNE)

    def __iter__(self):
        """Iterates `dataset()`; a raise-mode bad record becomes a `DataError` naming it."""
        try:
            yield from self.dataset()
        except tf.errors.OpError as e:
            error = badrecords.as_data_error(e)
            if error is e and isinstance(e, tf.errors.InvalidArgumentError):  # e.g. a decoder's own message
                error = self.source.find_bad() or e
            raise error from None

    def dataset_for(self, input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        """Unbatched elements for one input pipeline (the `Shardable` protocol)."""
        if self.service_options:
            return service.through_service(self, input_context, None)
        build = self._build_for(input_context)
        ds = transforms.apply_ops(self._records(build), self.ops, build, self.records)
        return transforms.with_options(ds, build)

    def batched_dataset_for(self, input_context: tf.distribute.InputContext, batch_size: int,
                            drop_remainder: bool, *, static: bool = False) -> tf.data.Dataset:
        """Batches for one input pipeline, with trailing vectorized maps applied per batch.

        static=False (for `scale.distribute`) leaves the batch dimension unknown; see `transforms.batch_op`.
        """
        if any(op.payload == "batch" for op in self.ops):
            raise ConfigError("this pipeline is already batched", where=repr(self),
                              fix="remove .batch(...): dataset(batch_size=...) and scale.distribute batch it")
        if self.elastic_order and drop_remainder:
            return order.batches(self, input_context, batch_size, static=static)
        if self.service_options:
            return service.through_service(self, input_context, (batch_size, drop_remainder, static))
        build, plan = self._build_for(input_context), None
        batch = transforms.batch_op(batch_size, drop_remainder, static=static)
        if build.num_pipelines > 1 and not getattr(self.source, "shards_itself", False):
            local = max(1, input_context.num_replicas_in_sync // build.num_pipelines)
            plan = sharding.plan_for(self.source, build.num_pipelines, build.pipeline_id,
                                     countable=self._keeps_count(), batch=batch_size * local,
                                     drop_remainder=drop_remainder)
            if plan.mode == "slices":  # every worker reads everything in one order and slices each global batch
                build = dataclasses.replace(build, deterministic=True, shared_seed=_SHARED_SEED, sliced=True)
                global_batch = batch_size * input_context.num_replicas_in_sync

                def batch(ds, b):
                    return sharding.per_replica_batches(ds, input_context, global_batch, batch_size, drop_remainder)
        ops = self.ops + (Op("batch", batch, keeps_records=False, payload="batch", agnostic=True, own=True),)
        ds = self.batched_records(build, ops, plan, chunks=plan is None or plan.mode != "slices")
        records = self._records_per_pass(plan)
        if records is not None:  # re-batched parts and chunks lose the count: Keras reads steps per epoch from it
            steps = records // batch_size if drop_remainder else -(-records // batch_size)
            ds = ds.apply(tf.data.experimental.assert_cardinality(steps))
        return transforms.with_options(ds, build)

    def _records_per_pass(self, plan: sharding.Plan | None) -> int | None:
        """Records this input pipeline yields per pass when known for sure (raise mode, nothing changing the
        count, no repeat), else None."""
        if not self._keeps_count() or any(op.name.startswith("repeat(") for op in self.ops):
            return None
        if plan is not None:
            return plan.take
        counts = self.source.unit_counts()
        return sum(counts) if counts is not None else None

    def batched_records(self, build: Build, ops: tuple[Op, ...], plan: sharding.Plan | None = None, *,
                        chunks: bool = True) -> tf.data.Dataset:
        """The records through `ops`, which end in a batch op: in chunks when nothing comes before the batch.

        A source that reads chunks of records (TFRecord shards) then hands them to the batch op
        as they are, re-batched without a per-record stage (chunks=False: the batch op is not
        a plain one, e.g. slices of global batches).
        """
        chunked = chunks and transforms.batches_last(ops, build)[0].payload == "batch"
        records, chunked = self._read(build, plan, chunks=chunked)
        return transforms.apply_ops(records, ops, dataclasses.replace(build, chunked=chunked), self.records)

    @property
    def equal_steps(self) -> bool:
        """`batched_dataset_for` gives every input pipeline the same number of batches (see `sharding`)."""
        return not self.service_options and not getattr(self.source, "shards_itself", False)

    # ------------------------------------------------------------------ internals

    def _build_for(self, input_context, *, in_service: bool = False) -> Build:
        return Build(num_pipelines=input_context.num_input_pipelines, pipeline_id=input_context.input_pipeline_id,
                     deterministic=self.deterministic_order, on_error=self.on_error, records=self.records,
                     in_service=in_service, shuffle_units=self.shuffle_units)

    def _keeps_count(self) -> bool:
        """Nothing after reading changes the number of records (so known counts stay true).

        repeat() is fine: it repeats the cut records, so every worker still runs as many steps.
        """
        return not self.filters and self.on_error == "raise" and all(
            op.keeps_records or op.name.startswith("repeat(") for op in self.ops)

    def _records(self, build: Build, plan: sharding.Plan | None = None) -> tf.data.Dataset:
        """Elements after reading, sharding, parsing and the record filters (keys dropped).

        plan: for `batched_dataset_for` on several workers (see `sharding.plan_for`); None: FILE or DATA as
        in the module docstring (unbatched elements; workers may get different counts).
        """
        return self._read(build, plan, chunks=False)[0]

    def _read(self, build: Build, plan: sharding.Plan | None, *, chunks: bool) -> tuple[tf.data.Dataset, bool]:
        """(`_records`, whether they come in chunks): chunks when asked, bare and dealt by whole units."""
        units, workers, index = self.source.units, build.num_pipelines, build.pipeline_id
        # without filters or parsing nothing needs the (path, index) keys: a source that can read bare
        # elements saves a map per element that would only drop them (image folders: ~10% of a pass)
        bare = type(self.source).read_bare is not Source.read_bare and not self.source.needs_parse() \
            and not self.filters
        whole_units = plan.mode == "files" if plan is not None else (workers == 1 or getattr(
            self.source, "shards_itself", False) or (units is not None and len(units) >= workers))
        chunked = chunks and bare and whole_units and type(self.source).read_chunks is not Source.read_chunks

        def read(some_units):
            with own_functions():  # the sources' functions are tfscale's (see functions.py)
                if chunked:
                    return self.source.read_chunks(some_units, build)
                return self.source.read_bare(some_units, build) if bare else self.source.read(some_units, build)

        if plan is not None:
            ds = read(plan.units if plan.mode == "files" else units)
            ds = ds.shard(workers, index) if plan.mode == "records" else ds
        elif getattr(self.source, "shards_itself", False) or workers == 1:
            ds = read(units)
        elif units is not None and len(units) >= workers:
            log.info("%s: FILE sharding, %d of %d units for input pipeline %d", self.source.name,
                     len(units[index::workers]), len(units), index)
            ds = read(units[index::workers])
        else:
            log.info("%s: DATA sharding over %d input pipelines (%s units)", self.source.name, workers,
                     len(units) if units else "no")
            ds = read(units).shard(workers, index)
        if not bare:
            with own_functions():
                ds = self.source.parse(ds, build)
            for keep in self.filters:  # balance() may hold the user's label function
                ds = ds.filter(keep)
            with own_functions():
                ds = ds.map(lambda path, index, element: element, num_parallel_calls=AUTOTUNE,
                            deterministic=build.deterministic)
        if plan is not None and plan.take is not None:
            ds = transforms.take_records(ds, plan.take) if chunked else ds.take(plan.take)
        return ds, chunked

    def _with_filter(self, keep: Callable, what: str) -> "Pipeline":
        blocking = [op.name for op in self.ops if not op.keeps_records]
        if blocking:
            raise ConfigError(f"{what}() acts on the records as read, so it cannot come after {blocking[0]}",
                              where=repr(self), fix=f"call .{what}(...) before take/skip/filter/repeat/batch")
        return self._with(filters=self.filters + (keep,))

    def _count_labels(self, label_fn) -> dict:
        log.info("%s: counting labels for balance() (one pass over the data)", self.source.name)
        plain = self._with(ops=(), filters=(), service_options=None)
        build = plain._build_for(tf.distribute.InputContext())
        labels = plain._records(build).map(lambda *e: label_fn(e[0] if len(e) == 1 else e))
        return transforms.count_values(labels)

