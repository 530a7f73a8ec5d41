"""The image transforms of `Pipeline` (`ImageMethods`): decode_images, resize, normalize, augment; and the decode op
of converted image shards (`record_decode_op`).

Decoding is in decoding.py; resize, normalize and augment run on whole
batches when batched (per image inside them).
"""

from __future__ import annotations

import tensorflow as tf

from tfscale.data.core import Op
from tfscale.data.images.codecs import decode
from tfscale.data.images.decoding import BatchDecoder, decode_op, element_map, image_size_of, vector_map
from tfscale.errors import ConfigError


class ImageMethods:
    """Image transforms of `Pipeline` (a mixin)."""

    def decode_images(self, image_size=None, *, channels: int = 3, key=None, read_files: bool = False,
                      method: str = "bilinear", jpeg_ratio: int | None = None, check: bool = True,
                      scale: float | None = None, uniform=None):
        """Decodes image bytes (or reads and decodes files when `read_files`), optionally resizing.

        Args:
            image_size: (height, width); None keeps each image's size (uint8 then).
            channels: 1, 3 or 4.
            key: where the image is in the element: dict key or tuple index (default "image" / 0).
            read_files: the element holds file paths rather than bytes.
            method: resize method ("bilinear", "nearest", "area", "bicubic", ...).
            jpeg_ratio: only JPEG/PNG data: decode JPEGs at 1/jpeg_ratio scale (1, 2, 4 or 8).
            check: look at each image's signature and end marker first (raise: per batch,
                naming the file; skip: dropping and counting it); False for data already
                checked (converted shards).
            scale: float32 images times `scale` in the same call (as `normalize(scale)`, without a stage).
            uniform: (height, width) every image decodes to, when known: batches are resized in one op.
        """
        if channels not in (1, 3, 4):
            raise ConfigError(f"channels must be 1, 3 or 4, got {channels}", where="channels", fix="use 1, 3 or 4")
        if jpeg_ratio not in (None, 1, 2, 4, 8):
            raise ConfigError(f"jpeg_ratio must be 1, 2, 4 or 8, got {jpeg_ratio}", where="jpeg_ratio",
                              fix="leave it out, or use one of 1, 2, 4, 8")
        pipe = self
        for op in decode_op(image_size_of(image_size), channels, key, read_files, method, jpeg_ratio, check, scale,
                            tuple(uniform) if uniform else None):
            pipe = pipe.then(op)
        return pipe

    def resize(self, image_size, *, key=None, method: str = "bilinear"):
        """Resizes images to (height, width); runs on whole batches when batched (float32 result)."""
        size = image_size_of(image_size)
        fn = element_map(lambda x: tf.image.resize(x, size, method=method), key)
        return self.then(Op(f"resize({size})", vector_map(fn), vectorized=True, fn=fn, splits=True, own=True))

    def normalize(self, scale: float = 1 / 255, offset: float = 0.0, *, mean=None, std=None, key=None):
        """x * scale + offset, then (x - mean) / std per channel when given; runs on whole batches."""

        def norm(x):
            x = tf.cast(x, tf.float32) * scale + offset
            if mean is not None:
                x = x - tf.constant(mean, tf.float32)
            if std is not None:
                x = x / tf.constant(std, tf.float32)
            return x

        fn = element_map(norm, key)
        return self.then(Op("normalize", vector_map(fn), vectorized=True, fn=fn, splits=True, own=True))

    def augment(self, *, flip_left_right: bool = True, flip_up_down: bool = False, brightness: float = 0.0,
                contrast: float = 0.0, seed: int | None = None, key=None):
        """Random flips and brightness/contrast changes, drawn per image (also inside a batch)."""
        fn = element_map(lambda x: _augment(x, flip_left_right, flip_up_down, brightness, contrast, seed), key)
        return self.then(Op("augment", vector_map(fn), vectorized=True, fn=fn, splits=True, own=True))


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


def record_decode_op(layout: dict, image_size, channels: int, method: str, scale, labels: bool) -> Op:
    """Parses and decodes records of converted image shards into (image, label) (or images); vectorized.

    layout: from `dataset.json`: {"store": "raw", "image": [h, w, c]} (pixels at that size: one
    reshape per batch) or {"store": "encoded", "jpeg_ratio": r, "uniform": [h, w] | None} (file
    bytes, decoded as `BatchDecoder` does, without reading files or checking: checked when converted).
    """
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    raw = layout["store"] == "raw"
    stored = tuple(layout["image"]) if raw else None
    if raw and stored[2] != channels:
        raise ConfigError(f"these shards hold {stored[2]}-channel pixels, not {channels}", where="channels",
                          fix=f"read them with channels={stored[2]}, or convert again with --channels {channels}")
    uniform = tuple(layout["uniform"]) if layout.get("uniform") else None
    decoder = None if raw or image_size is None else BatchDecoder(image_size, channels, method, layout.get(
        "jpeg_ratio"), uniform, scale)

    def pixels(data, batched: bool):
        x = tf.reshape(tf.io.decode_raw(data, tf.uint8), [-1, *stored] if batched else list(stored))
        if image_size is not None and tuple(image_size) != stored[:2]:
            x = tf.image.resize(x, image_size, method=method)
        elif scale is None and image_size is None:
            return x
        x = tf.cast(x, tf.float32)
        return x if scale is None else x * scale

    def fn(records):
        batched = records.shape.rank == 1
        row = (tf.io.parse_example if batched else tf.io.parse_single_example)(records, spec)
        data = row["image"]
        if raw:
            images = pixels(data, batched)
        elif batched and decoder is not None:
            images = decoder.images(data, read_files=False)
        else:
            images = decode(data, channels, image_size, method, layout.get("jpeg_ratio"))
            images = images if scale is None else tf.cast(images, tf.float32) * scale
        return (images, tf.cast(row["label"], tf.int32)) if labels else images

    return Op(f"decode_records({layout['store']}, {image_size})", vector_map(fn), vectorized=True, fn=fn,
              splits=True, payload=None if raw else "decode", own=True)  # raw pixels: too little work to split
