"""keras-tuner's oracles, writing their state whole, so a search killed at any moment can be reloaded.

keras-tuner 1.4 writes ``oracle.json``, ``trial_*/trial.json`` and the tuner's
file in place (open, write): a process killed mid-write leaves an empty or
truncated file, and the next run cannot reload the search at all. These write a
temporary file beside the target and rename it over (atomic on a local disk),
so a kill leaves the previous version. Delete this module when keras-tuner
writes its files atomically.
"""

from __future__ import annotations

import json
import os

import keras_tuner as kt
import tensorflow as tf


def write_json(path: str, state) -> str:
    """Writes `state` as JSON to `path` through a temporary file and a rename; returns the JSON."""
    text = json.dumps(state)
    tmp = f"{path}.tmp{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    return text


class _WholeFiles:
    """Mixed in front of a keras-tuner oracle: its state file and trial files are replaced, never rewritten."""

    def save(self):
        return write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        write_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state())


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
