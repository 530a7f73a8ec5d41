"""Stop at the first non-finite loss, with an error that names the step, before any checkpoint is written."""

from __future__ import annotations

import math

import keras

from tfscale.errors import TfscaleError


class TrainingError(TfscaleError, RuntimeError):
    """Training itself went wrong (a NaN or infinite loss, a run that cannot resume)."""


class TerminateOnNaN(keras.callbacks.Callback):
    """Raises `TrainingError` at the first batch whose loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, which lets the epoch end (and epoch-end
    checkpoints save the broken weights), this stops at once, so the last checkpoint
    is the last good one. Every worker sees the same (all-reduced) loss, so every
    worker stops at the same step. Put it first in the callback list.

    Args:
        learning_rate: the (scaled) learning rate, quoted in the error's fix.
    """

    def __init__(self, learning_rate: float | None = None):
        super().__init__()
        self.learning_rate = learning_rate
        self._epoch = 0
        self._steps_before_epoch = 0
        self._last_batch = -1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._steps_before_epoch += self._last_batch + 1
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch = batch
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(float(loss)):
            return
        step = self._steps_before_epoch + batch + 1
        lr = f" (peak learning rate {self.learning_rate:g})" if self.learning_rate else ""
        raise TrainingError(
            f"the loss became {float(loss)} at epoch {self._epoch + 1}, step {batch + 1} of the epoch "
            f"(step {step} of this run); training stopped before saving those weights",
            where="model.fit, on every worker",
            fix=f"lower the learning rate{lr} or add warmup, look for NaN/inf in the input data, "
                "or train in float32; the last checkpoint holds the last good weights")
