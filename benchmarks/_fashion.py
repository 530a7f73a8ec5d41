"""Fashion-MNIST for the benchmarks, offline: Debian's copy placed where Keras looks for it.

`apt-get install dataset-fashion-mnist` puts the four .gz files in
/usr/share/datasets/fashion-mnist; `load()` copies them into
$KERAS_HOME/datasets/fashion-mnist (default ~/.keras) once, then calls
`keras.datasets.fashion_mnist.load_data()`, which then needs no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")


def place() -> Path:
    """Copies the .gz files where Keras looks for them (if not there yet); returns that folder."""
    target = Path(os.environ.get("KERAS_HOME", "~/.keras")).expanduser() / "datasets" / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    if not DEBIAN_DIR.is_dir() and os.geteuid() == 0:  # fetch Debian's package (a registry) when missing
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], capture_output=True)
    for name in FILES:
        if not (target / name).exists():
            if not (DEBIAN_DIR / name).exists():
                raise SystemExit(f"{DEBIAN_DIR / name} not found. Fix: apt-get update && "
                                 "apt-get install -y dataset-fashion-mnist")
            shutil.copyfile(DEBIAN_DIR / name, target / name)
    return target


def load() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((x_train, y_train), (x_test, y_test)), images as float32 in [0, 1], shape (N, 28, 28)."""
    import keras

    place()
    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    return ((x_train / 255.0).astype("float32"), y_train), ((x_test / 255.0).astype("float32"), y_test)
