"""The demo's data and model: scikit-learn's bundled handwritten digits (8x8, 10 classes) and a small conv net.

Usable from a run file too: ``model = "tfscale.recipes.digits:build_model"`` and
``[data] train = "tfscale.recipes.digits:train_data"``.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfscale.errors import DataError, install_hint

NUM_CLASSES = 10


def load(test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): 1,797 digits scaled to [0, 1], shape (n, 8, 8, 1), stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DataError("the demo's data comes with scikit-learn, which is not installed", where="tfscale demo",
                        fix=install_hint("demo", "scikit-learn")) from None
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def train_data(test_fraction: float = 0.2, seed: int = 0) -> tf.data.Dataset:
    """Unbatched (image, label) training examples."""
    x_train, y_train, _, _ = load(test_fraction, seed)
    return tf.data.Dataset.from_tensor_slices((x_train, y_train))


def test_data(test_fraction: float = 0.2, seed: int = 0) -> tf.data.Dataset:
    """Unbatched (image, label) test examples."""
    _, _, x_test, y_test = load(test_fraction, seed)
    return tf.data.Dataset.from_tensor_slices((x_test, y_test))


def build_model(filters: int = 16, dense: int = 64) -> keras.Model:
    """A small conv net for 8x8 digits (about 40k parameters); softmax kept in float32 for mixed precision."""
    return keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(filters, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(2 * filters, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(dense, activation="relu"),
        keras.layers.Dense(NUM_CLASSES),
        keras.layers.Activation("softmax", dtype="float32", name="probabilities"),
    ], name="digits_cnn")
