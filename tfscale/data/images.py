"""Images: `image_folder` (one subfolder per class) and the decode/resize/normalize/augment transforms.

Decoding runs in a parallel map; a JPEG much larger than the target size is
decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling), which skips most of
the work before the resize. For an image folder of JPEG/PNG files the scale is
chosen once from the headers of a few files, so no per-image branch is needed.
Read, decode, resize and scale run in one function: with a fixed image size, one
call per batch loops over its images (a tf.data call costs about as much as
decoding a small image), and a batch of PNGs of one size (read from their
headers) is resized in one op after the loop; otherwise one call per image.
With on_error="skip" every image is checked first
(format signature, end marker) so a bad one is counted; with "raise" each batch's
signatures are checked at once before decoding, so the error names the file even
inside `model.fit` (without a fixed size, a decode failure stops the pipeline and
the bad file is then found by a scan and named).
"""

from __future__ import annotations

import collections
import functools
import logging
import os

import numpy as np
import tensorflow as tf

from tfscale.data.core import AUTOTUNE, Build, Op, Source
from tfscale.data.image_codecs import decode, head, image_ok, jpeg_ratio_for, one_png_size
from tfscale.errors import ConfigError, DataError

log = logging.getLogger("tfscale")

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_FIX = "remove or replace the file, or build the pipeline with on_error='skip'"


class ImageFolder(Source):
    """Image files under `root`, one subfolder per class (or all files, unlabeled)."""

    def __init__(self, root: str, *, class_names=None, labels: bool = True, extensions=EXTENSIONS):
        if not os.path.isdir(root):
            raise DataError(f"image folder {root!r} does not exist", where=root,
                            fix="give a folder with one subfolder of images per class")
        self.name, self.root, self.labeled = f"image_folder({root})", root, labels
        extensions = tuple(e.lower() for e in extensions)
        if labels:
            found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
            self.class_names = list(class_names) if class_names else found
            missing = sorted(set(self.class_names) - set(found))
            if missing:
                raise DataError(f"class folder(s) {missing} not found", where=root, fix=f"use names from {found}")
            pairs = [(p, i) for i, c in enumerate(self.class_names) for p in _walk(os.path.join(root, c), extensions)]
        else:
            self.class_names = []
            pairs = [(p, -1) for p in _walk(root, extensions)]
        if not pairs:
            raise DataError("no image files found", where=root,
                            fix=f"put files ending in {', '.join(extensions)} in one subfolder per class")
        self.units = tuple(p for p, _ in pairs)
        self._label = dict(pairs)

    def read(self, units, build: Build) -> tf.data.Dataset:
        return self._slices(units, build, keys=True)

    def read_bare(self, units, build: Build) -> tf.data.Dataset:
        return self._slices(units, build, keys=False)

    def _slices(self, units, build: Build, *, keys: bool) -> tf.data.Dataset:
        paths = list(units)
        element = (paths, np.asarray([self._label[p] for p in paths], np.int32)) if self.labeled else paths
        if keys:  # (path, 0, element): the index is sliced, not mapped, so no extra stage per image
            element = (paths, np.zeros(len(paths), np.int64), element)
        return build.shuffled(tf.data.Dataset.from_tensor_slices(element), len(paths))

    def unit_counts(self) -> tuple[int, ...]:
        return (1,) * len(self.units)

    def find_bad(self) -> DataError | None:
        """After a decode failure: the first file that is not a whole image (a Python scan), as a DataError."""
        from tfscale.data.convert import _looks_whole

        bad = [p for p in self.units if not _looks_whole(head(p, -1))]
        if not bad:
            return None
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        return DataError(f"bad record: corrupt or truncated image{more}", where=bad[0], fix=_FIX)

    def class_counts(self) -> dict | None:
        return dict(collections.Counter(self._label.values())) if self.labeled else None

    def label_of(self, element):
        return element[1]


def _walk(folder: str, extensions) -> list[str]:
    found = []
    for base, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        found.extend(os.path.join(base, f) for f in sorted(files) if f.lower().endswith(extensions))
    return found


