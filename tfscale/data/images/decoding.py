"""Image decoding ops: files or bytes to batches of float images (`BatchDecoder`), checked.

Decoding a fixed-size batch costs what its images cost, not what tf.data's calls
cost: a tf.data function call, a `tf.map_fn` step or a `tf.cond` each cost tens of
microseconds here, about as much as decoding a small image (see DESIGN.md, Data).
So a batch is decoded by one call whose loop takes `GRANULE` images a step, each
image one read op and one decode op, with no branch:

- raise mode: the granule's files are read, their signatures checked at once (a bad
  one fails the call naming the file, even inside `model.fit`), then decoded; an image
  whose header claims more than `images.codecs.MAX_PIXELS` (a decompression bomb) fails
  the same check, so it is never decoded;
- skip mode: the same loop decodes a stand-in for a bad image, which is then left out
  and counted once per call (no branch, no Python call); the parts of a batch are joined
  into whole batches again (where workers slice global batches, files are checked 64 at
  a time before batching instead, so all workers keep equal steps). An image that passes
  the checks but will not decode (a corrupt pixel stream) fails its part's call: only that
  part is then decoded again one image at a time (`retried`), so the image is counted and
  named and the good ones beside it arrive; clean data never takes that path;
- images of one decoded size (known from the files' headers, `images.codecs`) are
  stacked and resized in one op; others are resized one by one;
- without a fixed size, raise mode decodes each image in a call of its own, and skip
  mode decodes unbatched images in parts of GRANULE all the same, each image kept at
  its size and `held` in a scalar so that a part's images stack (`images.fallback`).
"""

from __future__ import annotations

import tensorflow as tf

from tfscale.data.badrecords import SKIP_PART, after, gate
from tfscale.data.core import Build, Op
from tfscale.data.images.codecs import TOO_LARGE, decode, image_ok, size_ok
from tfscale.data.images.fallback import (FIX_RESIZED, RESIZED, UNDECODABLE, Verdict, held,
                                         one_at_a_time, retried, unheld)
from tfscale.errors import ConfigError

GRANULE = 16  # images per loop step of a batch decode: the step costs ~20 us, an image 40-150 us
_CHECK_CHUNK = 64  # files read and checked per call in skip mode
_FIX = "remove or replace the file, or build the pipeline with on_error='skip'"
_CORRUPT = "corrupt or truncated image"
_FIX_LARGE = "shrink or remove the file (it was not decoded), or build the pipeline with on_error='skip'"
_IN_RECORD = "image bytes in a record"
# skip mode's reasons and fixes, in `Verdict` order (a verdict v > 0 is REASONS[v - 1])
REASONS = (_CORRUPT, TOO_LARGE, UNDECODABLE, RESIZED)
FIXES = (_FIX, _FIX_LARGE, _FIX, FIX_RESIZED)


# --------------------------------------------------------------------------- element access


def get_image(element, key):
    if isinstance(element, dict):
        return element[key if key is not None else "image"]
    if isinstance(element, tuple):
        return element[key if key is not None else 0]
    return element


def put_image(element, key, value):
    if isinstance(element, dict):
        return {**element, key if key is not None else "image": value}
    if isinstance(element, tuple):
        i = key if key is not None else 0
        return element[:i] + (value,) + element[i + 1:]
    return value


def element_map(fn, key):
    """A map function for tf.data (tuples arrive as arguments) applying `fn` to the image in the element."""

    def mapped(*args):
        element = args if len(args) > 1 else args[0]
        return put_image(element, key, fn(get_image(element, key)))

    return mapped


def _element(args):
    return args if len(args) > 1 else args[0]


def verdict(contents: tf.Tensor) -> tf.Tensor:
    """Per image, a `Verdict`: GOOD, CORRUPT (not a whole image, `image_ok`) or TOO_LARGE (`size_ok`)."""
    return tf.where(image_ok(contents), tf.where(size_ok(contents), int(Verdict.GOOD), int(Verdict.TOO_LARGE)),
                    int(Verdict.CORRUPT))


