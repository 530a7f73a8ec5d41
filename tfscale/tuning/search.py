"""`tfscale.tune`: a keras-tuner search whose every trial trains under one Scale, with the batch contract.

Each trial gets the same global batch, split evenly over the Scale's
replicas (`Scale.distribute`), and builds its model in the Scale's strategy
(keras-tuner's ``distribution_strategy``). The search lives in
``directory/project_name``: running it again continues it; a trial that a
killed run left unfinished runs again, a finished one never does. When the
search is over, the best model is rebuilt (retrained from scratch if asked),
saved as ``best_model.keras`` and handed to export; the results go to
``tfscale_results.json`` and ``tfscale_scores.png``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from tfscale.config import TuneConfig, with_options
from tfscale.errors import ConfigError, DataError, TfscaleError, install_hint
from tfscale.scale import Scale
from tfscale.strategy.registry import Capability
from tfscale.tuning.results import BEST_MODEL, TuneResult, rows_from_oracle

log = logging.getLogger("tfscale")


def tune(build_model: Callable, train, validation=None, *, scale=None, config: TuneConfig | None = None,
         callbacks: Sequence = (), **options: Any) -> TuneResult:
    """Searches hyperparameters with keras-tuner, every trial under `scale`.

    Args:
        build_model: a function of a keras-tuner ``hp`` returning a compiled Keras model
            (it also gets ``scale=`` if it names that parameter, e.g. for `Scale.optimizer`),
            or a ``keras_tuner.HyperModel``.
        train: unbatched examples: a `tf.data.Dataset`, a tfscale pipeline, or a tuple of arrays (x, y).
        validation: the same kind of data, for ``val_*`` objectives.
        scale: the `tfscale.Scale` trials run under, single-worker (default: ``Scale.auto()``).
            Several processes share one search with `tfscale tune --workers N`.
        config: a `TuneConfig`, instead of options.
        callbacks: Keras callbacks for every trial's ``fit`` (deep-copied per trial).
        **options: `TuneConfig` fields: tuner ("hyperband", "random", "bayesian"), objective,
            direction, max_trials, epochs, factor, global_batch_size, executions_per_trial, seed,
            directory, project_name, overwrite, retrain, export.

    Returns:
        A `TuneResult`: every trial, the best one, the best model and where it was saved.
        On a tuner worker of a distributed search, only its role.

    Raises:
        ConfigError: an unknown option, a multi-worker Scale, a ``val_*`` objective without validation data.

    Example:
        result = tfscale.tune(build_model, train, validation, tuner="random", objective="val_accuracy",
                              max_trials=8, scale=tfscale.Scale("mirrored", replicas=2), global_batch_size=64)
        print(result.best_hyperparameters)
    """
    config = _config(config, options)
    scale = _default_scale(scale)
    _check_single_worker(scale)
    if validation is None and config.objective.startswith("val_"):
        raise ConfigError(f"the objective {config.objective!r} needs validation data", where="tfscale.tune(...)",
                          fix="pass validation=..., or choose an objective on the training metrics (e.g. 'loss')")
    tuners, chief = _tuning_modules()
    role = tuners.role()
    global_batch, per_replica = scale.batch_sizes(config.global_batch_size)
    train_data = _distribute(scale, train, global_batch, "train")
    val_data = None if validation is None else _distribute(scale, validation, global_batch, "validation")
    tuner = tuners.build(config, build_model, scale, overwrite=config.overwrite and role in (None, "chief"))
    if role in (None, "chief"):
        stale = chief.requeue_stale(tuner.oracle)
        if stale:
            log.warning("trial(s) %s were left unfinished by an earlier run: they run again", ", ".join(stale))
    fit = {"epochs": config.epochs, "callbacks": list(callbacks), "verbose": 0}
    if val_data is not None:
        fit["validation_data"] = val_data
    tuner.search(train_data, **fit)

    objective = tuner.oracle.objective
    result = TuneResult(project_dir=tuner.project_dir, objective=objective.name, direction=objective.direction,
                        rows=[], role=role or "chief")
    if role not in (None, "chief"):
        return result
    result.rows = rows_from_oracle(tuner.oracle, tuner.project_dir)
    result.info = {"tuner": config.tuner, "strategy": scale.name, "num_replicas": scale.num_replicas,
                   "global_batch_size": global_batch, "per_replica_batch_size": per_replica,
                   "epochs": config.epochs, "dead_tuners": list(tuner.dead_tuners)}
    result.save()  # the results stand even if retraining or export fails
    _finish(result, tuner, scale, config, (train, train_data), (validation, val_data), callbacks)
    result.save()
    return result


def _config(config: TuneConfig | None, options: dict[str, Any]) -> TuneConfig:
    return with_options(TuneConfig, config, options, what="tune option", where="tfscale.tune(...)")


def _default_scale(scale):
    return Scale.auto() if scale is None else scale


def _check_single_worker(scale) -> None:
    """keras-tuner trains a trial under one worker's strategy only (keras-team/keras-tuner#531, #910)."""
    if scale.num_workers > 1 or scale.engine.has(Capability.CLUSTER_RUNTIME):
        raise ConfigError(f"keras-tuner trains each trial in one process, but this Scale ({scale.name}) spans "
                          f"{scale.num_workers} workers (keras-team/keras-tuner#531, #910)",
                          where="tfscale.tune(scale=...)",
                          fix="give each tuner a single-worker Scale (mirrored, one_device, default, tpu) and spread "
                              "trials over processes with `tfscale tune run.toml --workers N`")


