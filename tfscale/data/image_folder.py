"""`image_folder`: images from one subfolder per class, or from the shards `tfscale data convert` wrote of them.

Files: a folder of JPEG/PNG files decodes JPEGs much larger than the target at
1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, chosen once from a few headers),
and when every file decodes to one size (read from all the headers when the
pipeline is built, stopping at the first that differs) whole batches are
resized in one op. Reading, checking and decoding run once per batch
(`images.ops`); a bad file is named ("raise") or dropped and counted ("skip").

Shards: a converted folder is read in large sequential chunks and decoded per
batch: raw pixels (`--store raw`) need only a reshape, file bytes the same
decoding as the files (so the pixels are the same).
"""

from __future__ import annotations

import logging
import os
import time

from tfscale.data.images.codecs import head, jpeg_ratio_for, one_decoded_size
from tfscale.data.images.files import EXTENSIONS, ImageFolder
from tfscale.data.images.decoding import image_size_of
from tfscale.data.images.ops import record_decode_op
from tfscale.data.pipeline import Pipeline
from tfscale.data.records.files import ImageShards
from tfscale.data.records.format import read_meta
from tfscale.vocabulary import OnError

log = logging.getLogger("tfscale")

__all__ = ["EXTENSIONS", "ImageFolder", "image_folder"]


def image_folder(path: str, image_size: tuple[int, int] | None = None, *, channels: int = 3, class_names=None,
                 labels: bool = True, scale: float | None = 1 / 255, same_size: bool = False,
                 extensions=EXTENSIONS, on_error: OnError = "raise") -> Pipeline:
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
        same_size: all files decode to one size: skip reading their headers to find out.
        extensions: file name endings to read.
        on_error: "raise" names a corrupt file; "skip" drops, counts and reports it.

    Example:
        train = ts.data.image_folder("photos/train", image_size=(96, 96)).sample(0.1, seed=1)
    """
    size = image_size_of(image_size)
    meta = read_meta(path) if os.path.isdir(path) else None
    if meta and meta.get("kind") == "images":  # written by `tfscale data convert`: checked then, CRCs now
        layout = shard_layout(meta, size)
        pipe = Pipeline(ImageShards(path, meta), on_error=on_error)
        return pipe.then(record_decode_op(layout, size, channels, "bilinear", scale, labels))
    source = ImageFolder(path, class_names=class_names, labels=labels, extensions=extensions)
    sampled = source.units[:: max(1, len(source.units) // 16)][:16]
    ratio = jpeg_ratio_for([head(p) for p in sampled], size, all_names=source.units)
    if size is not None and ratio is not None:
        started = time.perf_counter()
        source.uniform = one_decoded_size(source.units[:1] if same_size else source.units, ratio)
        log.info("%s: %s (headers read in %.2f s)", source.name, f"every image decodes to {source.uniform}: "
                 "batches are resized at once" if source.uniform else "images of several sizes: resized one by "
                 "one", time.perf_counter() - started)
    pipe = Pipeline(source, on_error=on_error)
    pipe = pipe.decode_images(size, channels=channels, read_files=True, jpeg_ratio=ratio,
                              scale=scale if size else None, uniform=source.uniform)
    return pipe.normalize(scale=scale) if scale is not None and size is None else pipe


def shard_layout(meta: dict, image_size) -> dict:
    """How converted image records are stored and decoded: raw pixels, or file bytes (JPEG scale, one size)."""
    store = meta.get("store", "encoded")
    if store == "raw":
        return {"store": "raw", "image": meta["image"]}
    images = meta.get("images") or {}
    formats, size, least = set(images.get("formats") or ()), images.get("size"), images.get("min_size")
    if not formats or not formats <= {"png", "jpeg"}:
        return {"store": "encoded", "jpeg_ratio": None, "uniform": None}
    ratio = 1
    if image_size is not None and "jpeg" in formats and least:
        smallest = min(least[0] // image_size[0], least[1] // image_size[1])
        ratio = max([r for r in (1, 2, 4, 8) if r <= smallest], default=1)
    uniform = None
    if size and (formats == {"png"} or ratio == 1):
        uniform = list(size)
    elif size and formats == {"jpeg"}:
        uniform = [-(-size[0] // ratio), -(-size[1] // ratio)]
    return {"store": "encoded", "jpeg_ratio": ratio, "uniform": uniform}
