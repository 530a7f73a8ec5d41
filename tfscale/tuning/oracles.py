"""keras-tuner's oracles, writing their state whole, so a search killed at any moment can be reloaded.

keras-tuner 1.4 writes ``oracle.json``, ``trial_*/trial.json`` and the tuner's
file in place (open, write): a process killed mid-write leaves an empty or
truncated file, and the next run cannot reload the search at all. These write a
temporary file beside the target and rename it over (`tfscale.storage.atomic_write`),
so a kill leaves the previous version. Delete this module when keras-tuner
writes its files atomically.
"""

from __future__ import annotations

import json

import keras_tuner as kt
import tensorflow as tf

from tfscale.compat import keras_tuner as kt_compat
from tfscale.storage import atomic_write


def write_json(path: str, state) -> str:
    """Writes `state` as JSON to `path` whole (`tfscale.storage.atomic_write`); returns the JSON.

    An object-store URL (keras-tuner reaches those through `tf.io.gfile`) is written in one upload, which
    appears whole or not at all, as `tfscale.storage` writes objects.
    """
    text = json.dumps(state)
    if "://" in path:
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
    else:
        atomic_write(path, text, sync=False)
    return text


class _WholeFiles(kt_compat.WholeFilesOracle):
    """Mixed in front of a keras-tuner oracle: its state file and trial files are replaced, never rewritten
    (keras-tuner's hooks for them are private: `tfscale.compat.keras_tuner`)."""

    write_state = staticmethod(write_json)


class HyperbandOracle(_WholeFiles, kt.oracles.HyperbandOracle):
    pass


class RandomSearchOracle(_WholeFiles, kt.oracles.RandomSearchOracle):
    pass


class BayesianOptimizationOracle(_WholeFiles, kt.oracles.BayesianOptimizationOracle):
    pass


def build(config, objective):
    """The oracle of the search `config` (a `TuneConfig`) names."""
    common = {"objective": objective, "seed": config.seed}
    if config.tuner == "hyperband":
        return HyperbandOracle(max_epochs=config.epochs, factor=config.factor, **common)
    if config.tuner == "random":
        return RandomSearchOracle(max_trials=config.max_trials, **common)
    return BayesianOptimizationOracle(max_trials=config.max_trials, **common)
