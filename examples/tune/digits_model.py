"""A small classifier of scikit-learn's 8x8 digits (bundled with scikit-learn: no download), for `tfscale tune`.

`build_model(hp, scale)` is the one model definition; the search picks its width,
dropout and learning rate. `train_data()` and `validation_data()` (the run file's [data] table) return
unbatched examples: `load_data()`'s two parts.
"""

import keras
import numpy as np
import tensorflow as tf

BASE_BATCH_SIZE = 64  # the batch size the learning-rate range was chosen for


def build_model(hp, scale=None):
    """A compiled MLP whose hyperparameters come from `hp`."""
    learning_rate = hp.Float("learning_rate", 1e-3, 3e-2, sampling="log")
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(hp.Int("units", 16, 96, step=16), activation="relu"),
        keras.layers.Dropout(hp.Float("dropout", 0.0, 0.3, step=0.1)),
        keras.layers.Dense(10),
    ])
    if hasattr(scale, "optimizer"):  # the batch contract: the learning rate follows the global batch
        optimizer = scale.optimizer("adam", base_lr=learning_rate, base_batch_size=BASE_BATCH_SIZE)
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def load_data(validation_fraction: float = 0.2, seed: int = 0):
    """(train, validation): unbatched (8x8x1 image, label) examples, shuffled once with `seed`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    order = np.random.RandomState(seed).permutation(len(x))
    x, y = x[order], y[order]
    n = int(len(x) * (1 - validation_fraction))
    return (tf.data.Dataset.from_tensor_slices((x[:n], y[:n])),
            tf.data.Dataset.from_tensor_slices((x[n:], y[n:])))


def train_data(validation_fraction: float = 0.2, seed: int = 0):
    """The training part of `load_data` (the run file's ``data.train``)."""
    return load_data(validation_fraction, seed)[0]


def validation_data(validation_fraction: float = 0.2, seed: int = 0):
    """The validation part of `load_data` (the run file's ``data.validation``)."""
    return load_data(validation_fraction, seed)[1]