def _tuning_modules():
    try:
        from tfscale.tuning import chief, tuners
    except ModuleNotFoundError as e:
        if e.name not in ("keras_tuner", "grpc", "tensorboard") and not (e.name or "").startswith("keras_tuner"):
            raise
        raise TfscaleError(f"hyperparameter search needs {e.name}, which is not installed", where="tfscale.tune",
                           fix=install_hint("tune")) from None
    return tuners, chief


def _distribute(scale, data, global_batch: int, what: str):
    """`scale.distribute` of the search's data: every trial sees the same global batches."""
    try:
        return scale.distribute(tuple(data) if isinstance(data, list) else data, global_batch_size=global_batch)
    except DataError as e:
        raise DataError(f"cannot tune on {what} data: {e.what}", where=f"tfscale.tune({what}=...)", fix=e.fix) from None


# --------------------------------------------------------------------------- after the search


def _finish(result: TuneResult, tuner, scale, config: TuneConfig, train, validation, callbacks) -> None:
    """Rebuilds the best model (retrained if asked), saves it, and hands it to export."""
    best = [t for t in tuner.oracle.get_best_trials(1) if t.status == "COMPLETED"]
    for row in result.unfinished:
        log.warning("trial %s did not finish (its tuner died): run the same search again to finish it", row.trial)
    if not best:
        log.warning("no trial completed: no best model")
        return
    trial = best[0]
    if config.retrain:
        with scale.scope():
            trained = tuner.hypermodel.build(trial.hyperparameters)
        trained.fit(train[1], validation_data=validation[1], epochs=config.epochs, verbose=0,
                    callbacks=list(callbacks))
    else:
        with warnings.catch_warnings():  # only the weights are used: the optimizer's state does not matter
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            trained = tuner.load_model(trial)  # the weights of its best epoch
    # Rebuilt outside any strategy, so it saves and converts like any single-device model.
    model = tuner.hypermodel.build(trial.hyperparameters)
    model.set_weights(trained.get_weights())
    result.model = model
    result.best_model_path = export_model(model, {"path": os.path.join(result.project_dir, BEST_MODEL)}, None, None)
    log.info("best trial %s (%s = %s) saved to %s", trial.trial_id, result.objective, trial.score,
             result.best_model_path)
    if config.export_spec:
        result.export = export_model(model, config.export_spec, train[0], validation[0])


def export_model(model, spec: dict[str, Any], train, validation):
    """Hands `model` to `tfscale.export` as `spec` says: a ``.keras`` file, one ``.tflite``, or every variant.

    Every run of a search ends by exporting its best model, so the files are replaced.

    Args:
        model: the best model.
        spec: {path, quantize?, modes?}: a path ending in ".keras" or ".tflite"
            (``quantize`` is its TFLite mode), or a folder for `quantize_all` (``modes``).
        train: the training examples, for calibration (and qat/prune modes).
        validation: the examples each variant is validated on (default: `train`).

    Returns:
        The path written, or the `ExportReport` of every variant.
    """
    from tfscale import export as export_lib

    path = os.fspath(spec["path"])
    if path.endswith(".keras"):
        return os.fspath(export_lib.keras(model, path, overwrite=True))
    train = _examples(train, "train")
    if path.endswith(".tflite"):
        return os.fspath(export_lib.tflite(model, path, quantize=spec.get("quantize"), calibration=train,
                                           overwrite=True))
    options = {"modes": list(spec["modes"])} if spec.get("modes") else {}
    evaluation = train if validation is None else _examples(validation, "validation")
    return export_lib.quantize_all(model, path, eval_data=evaluation, train_data=train, overwrite=True,
                                   progress=False, **options)


def _examples(data, what: str):
    """Unbatched examples as a tf.data.Dataset for export (which runs on TensorFlow)."""
    from tfscale.data.sharding import as_dataset

    return as_dataset(tuple(data) if isinstance(data, list) else data, f"tfscale.tune({what}=...)")
