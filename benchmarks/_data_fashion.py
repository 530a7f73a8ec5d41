"""Benchmark data for the image pipeline: real Fashion-MNIST images as PNG files and as 256x256 JPEGs.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package
(/usr/share/datasets/fashion-mnist); its four .gz files are copied to
~/.keras/datasets/fashion-mnist/ so `keras.datasets.fashion_mnist.load_data()`
reads them without a download. Images are written once into a cache folder
outside the repository (default ~/.cache/tfscale-bench), one subfolder per class.
"""

from __future__ import annotations

import os
import shutil

from benchmarks._fashion import place

CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def write_images(count: int, cache: str | None = None) -> dict[str, str]:
    """Writes `count` training images as 28x28 PNGs and as 256x256 JPEGs; returns {"png": dir, "jpeg": dir}."""
    import keras
    import numpy as np
    from PIL import Image

    cache = cache or os.path.expanduser("~/.cache/tfscale-bench")
    folders = {"png": os.path.join(cache, f"fashion-png-{count}"), "jpeg": os.path.join(cache, f"fashion-jpeg256-{count}")}
    if all(os.path.exists(os.path.join(f, ".complete")) for f in folders.values()):
        return folders
    place()
    (x, y), _ = keras.datasets.fashion_mnist.load_data()
    order = np.random.RandomState(0).permutation(len(x))[:count]
    for kind, folder in folders.items():
        shutil.rmtree(folder, ignore_errors=True)
        for name in CLASSES:
            os.makedirs(os.path.join(folder, name))
        for i in order:
            image = Image.fromarray(x[i])
            base = os.path.join(folder, CLASSES[y[i]], f"{i:05d}")
            if kind == "png":
                image.save(base + ".png")
            else:
                image.resize((256, 256), Image.BILINEAR).save(base + ".jpg", quality=90)
        open(os.path.join(folder, ".complete"), "w").close()
    return folders