def checked_bytes(build: Build, contents: tf.Tensor, where: tf.Tensor) -> tf.Tensor:
    """Both checks of image bytes through `build.guard`; True where an image may be decoded.

    A file both truncated and claiming too many pixels counts once, as corrupt.
    """
    whole = image_ok(contents)
    small = tf.logical_or(size_ok(contents), tf.logical_not(whole))
    return tf.logical_and(build.guard(whole, _CORRUPT, where, _FIX), build.guard(small, TOO_LARGE, where, _FIX_LARGE))


# --------------------------------------------------------------------------- batch decoding


def _granules(items: tf.Tensor, width: int = GRANULE) -> tuple[tf.Tensor, tf.Tensor]:
    """items [n] as [k, width], the last row padded with the first item (decoded again, then left out); and n."""
    n = tf.size(items)
    k = (n + width - 1) // width
    first = tf.concat([items, tf.constant([""])], 0)[0]
    padded = tf.concat([items, tf.fill([k * width - n], first)], 0)
    return tf.reshape(padded, [k, width]), n


def read_all(paths: tf.Tensor) -> tf.Tensor:
    """The bytes of each file in `paths` (a vector), GRANULE reads per loop step."""

    def step(granule):
        return tf.stack([tf.io.read_file(p) for p in tf.unstack(granule, num=GRANULE)])

    granules, n = _granules(paths)
    out = tf.map_fn(step, granules, parallel_iterations=1, fn_output_signature=tf.TensorSpec([GRANULE], tf.string))
    return tf.reshape(out, [-1])[:n]


class BatchDecoder:
    """Decodes a batch of image files or bytes in one call (see the module docstring).

    Args:
        image_size: (height, width) to resize to; None: each image keeps its size (skip mode's parts without a
            fixed size): a call gives a vector of scalars, each an image `held` (uint8, not scaled).
        channels: 1, 3 or 4.
        method: resize method.
        jpeg_ratio: JPEG/PNG data, JPEGs decoded at 1/jpeg_ratio scale; None for other formats.
        uniform: the (height, width) every image decodes to, when one; they are then resized at once.
        scale: float32 images times `scale`; None keeps 0..255.
    """

    def __init__(self, image_size, channels: int, method: str, jpeg_ratio, uniform, scale):
        self.image_size, self.channels, self.method = image_size, channels, method
        self.jpeg_ratio, self.uniform, self.scale = jpeg_ratio, uniform, scale
        with tf.init_scope():  # decoded in place of a bad image (skip mode), then left out: no branch needed
            self.stand_in = tf.io.encode_png(tf.zeros([*(uniform or (1, 1)), channels], tf.uint8)).numpy()

    def decode_one(self, contents):
        if self.image_size is None:  # any size: held in a scalar, so that the images of a call stack
            return held(decode(contents, self.channels, None, self.method, self.jpeg_ratio))
        if self.uniform:  # decoded only: the batch is resized at once
            image = decode(contents, self.channels, None, self.method, self.jpeg_ratio)
            return tf.ensure_shape(image, [*self.uniform, self.channels])
        return decode(contents, self.channels, self.image_size, self.method, self.jpeg_ratio)

    def part_spec(self, width: int = GRANULE) -> tf.TensorSpec:
        if self.image_size is None:
            return tf.TensorSpec([width], tf.variant)
        if self.uniform:
            return tf.TensorSpec([width, *self.uniform, self.channels], tf.uint8)
        return tf.TensorSpec([width, *self.image_size, self.channels], tf.float32)

    def empty(self) -> tf.Tensor:
        """No image, as a call gives them."""
        if self.image_size is None:  # no zeros of a variant: none of one
            return tf.stack([held(tf.zeros([0, 0, self.channels], tf.uint8))])[:0]
        spec = self.part_spec()
        return tf.zeros([0, *spec.shape[1:]], spec.dtype)

    def images(self, items: tf.Tensor, *, read_files: bool, check=None, skip: bool = False):
        """[n, height, width, channels] float32 images of `items` (paths when read_files, else bytes); without a
        fixed size [n] scalars, each an image `held`.

        check: None, or a function (contents, items of a loop step) -> the guard's result: a bad
        image fails the call with the check's message (the granule is decoded only after it); with
        skip=True, a function giving each image's `verdict` (0: good): a bad one is decoded as a
        stand-in and left out, and (images, verdicts [n]) is returned.
        """

        # a loop step takes GRANULE images, or all of them when fewer are known to come (parts of one: no padding)
        width = min(items.shape[0] or GRANULE, GRANULE)

        def step(granule):
            contents = tf.stack([tf.io.read_file(p) for p in tf.unstack(granule, num=width)]) if read_files \
                else granule
            found = tf.zeros([width], tf.int32)
            if check is not None and skip:
                found = check(contents, granule)
                contents = tf.where(tf.equal(found, 0), contents, self.stand_in)
            elif check is not None:  # the bytes pass through the check's result, so decoding waits for it
                contents = gate(contents, tf.reduce_all(check(contents, granule)))
            return tf.stack([self.decode_one(c) for c in tf.unstack(contents, num=width)]), found

        granules, n = _granules(items, width)
        out, found = tf.map_fn(step, granules, parallel_iterations=1,
                               fn_output_signature=(self.part_spec(width), tf.TensorSpec([width], tf.int32)))
        out, found = tf.reshape(out, tf.concat([[-1], tf.shape(out)[2:]], 0))[:n], tf.reshape(found, [-1])[:n]
        if skip:  # before resizing, when one size: the smaller copy (dynamic_partition: one op, few to instantiate)
            out = tf.dynamic_partition(out, tf.cast(found > 0, tf.int32), 2)[0]
        out = self.finished(out)
        return (out, found) if skip else out

    def finished(self, out: tf.Tensor) -> tf.Tensor:
        if self.image_size is None:  # any size: held, made images one by one (`_Decoding.dense`)
            return out
        out = tf.cast(out, tf.float32)
        if self.uniform:  # scaled first (resizing is linear): the multiply runs on the smaller images
            return tf.image.resize(out if self.scale is None else out * self.scale, self.image_size, method=self.method)
        return out if self.scale is None else out * self.scale


