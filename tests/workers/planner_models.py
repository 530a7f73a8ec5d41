"""Models of the memory planner's tests (tests/test_planner.py): `mlp` is what `tfscale info --model` builds."""

import keras


def mlp():
    return keras.Sequential([keras.Input((512,)), keras.layers.Dense(1024, activation="relu"),
                             keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10)])
