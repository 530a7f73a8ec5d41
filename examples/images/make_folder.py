"""Writes Fashion-MNIST as an image folder: <out>/{train,test}/<class>/<n>.png, one subfolder per class.

The data comes from Debian's package dataset-fashion-mnist
(/usr/share/datasets/fashion-mnist), copied where
`keras.datasets.fashion_mnist.load_data()` looks for it, so nothing is
downloaded. Class folders are numbered (0_t-shirt_top ... 9_ankle_boot) so
that their sorted order, which gives the labels, is Fashion-MNIST's own.
A rerun makes the folder hold exactly the images asked for: it writes the
missing ones and removes the ones an earlier run wrote that are not asked for.

    python examples/images/make_folder.py --out data/fashion --per-class 0     # all 70,000 images
"""

from __future__ import annotations

import argparse
import os
import shutil
import zlib
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz")
CLASSES = ("t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot")


def install_debian_copy(source: Path = DEBIAN_DIR) -> Path:
    """Copies the four .gz files into $KERAS_HOME/datasets/fashion-mnist (default ~/.keras); returns that folder."""
    target = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets" / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if not (target / name).exists():
            if not (source / name).exists():
                raise SystemExit(f"{source / name} not found. Fix: apt-get install dataset-fashion-mnist")
            shutil.copyfile(source / name, target / f"{name}.partial")
            os.replace(target / f"{name}.partial", target / name)
    return target


def png_bytes(image: np.ndarray) -> bytes:
    """A grayscale uint8 image (H, W) as a PNG file (no imaging library needed)."""
    height, width = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big"))

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_split(images: np.ndarray, labels: np.ndarray, folder: Path, per_class: int) -> tuple[int, int]:
    """Makes `folder` hold the first `per_class` images of each class (0: all); returns (images, removed)."""
    held, removed = 0, 0
    for label, name in enumerate(CLASSES):
        class_dir = folder / f"{label}_{name}"
        class_dir.mkdir(parents=True, exist_ok=True)
        indices = np.flatnonzero(labels == label)
        wanted = {f"{i:05d}.png": i for i in (indices[:per_class] if per_class else indices)}
        for path in class_dir.glob("[0-9][0-9][0-9][0-9][0-9].png"):  # an earlier run's images not asked for now
            if path.name not in wanted:
                path.unlink()
                removed += 1
        for file_name, i in wanted.items():
            path = class_dir / file_name
            if not path.exists():
                partial = path.with_suffix(".partial")
                partial.write_bytes(png_bytes(images[i]))
                os.replace(partial, path)
            held += 1
    return held, removed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/fashion", help="output folder (default: %(default)s)")
    parser.add_argument("--per-class", type=int, default=0, help="training images per class (0: all 6,000)")
    parser.add_argument("--test-per-class", type=int, default=0, help="test images per class (0: all 1,000)")
    args = parser.parse_args(argv)
    install_debian_copy()
    import keras

    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    out = Path(args.out)
    n_train, gone_train = write_split(x_train, y_train, out / "train", args.per_class)
    n_test, gone_test = write_split(x_test, y_test, out / "test", args.test_per_class)
    removed = f" (removed {gone_train + gone_test} from an earlier run)" if gone_train + gone_test else ""
    print(f"{out}/ holds {n_train} training and {n_test} test images{removed}")


if __name__ == "__main__":
    main()
