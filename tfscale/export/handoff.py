"""Export of a model that does not run on TensorFlow (Keras on JAX): in a TensorFlow-backend child process.

TFLite conversion and SavedModel need TensorFlow ops, and Keras fixes its
backend per process. So, as QAT already does for tf-keras, the model goes to a
child process: the parent saves it as ``.keras`` with the examples export needs
(calibration, evaluation, training data for QAT) as NumPy arrays, and runs
``python -m tfscale.export.handoff_worker`` with ``KERAS_BACKEND=tensorflow`` (`child_job`'s protocol).
The child loads the model, calls the same `tfscale.export` function and sends
back the path or the report. Files, validation and reports are those of a
model trained on TensorFlow. The parent imports no TensorFlow for NumPy or
`Scale.distribute` input.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tfscale.export import child_job
from tfscale.strategy.backend import keras_on_tensorflow

log = logging.getLogger("tfscale")

WORKER = "tfscale.export.handoff_worker"
DATA_ARGS = ("calibration", "eval_data", "train_data")


def needed() -> bool:
    """Export must run in a TensorFlow child: Keras in this process runs on another backend."""
    return not keras_on_tensorflow()


def is_chief(chief: bool | None) -> bool:
    """`chief` if given; else whether this is process 0 of JAX's distributed runtime (or JAX is not loaded)."""
    if chief is not None:
        return bool(chief)
    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0


def _limit(arrays, n: int | None):
    return arrays if n is None else [a[:n] for a in arrays]


def examples(data, model, max_samples: int | None, where: str) -> tuple[list[np.ndarray], np.ndarray | None] | None:
    """(inputs, labels or None) as NumPy: arrays as given, batches of a PyDataset (`Scale.distribute` on JAX),
    or anything `tfscale.export.samples` reads (tf.data, pipelines; TensorFlow is loaded for those anyway)."""
    if data is None:
        return None
    if isinstance(data, np.ndarray):
        return _limit([data], max_samples), None
    if isinstance(data, (tuple, list)) and data and all(isinstance(v, (np.ndarray, list, tuple)) for v in data):
        x, y = data[0], data[1] if len(data) > 1 else None
        inputs = [np.asarray(v) for v in x] if isinstance(x, (list, tuple)) else [np.asarray(x)]
        return _limit(inputs, max_samples), None if y is None else np.asarray(y)[:max_samples]
    if hasattr(data, "num_batches") and hasattr(data, "__getitem__"):  # a keras.utils.PyDataset
        parts, count = [], 0
        for i in range(data.num_batches or 0):
            batch = data[i]
            parts.append(batch)
            count += len(np.asarray(batch[0] if not isinstance(batch[0], (list, tuple)) else batch[0][0]))
            if max_samples is not None and count >= max_samples:
                break
        joined = tuple(np.concatenate([np.asarray(p[k]) for p in parts]) for k in range(len(parts[0])))
        return examples(joined, model, max_samples, where)
    from tfscale.export import samples
    from tfscale.export.source import input_specs

    inputs, labels = samples.collect(data, input_specs(model, None), max_samples=max_samples, where=where)
    return inputs, labels


def _save_examples(job: Path, name: str, found) -> dict | None:
    if found is None:
        return None
    inputs, labels = found
    arrays = {f"x{i}": x for i, x in enumerate(inputs)}
    if labels is not None:
        arrays["y"] = labels
    np.savez(job / f"{name}.npz", **arrays)
    return {"file": f"{name}.npz", "inputs": len(inputs), "labels": labels is not None}


def run(function: str, model, path, *, limits: dict[str, int | None] | None = None, **kwargs: Any):
    """Calls ``tfscale.export.<function>(model, path, **kwargs)`` in a TensorFlow child process.

    Args:
        function: "tflite", "quantize_all", "saved_model", "qat" or "prune".
        model: the Keras model (any backend).
        path: the file or folder to write.
        limits: the most examples to send for each data argument (None: all).
        **kwargs: the function's other arguments; data arguments become NumPy arrays.

    Returns:
        What the function returns: a Path, or an `ExportReport`.

    Raises:
        ExportError: the child failed (its error, as `tfscale.errors` gives it) or could not start.
    """
    limits = limits or {}
    with child_job.job_folder("tfscale-export-") as job:
        model.save(job / "model.keras")
        data = {}
        for name in DATA_ARGS:
            if name in kwargs:
                data[name] = _save_examples(job, name, examples(kwargs.pop(name), model, limits.get(name), name))
        child_job.write_job(job, {"function": function, "path": os.path.abspath(os.fspath(path)), "kwargs": kwargs,
                                  "data": data})
        log.info("exporting in a TensorFlow process (this one runs Keras on another backend): %s", function)
        result = child_job.run(WORKER, job, env=child_job.child_env(KERAS_BACKEND="tensorflow"),
                               name="the export process", where=WORKER)
        if "report" in result:
            from tfscale.export.report import ExportReport

            known = {f.name for f in dataclasses.fields(ExportReport)}
            return ExportReport(**{k: v for k, v in result["report"].items() if k in known})
        return Path(result["path"])