def image_folder(path: str, image_size: tuple[int, int] | None = None, *, channels: int = 3, class_names=None,
                 labels: bool = True, scale: float | None = 1 / 255, same_size: bool = False,
                 extensions=EXTENSIONS, on_error: str = "raise"):
    """Images from `path/<class>/*.{jpg,png,bmp,gif}` as (image, label) elements (or images if labels=False).

    `path` may also be a folder written from an image folder by `tfscale data convert`:
    its TFRecord shards are read instead of one file per image (faster; images were
    checked when converted, and the reader checks each record's CRC).

    Args:
        path: folder with one subfolder per class; subfolders sorted give labels 0, 1, ...
        image_size: (height, width) to resize to; None keeps each image's own size.
        channels: 1 (grey), 3 (RGB) or 4.
        class_names: the class subfolders to use, in label order (default: all, sorted).
        labels: False for a folder of unlabeled images.
        scale: images are float32 times `scale` (default 1/255: values in [0, 1]); None: 0..255.
        same_size: all files have one size: resize whole batches after batching (faster).
        extensions: file name endings to read.
        on_error: "raise" names a corrupt file; "skip" drops, counts and reports it.

    Example:
        train = ts.data.image_folder("photos/train", image_size=(96, 96)).sample(0.1, seed=1)
    """
    from tfscale.data.pipeline import Pipeline
    from tfscale.data.tfrecord import read_meta, tfrecord

    decode_size = None if same_size else _size(image_size)
    # scaling in the decode map costs one op per image; a separate map after batching costs a stage and a copy
    fold = scale if not (same_size and image_size) else None
    meta = read_meta(path) if os.path.isdir(path) else None
    if meta and meta.get("kind") == "images":  # written by `tfscale data convert`: checked then, CRCs now
        pipe = tfrecord(path, on_error=on_error).map(
            lambda f, y: (f["image"], tf.cast(y, tf.int32)) if labels else f["image"], name="image, label")
        samples = [(e[0] if labels else e).numpy() for e in pipe.take(16).dataset()]
        ratio = jpeg_ratio_for(samples, _size(image_size))
        pipe = pipe.decode_images(decode_size, channels=channels, jpeg_ratio=ratio, check=False, scale=fold)
    else:
        source = ImageFolder(path, class_names=class_names, labels=labels, extensions=extensions)
        ratio = jpeg_ratio_for([head(p) for p in source.units[:: max(1, len(source.units) // 16)][:16]],
                               _size(image_size), all_names=source.units)
        pipe = Pipeline(source, on_error=on_error)
        pipe = pipe.decode_images(decode_size, channels=channels, read_files=True, jpeg_ratio=ratio, scale=fold)
    if same_size and image_size:
        pipe = pipe.resize(image_size)
    return pipe.normalize(scale=scale) if scale is not None and fold is None else pipe


# --------------------------------------------------------------------------- element access


def _get(element, key):
    if isinstance(element, dict):
        return element[key if key is not None else "image"]
    if isinstance(element, tuple):
        return element[key if key is not None else 0]
    return element


def _put(element, key, value):
    if isinstance(element, dict):
        return {**element, key if key is not None else "image": value}
    if isinstance(element, tuple):
        i = key if key is not None else 0
        return element[:i] + (value,) + element[i + 1:]
    return value


def _element_map(fn, key):
    """A map function for tf.data (tuples arrive as arguments) applying `fn` to the image in the element."""

    def mapped(*args):
        element = args if len(args) > 1 else args[0]
        return _put(element, key, fn(_get(element, key)))

    return mapped


_CHECK_BATCH = 32


def _decode_op(image_size, channels: int, key, read_files: bool, method: str, jpeg_ratio=None,
               check: bool = True, scale: float | None = None) -> Op:
    """Reads (if paths) and decodes images (times `scale` when given) in one map per image.

    Resized to a fixed size in raise mode, the op runs after batching: one tf.data
    call per batch checks its images' signatures at once (a bad one fails naming
    the file) and decodes them in a loop (a tf.data call per image costs more than
    decoding a small one).

    In skip mode files are checked first, 32 at a time (cheaper than one by one), so
    bad ones are counted; in raise mode without a fixed size a decode failure stops
    the pipeline and `Pipeline.__iter__` names the file by a scan (`Source.find_bad`).
    """
    def decode_item(contents, element):
        image = decode(contents, channels, image_size, method, jpeg_ratio)
        return _put(element, key, image if scale is None else tf.cast(image, tf.float32) * scale)

    def decode_batch(*args, build: Build):  # a batch of paths or bytes: one tf.data call, loops inside it
        element = args if len(args) > 1 else args[0]
        items = _get(element, key)
        contents = tf.map_fn(tf.io.read_file, items, parallel_iterations=1) if read_files else items
        factor, checked = None if scale is None else tf.constant(scale, tf.float32), tf.constant(True)
        if check:  # the whole batch's signatures at once, before decoding: a bad file is named even in fit
            where = items if read_files else tf.fill(tf.shape(items), "image bytes in a record")
            checked = tf.reduce_all(build.guard(image_ok(contents), "corrupt or truncated image", where, _FIX))
            # the loops below take the check's result as an input (1.0 times scale), so they wait for it
            factor = tf.cast(checked, tf.float32) * (1.0 if scale is None else scale)

        def one(item):
            image = decode(item, channels, image_size, method, jpeg_ratio)
            return image if factor is None else image * factor

        def each_resized():
            return tf.map_fn(one, contents, parallel_iterations=1,
                             fn_output_signature=tf.TensorSpec([*image_size, channels], tf.float32))

        def resized_at_once():  # PNGs of one size: decode in the loop, resize the whole batch in one op
            raw = tf.map_fn(lambda item: decode(item, channels, None, method, jpeg_ratio), contents,
                            parallel_iterations=1, fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8))
            images = tf.cast(tf.image.resize(raw, image_size, method=method), tf.float32)
            return images if factor is None else images * factor

        if jpeg_ratio not in (None, 1):  # JPEGs decoded at a smaller scale: each image's own size
            return _put(element, key, each_resized())
        # the branch is picked after the check (the predicate needs it), so a bad file is still named first
        images = tf.cond(tf.logical_and(checked, one_png_size(contents)), resized_at_once, each_resized)
        return _put(element, key, images)

    def batchable(build: Build) -> bool:
        return image_size is not None and build.on_error == "raise"

    def apply(ds, build: Build):
        skip = build.on_error == "skip"
        par = dict(num_parallel_calls=AUTOTUNE, deterministic=build.deterministic)
        if batchable(build) and _get(ds.element_spec, key).shape.rank == 1:  # batched first (batches_last)
            return ds.map(functools.partial(decode_batch, build=build), **par)

        def read(*args):
            element = args if len(args) > 1 else args[0]
            item = _get(element, key)
            if read_files:
                return tf.io.read_file(item), item, element
            return item, tf.fill(tf.shape(item), "image bytes in a record"), element

        if not (check and skip):  # one map per image; raise mode names a bad file afterwards (find_bad)
            ds = ds.map(lambda *args: decode_item(*read(*args)[::2]), **par)
            return ds.ignore_errors(log_warning=True) if skip else ds

        def check_one(contents, where, element):
            return build.guard(image_ok(contents), "corrupt or truncated image", where, _FIX), contents, element

        ds = ds.map(read, **par)
        if read_files:  # elements are (path, label): fixed shapes, so they batch
            count = tf.get_static_value(ds.cardinality())
            ds = ds.batch(_CHECK_BATCH, **par).map(check_one, **par).unbatch()
            if count is not None and count >= 0 and not build.in_service:  # unbatch() forgets it; Keras uses it
                # to end epochs quietly (a tf.data service splits the files over its workers: no fixed count)
                ds = ds.apply(tf.data.experimental.assert_cardinality(count))
        else:
            ds = ds.map(check_one, **par)
        ds = ds.filter(lambda keep, contents, element: keep).map(lambda keep, c, e: decode_item(c, e), **par)
        return ds.ignore_errors(log_warning=True)

    return Op(f"decode_images({image_size}{f', jpeg 1/{jpeg_ratio}' if jpeg_ratio else ''})", apply,
              vectorized=batchable)


class ImageMethods:
    """Image transforms of `Pipeline` (a mixin)."""

    def decode_images(self, image_size=None, *, channels: int = 3, key=None, read_files: bool = False,
                      method: str = "bilinear", jpeg_ratio: int | None = None, check: bool = True,
                      scale: float | None = None):
        """Decodes image bytes (or reads and decodes files when `read_files`), optionally resizing.

        Args:
            image_size: (height, width); None keeps each image's size (uint8 then).
            channels: 1, 3 or 4.
            key: where the image is in the element: dict key or tuple index (default "image" / 0).
            read_files: the element holds file paths rather than bytes.
            method: resize method ("bilinear", "nearest", "area", "bicubic", ...).
            jpeg_ratio: only JPEG/PNG data: decode JPEGs at 1/jpeg_ratio scale (1, 2, 4 or 8).
            check: in skip mode, look at each image's signature and end marker first, so a bad
                one is counted; False for data already checked (converted shards). Raise mode
                decodes directly (fast) and names a bad file after the failure.
            scale: float32 images times `scale` in the same map (as `normalize(scale)`, without a stage).
        """
        if channels not in (1, 3, 4):
            raise ConfigError(f"channels must be 1, 3 or 4, got {channels}", where="channels", fix="use 1, 3 or 4")
        if jpeg_ratio not in (None, 1, 2, 4, 8):
            raise ConfigError(f"jpeg_ratio must be 1, 2, 4 or 8, got {jpeg_ratio}", where="jpeg_ratio",
                              fix="leave it out, or use one of 1, 2, 4, 8")
        return self.then(_decode_op(_size(image_size), channels, key, read_files, method, jpeg_ratio, check,
                                    scale))

    def resize(self, image_size, *, key=None, method: str = "bilinear"):
        """Resizes images to (height, width); runs on whole batches when batched (float32 result)."""
        size = _size(image_size)
        fn = _element_map(lambda x: tf.image.resize(x, size, method=method), key)
        return self.then(Op(f"resize({size})", _vector_map(fn), vectorized=True))

    def normalize(self, scale: float = 1 / 255, offset: float = 0.0, *, mean=None, std=None, key=None):
        """x * scale + offset, then (x - mean) / std per channel when given; runs on whole batches."""

        def norm(x):
            x = tf.cast(x, tf.float32) * scale + offset
            if mean is not None:
                x = x - tf.constant(mean, tf.float32)
            if std is not None:
                x = x / tf.constant(std, tf.float32)
            return x

        return self.then(Op("normalize", _vector_map(_element_map(norm, key)), vectorized=True))

    def augment(self, *, flip_left_right: bool = True, flip_up_down: bool = False, brightness: float = 0.0,
                contrast: float = 0.0, seed: int | None = None, key=None):
        """Random flips and brightness/contrast changes, drawn per image (also inside a batch)."""
        fn = _element_map(lambda x: _augment(x, flip_left_right, flip_up_down, brightness, contrast, seed), key)
        return self.then(Op("augment", _vector_map(fn), vectorized=True))


def _vector_map(fn):
    return lambda ds, build: ds.map(fn, num_parallel_calls=AUTOTUNE, deterministic=build.deterministic)


def _size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if len(image_size) != 2 or min(image_size) < 1:
        raise ConfigError(f"image_size must be (height, width), got {image_size!r}", where="image_size",
                          fix="give two positive numbers, e.g. (96, 96)")
    return tuple(int(s) for s in image_size)


def _augment(x, flip_lr: bool, flip_ud: bool, brightness: float, contrast: float, seed):
    single = x.shape.rank == 3
    x = tf.cast(x[None] if single else x, tf.float32)
    n = tf.shape(x)[0]

    def coin(salt):
        return tf.random.uniform([n, 1, 1, 1], seed=None if seed is None else seed + salt) < 0.5

    if flip_lr:
        x = tf.where(coin(1), tf.reverse(x, [2]), x)
    if flip_ud:
        x = tf.where(coin(2), tf.reverse(x, [1]), x)
    if brightness:
        x = x + tf.random.uniform([n, 1, 1, 1], -brightness, brightness, seed=None if seed is None else seed + 3)
    if contrast:
        factor = tf.random.uniform([n, 1, 1, 1], 1 - contrast, 1 + contrast, seed=None if seed is None else seed + 4)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * factor + mean
    return x[0] if single else x
