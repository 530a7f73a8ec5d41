"""Quarantine of Keras' private saving internals: a `.weights.h5` written from values captured at one step.

Why: `model.save_weights` reads every variable while it writes the file, so it must run in the training
thread and the step waits for the disk (30-55 ms for an 8 MB file here, against 7 ms steps: a checkpoint
every 50 steps cost 13-25 % of the throughput). `capture(model)` copies the values (a few ms, NumPy) and
returns a function that writes the same file later, in another thread, while training goes on: Keras'
own walk over the model (`saving_lib._save_state`, which names every entry exactly as `save_weights`
does) runs now into a store that only records each entry and a copy of its value (the variables, and
what a saveable computes, such as the optimizer's step count); the file is written later by replaying
those entries into a real `H5IOStore`. It is a plain `.weights.h5` that `model.load_weights` reads
(tests/test_checkpoints.py restores from it).

Private names used, checked on Keras 3.13-3.15 (`KERAS_RANGE`): `keras.src.saving.saving_lib._save_state`
and `keras.src.saving.saving_lib.H5IOStore` (`make(path, metadata)` opens an entry, `store[key] = value`
fills it). Outside that range, or where they are gone, `capture` returns None and the caller saves with
`model.save_weights` in the training thread, as before.
"""

from __future__ import annotations

import logging

import keras
import numpy as np

log = logging.getLogger("tfscale")

KERAS_RANGE = ((3, 13), (3, 15))  # the versions these internals were read and tested on


def _supported() -> bool:
    version = tuple(int(p) for p in keras.__version__.split(".")[:2])
    return KERAS_RANGE[0] <= version <= KERAS_RANGE[1]


def capture(model):
    """The values of `model`'s variables and its optimizer's now, and a function (path) -> None writing them
    as `model.save_weights(path)` would; None where these internals are not known to work (see above)."""
    if not _supported():
        return None
    try:
        from keras.src.saving import saving_lib
    except ImportError:
        return None
    save_state, store_class = getattr(saving_lib, "_save_state", None), getattr(saving_lib, "H5IOStore", None)
    if save_state is None or store_class is None:
        return None
    class Recorder(store_class):  # Keras' walk writes into it; nothing is opened (an H5IOStore, for its check)
        def __init__(self):
            self.calls: list[tuple] = []

        def __bool__(self):
            return True

        def make(self, path, metadata=None):
            self.calls.append(("make", path, metadata))
            return self

        def __setitem__(self, key, value):  # a variable, or a value the saveable computed (the step count)
            self.calls.append(("set", key, np.array(keras.ops.convert_to_numpy(value), copy=True)))

    recorder = Recorder()
    save_state(model, weights_store=recorder, assets_store=None, inner_path="", visited_saveables=set())
    calls = recorder.calls

    def write(path: str) -> None:
        store = store_class(path, mode="w")
        try:
            for kind, first, second in calls:
                if kind == "make":
                    store.make(first, metadata=second)
                else:
                    store[first] = second
        finally:
            store.close()

    return write