def decode_op(image_size, channels: int, key, read_files: bool, method: str, jpeg_ratio=None,
              check: bool = True, scale: float | None = None, uniform=None) -> tuple[Op, ...]:
    """The op(s) that read (if paths) and decode images; see `ImageMethods.decode_images`.

    With a fixed size the decode op is vectorized: it runs after batching, one call per
    batch or part of one (`BatchDecoder`). Skip mode drops the bad images of a batch in
    that call (the parts are joined into whole batches again, see `transforms.apply_ops`),
    except where every worker slices global batches: there a check op drops them before
    batching, so all workers keep equal steps. Without a fixed size: one call per image.
    """
    decoding = _Decoding(image_size, channels, key, read_files, method, jpeg_ratio, check, scale, uniform)
    name = f"decode_images({image_size}{f', jpeg 1/{jpeg_ratio}' if jpeg_ratio else ''})"
    batched = decoding.batched
    op = Op(name, decoding.apply, vectorized=batched, carry=decoding.carry if batched else None,
            payload="decode", splits=True, own=True)
    if not batched or not check:
        return (op,)
    # only where workers slice global batches in skip mode: a check before batching (else a no-op)
    return Op("check_images", _check_op(key, read_files), vectorized=lambda b: not _checks_first(b),
              agnostic=True, splits=True, own=True), op


def _checks_first(build: Build) -> bool:
    return build.on_error == "skip" and build.sliced and not build.carry


