"""The Fashion-MNIST model: one Keras 3 definition for every strategy, int8-friendly (builtin TFLite ops only)."""

from __future__ import annotations

import keras


def build_model(num_classes: int = 10, image_size: tuple[int, int] = (28, 28), *, width: int = 16) -> keras.Model:
    """A small conv net: two conv/pool stages, a dense layer, softmax.

    Args:
        num_classes: classes to tell apart.
        image_size: (height, width) of the grayscale input, scaled to [0, 1].
        width: filters of the first conv layer (the second has twice as many).

    Returns:
        An uncompiled model: (batch, height, width, 1) float32 → (batch, num_classes) probabilities.
    """
    images = keras.Input((*image_size, 1), name="image")
    x = keras.layers.Conv2D(width, 3, activation="relu", padding="same")(images)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(2 * width, 3, activation="relu", padding="same")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    probs = keras.layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return keras.Model(images, probs, name="fashion_convnet")
