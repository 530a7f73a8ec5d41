"""Scoring a model's outputs: the task metric, and how closely two models agree.

Metrics are plain numpy on the first output, so a Keras model and its TFLite
files are scored by the same code. "auto" picks accuracy for classifiers
(several classes, or one sigmoid/logit unit with 0/1 labels) and mean absolute
error otherwise.
"""

from __future__ import annotations

import numpy as np

from tfscale.errors import ConfigError

METRICS = ("auto", "accuracy", "binary_accuracy", "mae", "mse", None)
HIGHER_IS_BETTER = {"accuracy": True, "binary_accuracy": True, "mae": False, "mse": False}


def pick(metric: str | None, output: np.ndarray, labels: np.ndarray | None) -> str | None:
    """The metric to use: `metric` itself, or what "auto" picks for this output and labels."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}", where="metric",
                          fix=f"use one of: {', '.join(str(m) for m in METRICS)}")
    if labels is None or metric is None:
        return None
    if metric != "auto":
        return metric
    classes = output.shape[-1] if output.ndim >= 2 else 1
    if output.ndim == 2 and classes > 1:
        return "accuracy"
    if classes == 1 and np.isin(np.unique(labels), (0, 1)).all():
        return "binary_accuracy"
    return "mae"


def _threshold(reference: np.ndarray) -> float:
    """0.5 for probabilities, 0 for logits."""
    return 0.5 if reference.min() >= 0 and reference.max() <= 1 else 0.0


def predicted_classes(metric: str, output: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    if metric == "binary_accuracy":
        return (output.reshape(len(output)) > threshold).astype(np.int64)
    return output.reshape(len(output), -1).argmax(-1)


def _labels(metric: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if metric == "accuracy" and labels.ndim == 2 and labels.shape[1] > 1:
        return labels.argmax(-1)  # one-hot
    return labels.reshape(len(labels)).astype(np.int64)


def score(metric: str | None, output: np.ndarray, labels: np.ndarray | None, reference: np.ndarray) -> float | None:
    """The metric of `output` against `labels` (`reference`, the Keras output, fixes the binary threshold)."""
    if metric is None:
        return None
    if metric in ("accuracy", "binary_accuracy"):
        predicted = predicted_classes(metric, output, _threshold(reference))
        return float((predicted == _labels(metric, labels)).mean())
    diff = output.reshape(len(output), -1).astype(np.float64) - np.asarray(labels).reshape(len(output), -1)
    return float(np.abs(diff).mean() if metric == "mae" else (diff ** 2).mean())


def agreement(metric: str | None, output: np.ndarray, reference: np.ndarray) -> float | None:
    """Fraction of examples whose predicted class matches the reference model's (classifiers only)."""
    if metric not in ("accuracy", "binary_accuracy") and not (output.ndim == 2 and output.shape[-1] > 1):
        return None
    metric = metric if metric in ("accuracy", "binary_accuracy") else "accuracy"
    threshold = _threshold(reference)
    same = predicted_classes(metric, output, threshold) == predicted_classes(metric, reference, threshold)
    return float(same.mean())


def drop(metric: str | None, value: float | None, keras_value: float | None) -> float | None:
    """How much worse `value` is than `keras_value`: percentage points for accuracies,
    percent increase for errors (mae, mse). Negative when better."""
    if metric is None or value is None or keras_value is None:
        return None
    if HIGHER_IS_BETTER[metric]:
        return 100.0 * (keras_value - value)
    return 100.0 * (value - keras_value) / max(abs(keras_value), 1e-12)
