"""keras-tuner's tuners, run on a Scale: timed trials, whole state files, a chief that outlives dead tuners.

Imported only inside `tfscale.tune`: it imports keras-tuner (the ``tune`` extra).
keras-tuner runs each trial under one strategy it is given
(``distribution_strategy``) and accepts only single-worker strategies
(keras-team/keras-tuner#531, #910); work spreads over processes through its
chief oracle and tuner workers instead, whose roles come from the
KERASTUNER_* environment variables.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import time

import keras
import keras_tuner as kt

from tfscale.compat import keras_tuner as kt_compat
from tfscale.errors import ConfigError
from tfscale.tuning import chief, oracles
from tfscale.tuning.control import CONTROL_ENV
from tfscale.tuning.results import SECONDS_METRIC, record_tuner

log = logging.getLogger("tfscale")

IDLE_WAIT_SECONDS = 0.5  # between asks while the oracle waits for other tuners' trials (Hyperband rounds)


def role() -> str | None:
    """None in a one-process search, else "chief" or this tuner's id (KERASTUNER_TUNER_ID)."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    if not tuner_id or "KERASTUNER_ORACLE_PORT" not in os.environ:
        raise ConfigError("KERASTUNER_ORACLE_IP is set but KERASTUNER_ORACLE_PORT or KERASTUNER_TUNER_ID is not",
                          where="environment", fix="set all three, or let `tfscale tune --workers N` set them")
    return "chief" if tuner_id.startswith("chief") else tuner_id


class _OnScale:
    """Mixed in front of a keras-tuner tuner: the chief serves with `chief.serve`, the tuner file is written
    whole, trials are timed and logged, and a tuner the oracle keeps waiting asks again only after a pause."""

    dead_tuners: list[str] = []

    def search(self, *fit_args, **fit_kwargs):
        if role() != "chief":
            return super().search(*fit_args, **fit_kwargs)
        self.oracle.verbose = fit_kwargs.get("verbose", 1)
        self.save()
        address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        self.dead_tuners = chief.serve(self.oracle, self.project_dir, address=address,
                                       control_dir=os.environ.get(CONTROL_ENV))
        return None

    def save(self):
        if not kt_compat.is_worker(self):  # a worker's oracle is the chief's, over gRPC
            self.oracle.save()
        oracles.write_json(kt_compat.tuner_file(self), self.get_state())

    def run_trial(self, trial, *fit_args, **fit_kwargs):
        start = time.monotonic()
        results = super().run_trial(trial, *fit_args, **fit_kwargs)
        seconds = time.monotonic() - start
        # The time travels with the trial's metrics (as the objective does), so the chief records it.
        for result in results if isinstance(results, list) else [results]:
            if isinstance(result, keras.callbacks.History):
                result.history[SECONDS_METRIC] = [seconds] * max(1, len(result.epoch))
            elif isinstance(result, dict):
                result[SECONDS_METRIC] = seconds
        return results

    def pre_create_trial(self):
        if getattr(self, "_asked", False):  # the last ask got no trial: the oracle waits on other tuners
            time.sleep(IDLE_WAIT_SECONDS)
        self._asked = True
        super().pre_create_trial()

    def on_trial_begin(self, trial):
        self._asked = False
        if role() is None:
            record_tuner(self.project_dir, trial.trial_id, self.tuner_id)
        log.info("%s: trial %s starts: %s", self.tuner_id, trial.trial_id, trial.hyperparameters.values)
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        ended = self.oracle.get_trial(trial.trial_id)
        log.info("%s: trial %s %s, %s = %s", self.tuner_id, trial.trial_id, ended.status,
                 self.oracle.objective.name, ended.score)


class Hyperband(_OnScale, kt.Hyperband):
    """keras-tuner's Hyperband tuner (its trials continue their parents' checkpoints), on our oracle."""

    def __init__(self, oracle, **kwargs):
        kt.Tuner.__init__(self, oracle=oracle, **kwargs)  # kt.Hyperband.__init__ only builds its own oracle


class Tuner(_OnScale, kt.Tuner):
    """Random and Bayesian search: keras-tuner's RandomSearch and BayesianOptimization are this and their oracle."""


class _InScope(kt.HyperModel):
    """A hypermodel whose every build runs in `scale.scope()`.

    keras-tuner clears Keras' session before it builds each trial's model (`Tuner._try_build`), and that drops
    the process-wide Keras distribution the JAX engine set; keras-tuner's own `distribution_strategy` is a
    TensorFlow strategy only. So without this every trial after the first build trained on one device, whatever
    the Scale. `Scale.scope()` sets the distribution again.
    """

    def __init__(self, inner, scale):
        super().__init__(name=getattr(inner, "name", None), tunable=getattr(inner, "tunable", True))
        self.inner, self.scale = inner, scale

    def build(self, hp):
        with self.scale.scope():
            return self.inner.build(hp) if isinstance(self.inner, kt.HyperModel) else self.inner(hp)

    def declare_hyperparameters(self, hp):
        if isinstance(self.inner, kt.HyperModel):
            self.inner.declare_hyperparameters(hp)

    def fit(self, hp, model, *args, **kwargs):
        if isinstance(self.inner, kt.HyperModel):
            return self.inner.fit(hp, model, *args, **kwargs)
        return super().fit(hp, model, *args, **kwargs)


def hypermodel(build_model, scale):
    """`build_model` as keras-tuner wants it: given ``scale=`` too when it names that parameter; built in the
    Scale's scope where the engine's distribution is Keras' process-wide one (`_InScope`)."""
    if not isinstance(build_model, kt.HyperModel):
        if not callable(build_model):
            raise ConfigError(f"build_model must be a function of hp, got {type(build_model).__name__}",
                              where="tfscale.tune(build_model, ...)",
                              fix="pass a function hp -> compiled keras.Model, or a keras_tuner.HyperModel")
        try:
            takes_scale = "scale" in inspect.signature(build_model).parameters
        except (TypeError, ValueError):
            takes_scale = False
        build_model = functools.partial(build_model, scale=scale) if takes_scale else build_model
    return build_model if scale.engine.keras_distribution is None else _InScope(build_model, scale)


def build(config, build_model, scale, *, overwrite: bool):
    """The tuner `config` names, running every trial under `scale`'s strategy.

    Raises:
        ConfigError: the objective's direction cannot be inferred, or the project
            on disk is another kind of search.
    """
    objective = kt.Objective(config.objective, config.direction) if config.direction else config.objective
    try:
        oracle = oracles.build(config, objective)
        cls = Hyperband if config.tuner == "hyperband" else Tuner
        return cls(oracle, hypermodel=hypermodel(build_model, scale), distribution_strategy=scale.engine.tf_strategy,
                   directory=config.directory, project_name=config.project_name, overwrite=overwrite,
                   executions_per_trial=config.executions_per_trial)
    except ValueError as e:
        if "direction" not in str(e):
            raise
        raise ConfigError(f"cannot tell whether {config.objective!r} should go up or down", where="tune.direction",
                          fix='give direction = "max" or "min"') from None
    except RuntimeError as e:
        if "reloading" not in str(e).lower():
            raise
        raise ConfigError(f"the project on disk is not a {config.tuner} search like this one ({e})",
                          where=os.path.join(config.directory, config.project_name),
                          fix="choose another project_name, or set overwrite = true to start afresh") from None
