"""Learning-rate scaling with the batch size, and warmup (Goyal et al. 2017, arXiv:1706.02677).

When the batch grows k times, `linear` scaling multiplies the learning rate by k
(for SGD), `sqrt` by sqrt(k) (for Adam-like optimizers), `none` keeps it. A large
scaled rate is reached by a linear warmup from the reference rate, optionally
followed by cosine decay. The schedule is a Keras `LearningRateSchedule` that
serializes with the model and optimizer.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from tfscale.config import LR_SCALINGS
from tfscale.errors import ConfigError


def scaled_learning_rate(base_lr: float, base_batch_size: int, batch_size: int, scaling: str = "linear") -> float:
    """The learning rate for `batch_size` examples per update, from `base_lr` at `base_batch_size`.

    Example:
        scaled_learning_rate(0.1, 256, 1024, "linear")  # 0.4
    """
    if scaling not in LR_SCALINGS:
        raise ConfigError(f"learning-rate scaling {scaling!r} is unknown", where="lr_scaling",
                          fix=f"use one of: {', '.join(LR_SCALINGS)}")
    if base_batch_size < 1 or batch_size < 1:
        raise ConfigError(f"batch sizes must be positive, got base {base_batch_size} and batch {batch_size}",
                          where="base_batch_size", fix="give the batch size base_lr was tuned for")
    ratio = batch_size / base_batch_size
    return base_lr * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[scaling]


@keras.saving.register_keras_serializable(package="tfscale")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from `initial_lr` to `peak_lr`, then constant or cosine decay to `final_lr`.

    Args:
        peak_lr: the (scaled) learning rate reached after warmup.
        warmup_steps: optimizer updates of warmup; the rate is `peak_lr` from update `warmup_steps - 1` on.
        initial_lr: where warmup starts (Goyal et al.: the reference rate before scaling).
        decay_steps: updates of cosine decay after warmup (None: constant).
        final_lr: where cosine decay ends.
        steps_per_update: batches per optimizer update (gradient accumulation): Keras calls the
            schedule with the batch count, and warmup counts updates.

    Example:
        schedule = WarmupSchedule(peak_lr=0.4, warmup_steps=500, initial_lr=0.1)
        optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    """

    def __init__(self, peak_lr: float, warmup_steps: int = 0, initial_lr: float = 0.0,
                 decay_steps: int | None = None, final_lr: float = 0.0, steps_per_update: int = 1):
        if warmup_steps < 0 or steps_per_update < 1 or (decay_steps is not None and decay_steps < 1):
            raise ConfigError(f"invalid schedule: warmup_steps={warmup_steps}, decay_steps={decay_steps}, "
                              f"steps_per_update={steps_per_update}", where="WarmupSchedule",
                              fix="give warmup_steps >= 0, decay_steps >= 1 or None, steps_per_update >= 1")
        self.peak_lr = float(peak_lr)
        self.warmup_steps = int(warmup_steps)
        self.initial_lr = float(initial_lr)
        self.decay_steps = None if decay_steps is None else int(decay_steps)
        self.final_lr = float(final_lr)
        self.steps_per_update = int(steps_per_update)

    def __call__(self, step):
        update = ops.floor_divide(ops.cast(step, "float32"), float(self.steps_per_update))
        lr = ops.convert_to_tensor(self.peak_lr, "float32")
        if self.decay_steps:
            progress = ops.clip((update - self.warmup_steps) / self.decay_steps, 0.0, 1.0)
            cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
            lr = self.final_lr + (self.peak_lr - self.final_lr) * cosine
        if self.warmup_steps:
            fraction = ops.minimum((update + 1.0) / self.warmup_steps, 1.0)
            warm = self.initial_lr + (self.peak_lr - self.initial_lr) * fraction
            lr = ops.where(update < self.warmup_steps, warm, lr)
        return lr

    def get_config(self) -> dict:
        return {"peak_lr": self.peak_lr, "warmup_steps": self.warmup_steps, "initial_lr": self.initial_lr,
                "decay_steps": self.decay_steps, "final_lr": self.final_lr,
                "steps_per_update": self.steps_per_update}

    @classmethod
    def from_config(cls, config: dict) -> "WarmupSchedule":
        return cls(**config)

    def __repr__(self) -> str:
        decay = f", cosine over {self.decay_steps}" if self.decay_steps else ""
        return (f"WarmupSchedule({self.initial_lr:g} -> {self.peak_lr:g} in {self.warmup_steps} update(s){decay}"
                f"{f', {self.steps_per_update} batches per update' if self.steps_per_update > 1 else ''})")