class _Decoding:
    """The decode op's steps for one `decode_images` call (batched, one by one, on a tf.data service)."""

    def __init__(self, image_size, channels, key, read_files, method, jpeg_ratio, check, scale, uniform):
        self.batched = image_size is not None  # else a call per image (skip mode: in parts all the same, `apply`)
        self.decoder = BatchDecoder(image_size, channels, method, jpeg_ratio, uniform if self.batched else None, scale)
        self.image_size, self.channels, self.key, self.read_files = image_size, channels, key, read_files
        self.method, self.jpeg_ratio, self.check, self.scale = method, jpeg_ratio, check, scale

    def where_of(self, items, reads: bool):
        return items if reads else tf.fill(tf.shape(items), _IN_RECORD)

    def marked(self, element, reads: bool, checks: bool, whole: bool = True):
        """(element decoded, bad images left out; the bad images' keys; their `verdict` codes).

        whole=False: decoded one image at a time (`images.fallback.one_at_a_time`), for a part whose
        whole call failed. No stateful op here: one in a decode call (a table insert, even a print) cost
        13-17 us an image in a 16-image call when measured here, so the bad ones are counted by a small
        stage after it (`noted`)."""
        items = get_image(element, self.key)
        if whole:
            check = (lambda contents, _: verdict(contents)) if checks else None
            images, found = self.decoder.images(items, read_files=reads, check=check, skip=True)
        else:
            images, found = one_at_a_time(self.decoder, items, read_files=reads, check=verdict if checks else None)
        bad = tf.cast(found > 0, tf.int32)

        def split(t):  # (good, bad)
            return tf.dynamic_partition(t, bad, 2)

        rest = tf.nest.map_structure(lambda t: split(t)[0], put_image(element, self.key, ()))
        return put_image(rest, self.key, images), split(self.where_of(items, reads))[1], split(found)[1]

    @staticmethod
    def noted(build: Build):
        """The stage after `marked`: counts the bad images (one table insert), (element, keys, codes) -> element."""

        def note(element, keys, codes):
            done = build.count_codes(keys, codes, REASONS, FIXES)
            return tf.nest.map_structure(lambda t: after(t, done), element)

        return note

    def batch_call(self, element, build: Build, reads: bool, checks: bool):
        def guard(contents, granule):
            return checked_bytes(build, contents, self.where_of(granule, reads))

        images = self.decoder.images(get_image(element, self.key), read_files=reads, check=guard if checks else None)
        return put_image(element, self.key, images)

    def one_by_one(self, ds, build: Build, reads: bool, par: dict):
        """Raise mode without a fixed size, or unbatched: a call per image, which checks the size its header
        claims; a file that will not decode is named after the failure (`Source.find_bad`). (Skip mode comes
        here only for elements that are already batches without a fixed size, which no call decodes.)"""

        def read(*args):
            item = get_image(_element(args), self.key)
            contents, where = (tf.io.read_file(item) if reads else item), self.where_of(item, reads)
            if self.check and build.on_error == "raise":  # a decompression bomb is never decoded
                contents = gate(contents, build.guard(size_ok(contents), TOO_LARGE, where, _FIX_LARGE))
            return contents, where, _element(args)

        def decoded(contents, where, element):
            image = decode(contents, self.channels, self.image_size, self.method, self.jpeg_ratio)
            image = image if self.scale is None else tf.cast(image, tf.float32) * self.scale
            return put_image(element, self.key, image)

        ds = ds.map(read, **par)
        if self.check and build.on_error == "skip":
            ds = ds.filter(lambda contents, where, element: checked_bytes(build, contents, where))
        ds = ds.map(decoded, **par)
        return ds.ignore_errors(log_warning=True) if build.on_error == "skip" else ds

    def apply(self, ds, build: Build):
        checked_before = self.check and self.batched and _checks_first(build)  # by the check op (see decode_op)
        reads = self.read_files and not checked_before
        checks = self.check and not checked_before
        par = build.map_options
        rank = get_image(ds.element_spec, self.key).shape.rank
        if rank == 0 and build.on_error == "skip":
            # unbatched: decoded in parts all the same, so an image that will not decode is counted and named
            # too; without a fixed size each image of a part comes `held` in a scalar, made an image again after
            part = self.part_length(ds.element_spec)
            ds = self.skipping(ds.batch(part, drop_remainder=part == 1), build, reads, checks)  # 1: a static length
            if part > 1:
                ds = ds.unbatch()
                return ds if self.batched else ds.map(element_map(self.dense, self.key), **par)
            # parts of one: the part left empty is filtered out (tf.data 2.21's unbatch crashes on an empty component)
            ds = ds.filter(lambda *a: tf.shape(get_image(_element(a), self.key))[0] > 0)
            return ds.map(lambda *a: self.one_of_part(_element(a)), **par)
        if not self.batched or rank != 1:  # not batched
            return self.one_by_one(ds, build, reads, par)
        if build.on_error == "raise":
            return ds.map(lambda *a: self.batch_call(_element(a), build, reads, checks), **par)
        return self.skipping(ds, build, reads, checks)

    def part_length(self, spec) -> int:
        """Images a part takes when skip mode decodes unbatched elements in parts: `SKIP_PART`; without a fixed size
        GRANULE, one loop step (images kept at their own size: parts of 64 cost 1-7 % less CPU an image here, but
        1600x1200 JPEGs took +620 MB instead of +340 MB over a decode per image, on 2 cores); 1 where another part
        of the element varies in shape (tf.data batches none of them) or is empty (tf.data 2.21's unbatch
        crashes on one, a segmentation fault)."""
        rest = tf.nest.flatten(put_image(spec, self.key, ()))
        if not all(isinstance(s, tf.TensorSpec) and s.shape.is_fully_defined() and s.shape.num_elements()
                   for s in rest):
            return 1
        return SKIP_PART if self.batched else GRANULE

    def one_of_part(self, element):
        """The element of a part of one (any size: made an image)."""
        element = tf.nest.map_structure(lambda t: t[0], element)
        return element if self.batched else put_image(element, self.key, self.dense(get_image(element, self.key)))

    def skipping(self, ds, build: Build, reads: bool, checks: bool):
        """Skip mode on parts of a batch (vectors of items): an image that passes the checks but will not decode
        (a corrupt pixel stream) fails its part's call, and that part alone is decoded again one image at a time
        (`retried`), so the good images beside it arrive; the bad ones are counted after (`noted`)."""
        ds = retried(ds, lambda *a: self.marked(_element(a), reads, checks),
                     lambda *a: self.marked(_element(a), reads, checks, whole=False), build.deterministic)
        return ds.map(self.noted(build))

    def dense(self, scalar: tf.Tensor) -> tf.Tensor:
        """An image of a part without a fixed size, `held` in a scalar, as a tensor (scaled)."""
        image = unheld(scalar, self.channels)
        return image if self.scale is None else tf.cast(image, tf.float32) * self.scale

    def carry(self, ds, build: Build):
        """On a tf.data service in skip mode: (batch, dropped) in and out, bad images left out here."""
        reads = self.read_files

        def counted(element, keys, codes, dropped):
            return self.noted(build)(element, keys, codes), dropped + tf.size(keys, out_type=tf.int64)

        ds = retried(ds, lambda element, dropped: (*self.marked(element, reads, self.check), dropped),
                     lambda element, dropped: (*self.marked(element, reads, self.check, whole=False), dropped),
                     build.deterministic)
        return ds.map(counted)


def _check_op(key, read_files: bool):
    """Skip mode where every worker slices global batches: reads files (if paths) and checks them 64 at a
    time before batching, dropping the bad ones; elements then hold the bytes instead of the path."""

    def apply(ds, build: Build):
        if not _checks_first(build):
            return ds
        def check(*args):
            element = _element(args)
            items = get_image(element, key)
            contents = read_all(items) if read_files else items
            where = items if read_files else tf.fill(tf.shape(items), _IN_RECORD)
            keep = checked_bytes(build, contents, where)
            return tf.nest.map_structure(lambda t: tf.boolean_mask(t, keep), put_image(element, key, contents))

        return build.in_batches(ds, check, _CHECK_CHUNK)

    return apply


def vector_map(fn):
    return lambda ds, build: ds.map(fn, **build.map_options)


def image_size_of(image_size):
    """(height, width) from an int or a pair; None stays None."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if len(image_size) != 2 or min(image_size) < 1:
        raise ConfigError(f"image_size must be (height, width), got {image_size!r}", where="image_size",
                          fix="give two positive numbers, e.g. (96, 96)")
    return tuple(int(s) for s in image_size)
