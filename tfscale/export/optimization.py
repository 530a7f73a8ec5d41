"""Quantization-aware training and pruning with tensorflow-model-optimization, isolated.

tfmot accepts only tf-keras (Keras 2) models (tensorflow/model-optimization#1119)
and sets TF_USE_LEGACY_KERAS=1 when imported, which would change the user's
Keras 3 process. So tfscale never imports it here: the model's config, weights
and a slice of training data go to a temporary directory, `tfmot_worker` runs
in a fresh ``python -m`` process, rebuilds the same model in tf-keras, trains
and converts, and the .tflite comes back to be validated like every other variant.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import keras
import numpy as np

from tfscale.compat import keras as keras_compat
from tfscale.errors import ConfigError, DataError, ExportError
from tfscale.export import child_job, files, handoff, samples
from tfscale.export.source import PreparedModel, input_specs, is_chief, prepare

log = logging.getLogger("tfscale")

TFMOT_MODES = ("qat", "prune")
CHECK_EXAMPLES = 16


def _loss(model, loss):
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ConfigError(f"model {model.name!r} is not compiled and no loss was given", where="loss",
                          fix="compile the model, or pass loss='sparse_categorical_crossentropy' (or similar)")
    if isinstance(loss, str):
        return loss
    try:
        return keras.losses.serialize(loss)
    except Exception as e:
        raise ConfigError(f"cannot pass loss {loss!r} to the tfmot worker", where="loss",
                          fix="pass a built-in loss by name, e.g. loss='sparse_categorical_crossentropy'") from e


def _check_layers(model) -> None:
    """tf-keras can rebuild built-in Keras layers only; say which layer is not one, before any process starts."""
    for layer in keras_compat.flatten_layers(model):
        if not type(layer).__module__.startswith("keras."):
            raise ExportError(f"layer {layer.name!r} ({type(layer).__name__}) is not a built-in Keras layer, so the "
                              "tfmot worker cannot rebuild it in tf-keras", where=f"layer {layer.name!r}",
                              fix="use QAT/pruning on models of built-in layers, or post-training int8 "
                                  "(tfscale.export.tflite(..., quantize='int8'))")


def _write_job(job_dir: Path, source: PreparedModel, train_data, tasks: list[dict], options: dict) -> None:
    inputs, labels = samples.collect(train_data, source.specs, max_samples=options["max_train_samples"],
                                     where="train_data")
    if labels is None:
        raise DataError("QAT and pruning need labelled training data", where="train_data",
                        fix="pass (x, y) arrays or a dataset of (x, y)")
    check = source.predict([x[:CHECK_EXAMPLES] for x in inputs])[0]
    arrays = {f"x{i}": x for i, x in enumerate(inputs)}
    arrays.update({f"w{i}": w for i, w in enumerate(source.model.get_weights())}, y=labels, check_out=check)
    np.savez(job_dir / "train.npz", **arrays)
    job = {"model": json.loads(source.model.to_json()), "num_weights": len(source.model.get_weights()),
           "inputs": [{"name": s.name, "shape": s.shape.as_list()[1:], "dtype": s.dtype.name} for s in source.specs],
           "tasks": tasks, **options}
    child_job.write_job(job_dir, job)


def run_tasks(model, tasks: list[dict], train_data, *, loss=None, epochs: int = 1, batch_size: int = 32,
              learning_rate: float = 1e-4, max_train_samples: int | None = 10_000, num_calibration_samples: int = 200,
              int8_io: str = "int8", input_signature=None, timeout: float | None = None) -> list[dict]:
    """Runs tfmot `tasks` in one worker process; each task's .tflite is written to task["out"].

    A task is {"kind": "qat"} or {"kind": "prune", "sparsity": 0.5, "quantize": "int8"|"dynamic"|"float32"},
    plus "out", the file to write. Returns the worker's per-task results (training loss, sparsity, notes).

    Raises:
        ExportError: the worker failed (its message names the cause), or timed out.
    """
    if epochs < 1 or batch_size < 1:
        raise ConfigError("epochs and batch_size must be >= 1", where="epochs / batch_size", fix="give e.g. 1 and 32")
    source = prepare(model, input_signature)
    _check_layers(source.model)
    options = {"loss": _loss(model, loss), "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
               "max_train_samples": max_train_samples, "num_calibration_samples": num_calibration_samples,
               "int8_io": int8_io, "seed": 0}
    with child_job.job_folder("tfscale-tfmot-") as job_dir:
        _write_job(job_dir, source, train_data, tasks, options)
        log.info("running tfmot %s in a separate process", ", ".join(t["kind"] for t in tasks))
        env = child_job.child_env(TF_USE_LEGACY_KERAS="1")  # only in the child
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        result = child_job.run("tfscale.export.tfmot_worker", job_dir, env=env, name="the tfmot worker",
                               where="tfmot worker", capture=True, timeout=timeout,
                               timeout_fix="give fewer max_train_samples or epochs, or a larger timeout")
    for item in result["tasks"]:
        for note in item.get("notes", []):
            log.warning("tfmot %s: %s", item["kind"], note)
    return result["tasks"]


def _one(model, path, task: dict, *, train_data, overwrite: bool, chief: bool, **options) -> Path:
    if handoff.needed():  # Keras here runs on JAX: the tfmot worker is started from a TensorFlow process
        if not handoff.is_chief(chief):
            return Path(path)
        extra = {k: (None if v == "float32" and k == "quantize" else v) for k, v in task.items() if k != "kind"}
        return handoff.run(task["kind"], model, path, limits={"train_data": options.get("max_train_samples", 10_000)},
                           train_data=train_data, overwrite=overwrite, **extra, **options)
    path = Path(path)
    train_data = samples.localize(train_data, input_specs(model, options.get("input_signature")), where="train_data",
                                  max_samples=options.get("max_train_samples", 10_000))
    if not is_chief(model, chief):
        log.info("not the chief: %s not written", path)
        return path
    with files.atomic_file(path, overwrite=overwrite) as tmp:
        run_tasks(model, [dict(task, out=str(tmp))], train_data, **options)
    return path


def qat(model, path: str | os.PathLike, *, train_data, epochs: int = 1, overwrite: bool = False,
        chief: bool | None = None, **options) -> Path:
    """Quantization-aware fine-tuning with tfmot, in a separate process; writes a full-int8 .tflite.

    The user's process never imports tfmot or tf-keras: the worker rebuilds the same
    model (built-in layers) in tf-keras from its config and weights.

    Args:
        model: a trained Keras 3 model (compiled, or pass loss=...).
        path: the .tflite file to write.
        train_data: labelled training data: (x, y) arrays or a dataset of (x, y).
        epochs: fine-tuning epochs over the first `max_train_samples` examples.
        overwrite: replace an existing file.
        chief: write only when True; None: ask the model's strategy.
        **options: loss, batch_size (32), learning_rate (1e-4), max_train_samples
            (10,000), int8_io ("int8"), input_signature, timeout (seconds).

    Returns:
        The path written.

    Example:
        tfscale.export.qat(model, "saved_models/m/qat.tflite", train_data=(x_train, y_train))
    """
    return _one(model, path, {"kind": "qat"}, train_data=train_data, epochs=epochs, overwrite=overwrite,
                chief=chief, **options)


def prune(model, path: str | os.PathLike, *, train_data, sparsity: float = 0.5, quantize: str | None = "int8",
          epochs: int = 1, overwrite: bool = False, chief: bool | None = None, **options) -> Path:
    """Magnitude pruning with tfmot, in a separate process, then conversion to .tflite.

    Args:
        model: a trained Keras 3 model (compiled, or pass loss=...).
        path: the .tflite file to write.
        train_data: labelled training data (also the int8 calibration data).
        sparsity: the fraction of each kernel's weights set to zero (0 < s < 1).
        quantize: the conversion after pruning: "int8", "dynamic" or None (float32).
        epochs: fine-tuning epochs while pruning.
        overwrite: replace an existing file.
        chief: write only when True; None: ask the model's strategy.
        **options: as for `qat`.

    Returns:
        The path written. Pruned zeros shrink the file once compressed (gzip).
    """
    if not 0 < sparsity < 1:
        raise ConfigError(f"sparsity must be between 0 and 1, got {sparsity}", where="sparsity", fix="give e.g. 0.5")
    if quantize not in ("int8", "dynamic", None):
        raise ConfigError(f"prune cannot convert with quantize={quantize!r}", where="quantize",
                          fix="use 'int8', 'dynamic' or None")
    task = {"kind": "prune", "sparsity": sparsity, "quantize": quantize or "float32"}
    return _one(model, path, task, train_data=train_data, epochs=epochs, overwrite=overwrite, chief=chief, **options)
