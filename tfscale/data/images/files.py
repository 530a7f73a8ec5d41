"""The image folder source: one file per image under one subfolder per class, labelled by sorted folder name."""

from __future__ import annotations

import collections
import logging
import os

import numpy as np
import tensorflow as tf

from tfscale.data.core import Build, Source
from tfscale.data.images.codecs import MAX_PIXELS, head, header_size, looks_whole, too_large
from tfscale.errors import DataError

log = logging.getLogger("tfscale")

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
FIX = "remove or replace the file, or build the pipeline with on_error='skip'"


class ImageFolder(Source):
    """Image files under `root`, one subfolder per class (or all files, unlabeled).

    Elements are (path, label), or paths when unlabeled; a decode op reads them.
    """

    def __init__(self, root: str, *, class_names=None, labels: bool = True, extensions=EXTENSIONS):
        if not os.path.isdir(root):
            found = "is a file" if os.path.exists(root) else "does not exist"
            raise DataError(f"image folder {root!r} {found}", where=root,
                            fix="give a folder with one subfolder of images per class")
        self.name, self.root, self.labeled = f"image_folder({root})", root, labels
        extensions = tuple(e.lower() for e in extensions)
        if labels:
            found = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
            self.class_names = list(class_names) if class_names else found
            missing = sorted(set(self.class_names) - set(found))
            if missing:
                raise DataError(f"class folder(s) {missing} not found", where=root, fix=f"use names from {found}")
            pairs = [(p, i) for i, c in enumerate(self.class_names) for p in walk(os.path.join(root, c), extensions)]
        else:
            self.class_names = []
            pairs = [(p, -1) for p in walk(root, extensions)]
        if not pairs:
            raise DataError("no image files found", where=root,
                            fix=f"put files ending in {', '.join(extensions)} in one subfolder per class")
        self.units = tuple(p for p, _ in pairs)
        self.labels = dict(pairs)
        self.uniform: tuple[int, int] | None = None  # the decoded size all files share, set by image_folder()

    def read(self, units, build: Build) -> tf.data.Dataset:
        return self._slices(units, build, keys=True)

    def read_bare(self, units, build: Build) -> tf.data.Dataset:
        return self._slices(units, build, keys=False)

    def _slices(self, units, build: Build, *, keys: bool) -> tf.data.Dataset:
        paths = list(units)
        element = (paths, np.asarray([self.labels[p] for p in paths], np.int32)) if self.labeled else paths
        if keys:  # (path, 0, element): the index is sliced, not mapped, so no extra stage per image
            element = (paths, np.zeros(len(paths), np.int64), element)
        return build.shuffled(tf.data.Dataset.from_tensor_slices(element), len(paths))

    def unit_counts(self) -> tuple[int, ...]:
        return (1,) * len(self.units)

    def find_bad(self) -> DataError | None:
        """After a decode failure: the first file that is not a whole image, claims too many pixels, will not
        decode, or changed size."""
        bad = [p for p in self.units if not looks_whole(head(p, -1))]
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            return DataError(f"bad record: corrupt or truncated image{more}", where=bad[0], fix=FIX)
        for path in self.units:  # whole-looking files: decode each (slow, but only after a failure)
            data = head(path, -1)
            claimed = too_large(data)
            if claimed:  # never decoded: a decompression bomb would take gigabytes
                return DataError(f"bad record: image too large, its header claims {claimed[1]:,} x {claimed[0]:,} "
                                 f"pixels (over {MAX_PIXELS:,})", where=path,
                                 fix="shrink or remove the file (it was not decoded), or build the pipeline with "
                                     "on_error='skip'")
            try:
                tf.io.decode_image(data, expand_animations=False)
            except (tf.errors.InvalidArgumentError, ValueError):
                return DataError("bad record: undecodable image", where=path, fix=FIX)
        if self.uniform:
            odd = next((p for p in self.units if header_size(head(p, 4096)) not in (None, self.uniform)), None)
            if odd:
                return DataError(f"bad record: the image is {header_size(head(odd, 4096))}, the folder's images "
                                 f"were {self.uniform} when the pipeline was built", where=odd,
                                 fix="build the pipeline again after changing files")
        return None

    def class_counts(self) -> dict | None:
        return dict(collections.Counter(self.labels.values())) if self.labeled else None

    def label_of(self, element):
        return element[1]


def walk(folder: str, extensions) -> list[str]:
    """Files under `folder` ending in `extensions`, in sorted order (folders too)."""
    found = []
    for base, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        found.extend(os.path.join(base, f) for f in sorted(files) if f.lower().endswith(extensions))
    return found
