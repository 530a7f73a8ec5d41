"""`scale.optimizer(...)`: a Keras optimizer whose learning rate follows the batch it is used with."""

from __future__ import annotations

import logging
from typing import Any

import keras

from tfscale.data.sharding.placement import DistributedInput
from tfscale.errors import ConfigError
from tfscale.scale.schedule import WarmupSchedule, scaled_learning_rate

log = logging.getLogger("tfscale")

OPTIMIZERS = ("adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw", "ftrl", "lion", "nadam", "rmsprop", "sgd")


def build_optimizer(scale, name: str | type = "adam", *, base_lr: float = 1e-3, base_batch_size: int | None = None,
                    global_batch_size: int | None = None, training_input: DistributedInput | None = None,
                    scaling: str = "linear", warmup_steps: int = 0, decay_steps: int | None = None,
                    gradient_accumulation_steps: int = 1,
                    **optimizer_kwargs: Any) -> keras.optimizers.Optimizer:
    """A Keras optimizer for `scale`, its learning rate scaled to the effective batch.

    Args:
        scale: the `tfscale.Scale` training runs under.
        name: a Keras optimizer name ("adam", "sgd", ...) or class.
        base_lr: the learning rate tuned for `base_batch_size` examples per update.
        base_batch_size: the reference batch (None: no scaling).
        global_batch_size: examples per step over all replicas (default: `training_input`'s).
        training_input: the `DistributedInput` training reads (`scale.input`); without it and
            `global_batch_size`, the training input given to `scale.distribute` (`scale.training_batch_size`).
        scaling: "linear", "sqrt" or "none".
        warmup_steps: updates of linear warmup from `base_lr` to the scaled rate.
        decay_steps: updates of cosine decay after warmup (None: constant).
        gradient_accumulation_steps: batches averaged into one update (the Keras 3 optimizer's own
            accumulation); the effective batch is global batch x these steps.
        **optimizer_kwargs: passed to the optimizer, e.g. momentum=0.9, weight_decay=1e-4.

    Raises:
        ConfigError: unknown optimizer or argument, or a global batch size that is unknown or does
            not divide over the replicas.

    Example:
        train = scale.distribute(dataset, global_batch_size=512)
        with scale.scope():
            model.compile(optimizer=scale.optimizer("sgd", base_lr=0.1, base_batch_size=256, warmup_steps=100))
    """
    global_batch = global_batch_size or scale.training_batch_size(training_input, where="scale.optimizer(...)")
    if global_batch is None and base_batch_size is not None and scaling != "none":
        raise ConfigError("the global batch size is unknown, so the learning rate cannot be scaled",
                          where="scale.optimizer(...)",
                          fix="pass global_batch_size=... or training_input=scale.input(...), or call "
                              "scale.distribute(data, global_batch_size=...) first")
    if global_batch is not None:
        scale.batch_sizes(global_batch)  # the batch contract: an error when it does not divide
    effective = (global_batch or base_batch_size or 1) * gradient_accumulation_steps
    learning_rate = learning_rate_for(base_lr, base_batch_size or effective, effective, scaling=scaling,
                                      warmup_steps=warmup_steps, decay_steps=decay_steps,
                                      steps_per_update=gradient_accumulation_steps)
    with scale.scope():
        return scale.engine.prepare_optimizer(
            make_optimizer(name, learning_rate, gradient_accumulation_steps, **optimizer_kwargs))


def learning_rate_for(base_lr: float, base_batch_size: int, effective_batch_size: int, *, scaling: str = "linear",
                      warmup_steps: int = 0, decay_steps: int | None = None, steps_per_update: int = 1):
    """The scaled learning rate: a float, or a `WarmupSchedule` when there is warmup or decay."""
    peak = scaled_learning_rate(base_lr, base_batch_size, effective_batch_size, scaling)
    log.info("learning rate %g for %d examples per update -> %g for %d (%s scaling)%s", base_lr, base_batch_size,
             peak, effective_batch_size, scaling, f", warmup over {warmup_steps} update(s)" if warmup_steps else "")
    if not warmup_steps and not decay_steps:
        return peak
    # Goyal et al.: ramp up from the reference rate to the larger scaled one; otherwise from zero.
    start = base_lr if peak > base_lr else 0.0
    return WarmupSchedule(peak, warmup_steps=warmup_steps, initial_lr=start, decay_steps=decay_steps,
                          steps_per_update=steps_per_update)


def make_optimizer(name: str | type, learning_rate, gradient_accumulation_steps: int = 1,
                   **kwargs: Any) -> keras.optimizers.Optimizer:
    """Instantiates the Keras optimizer `name` with `learning_rate` and accumulation, as a ConfigError on mistakes.

    The engine may still need to adapt it (`scale.engine.prepare_optimizer`: gradient accumulation under
    tf.distribute, keras-team/keras#20582).
    """
    if isinstance(name, keras.optimizers.Optimizer):
        raise ConfigError("an optimizer instance cannot be rescaled", where="optimizer",
                          fix='give its name or class, e.g. optimizer="sgd", momentum=0.9')
    if isinstance(name, str) and name.lower() not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}", where="optimizer", fix=f"use one of: {', '.join(OPTIMIZERS)}")
    accumulation = gradient_accumulation_steps if gradient_accumulation_steps > 1 else None
    try:
        if isinstance(name, str):
            config = {"learning_rate": learning_rate, "gradient_accumulation_steps": accumulation, **kwargs}
            optimizer = keras.optimizers.get({"class_name": name.lower(), "config": config})
        else:
            optimizer = name(learning_rate=learning_rate, gradient_accumulation_steps=accumulation, **kwargs)
    except (TypeError, ValueError) as e:  # Keras says "Argument(s) not recognized" with a ValueError
        kind = getattr(name, "__name__", name)
        raise ConfigError(f"optimizer {name!r} rejected its arguments: {e}", where="optimizer arguments",
                          fix=f"give only arguments that keras.optimizers.{kind} accepts") from None
    return optimizer


def peak_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The highest learning rate `optimizer` trains with: its schedule's peak (`WarmupSchedule`, or a Keras
    schedule's initial rate), else its constant rate (as the optimizer holds it, in float32); NaN where
    neither is known (a learning rate given as a function)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):  # what compile() makes under mixed_float16
        optimizer = optimizer.inner_optimizer
    rate = optimizer.get_config().get("learning_rate")
    if isinstance(rate, dict):  # a serialized schedule
        config = rate.get("config") or {}
        rate = config.get("peak_lr", config.get("initial_learning_rate"))
    return float(rate) if isinstance(rate, (int, float)) else float("nan")
