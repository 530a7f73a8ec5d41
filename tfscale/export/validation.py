"""Validating TFLite files with LiteRT (`ai_edge_litert`), against the Keras model they came from.

Each file runs on the evaluation data and is compared with the Keras model:
the task metric, top-1 agreement (classifiers) and the largest absolute output
difference, the file size, and latency p50/p90 at batch 1 with 1 thread and
with all threads, with LiteRT's default XNNPACK delegate and without it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from tfscale.errors import ExportError
from tfscale.export import latency, metrics, runtime, samples
from tfscale.export.source import PreparedModel, prepare

log = logging.getLogger("tfscale")

EVAL_BATCH = 64


@dataclasses.dataclass
class Reference:
    """Evaluation data and what the Keras model makes of it; computed once, compared with every file."""

    source: PreparedModel
    inputs: list[np.ndarray]
    labels: np.ndarray | None
    outputs: list[np.ndarray]
    metric: str | None
    keras_value: float | None


def reference(source: PreparedModel, eval_data, *, metric: str | None = "auto",
              max_samples: int | None = None) -> Reference:
    """Runs the Keras model over `eval_data` ((x, y) arrays or dataset) and scores it."""
    inputs, labels = samples.collect(eval_data, source.specs, max_samples=max_samples, where="evaluation data")
    outputs = source.predict(inputs)
    name = metrics.pick(metric, outputs[0], labels)
    return Reference(source, inputs, labels, outputs, name, metrics.score(name, outputs[0], labels, outputs[0]))


def run(path: Path, source: PreparedModel, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The TFLite file's (dequantized) outputs for whole input arrays, in batches."""
    interpreter = runtime.interpreter(path, os.cpu_count() or 1)
    ins, outs = runtime.io_details(interpreter, source)
    parts = []
    for _ in runtime.invoke_in_batches(interpreter, ins, inputs, EVAL_BATCH):
        parts.append([runtime.dequantize(interpreter.get_tensor(d["index"]), d) for d in outs])
    return [np.concatenate([p[i] for p in parts]) for i in range(len(outs))]


def compare(outputs: list[np.ndarray], ref: Reference) -> dict:
    """The metric, agreement and max abs difference of `outputs` against the reference."""
    value = metrics.score(ref.metric, outputs[0], ref.labels, ref.outputs[0])
    diff = max(float(np.abs(o.astype(np.float64) - r).max()) for o, r in zip(outputs, ref.outputs))
    return {"metric": ref.metric, "value": value, "keras_value": ref.keras_value,
            "drop": metrics.drop(ref.metric, value, ref.keras_value),
            "agreement": metrics.agreement(ref.metric, outputs[0], ref.outputs[0]),
            "max_abs_diff": diff, "samples": len(outputs[0])}


def evaluate_file(path: str | os.PathLike, ref: Reference) -> dict:
    """Size, metric, agreement and max abs difference of one file against a precomputed `Reference`."""
    path = Path(path)
    row = {"path": str(path), "size_bytes": path.stat().st_size}
    row.update(compare(run(path, ref.source, ref.inputs), ref))
    return row


def check_file(path: str | os.PathLike, ref: Reference, *, latency_runs: int = 200) -> dict:
    """Everything `validate` reports, for a file and a precomputed `Reference`."""
    row = evaluate_file(path, ref)
    row.update(latency.measure({"file": path}, ref.source, [x[:1] for x in ref.inputs], runs=latency_runs)["file"])
    return row


def validate(tflite_path: str | os.PathLike, model, eval_data, *, metric: str | None = "auto",
             max_samples: int | None = None, latency_runs: int = 200, input_signature=None) -> dict:
    """Runs a TFLite file with LiteRT on evaluation data and compares it with the Keras model.

    Args:
        tflite_path: the .tflite file.
        model: the Keras 3 model it was converted from.
        eval_data: (x, y) numpy arrays, or a tf.data.Dataset of (x, y) (batched or
            not); with x only, the metric is skipped and only agreement is reported.
        metric: "auto" (accuracy for classifiers, else mae), "accuracy",
            "binary_accuracy", "mae", "mse", or None.
        max_samples: evaluate on the first N examples only (None: all).
        latency_runs: timed `invoke()` calls per latency figure, in 5-20 alternating rounds.
        input_signature: as for `tflite`, when the model's inputs are unknown.

    Returns:
        A dict: path, size_bytes, metric (its name), value (TFLite), keras_value,
        drop (percentage points; percent for error metrics), agreement (top-1,
        classifiers), max_abs_diff, samples, p50_us_1t / p90_us_1t (batch 1,
        1 thread), p50_us_all / p90_us_all (all threads), p50_us_1t_no_xnnpack /
        p90_us_1t_no_xnnpack, threads_all, xnnpack (whether the delegate applied).
        p50 is the median of the rounds' p50s, the three settings alternating.

    Example:
        row = tfscale.export.validate("int8.tflite", model, (x_test, y_test))
    """
    path = Path(tflite_path)
    if not path.is_file():
        raise ExportError(f"{path} {'is a folder' if path.is_dir() else 'does not exist'}", where=str(path),
                          fix="give the .tflite file that tfscale.export.tflite wrote")
    ref = reference(prepare(model, input_signature), eval_data, metric=metric, max_samples=max_samples)
    return check_file(path, ref, latency_runs=latency_runs)
