"""Mixed precision: which Keras dtype policy to train with, chosen from the hardware or by name.

"auto" picks bfloat16 on a TPU, float16 on GPUs of compute capability 7.0 or
more (tensor cores), and float32 elsewhere (a CPU gains nothing from float16).
With "mixed_float16", Keras wraps the optimizer in a `LossScaleOptimizer`
(dynamic loss scaling) when the model is compiled.
"""

from __future__ import annotations

import contextlib
import logging

import keras
import tensorflow as tf

from tfscale.config import PRECISIONS
from tfscale.errors import ConfigError

log = logging.getLogger("tfscale")

MIN_FLOAT16_CAPABILITY = (7, 0)


def resolve_precision(precision: str = "auto", accelerator: str | None = None) -> str:
    """The Keras dtype policy name for `precision` on `accelerator` ("TPU", "GPU" or "CPU").

    Example:
        resolve_precision("auto", scale.topology.accelerator)  # "float32" on a CPU
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is unknown", where="precision",
                          fix=f"use one of: {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if accelerator == "TPU":
        return "mixed_bfloat16"
    if accelerator == "GPU" and _gpus_support_float16():
        return "mixed_float16"
    return "float32"


def _gpus_support_float16() -> bool:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return False
    for gpu in gpus:
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability is None or tuple(capability) < MIN_FLOAT16_CAPABILITY:
            return False
    return True


@contextlib.contextmanager
def precision_policy(policy: str):
    """Sets Keras's global dtype policy while models are built, then restores the previous one.

    Example:
        with precision_policy("mixed_float16"), scale.scope():
            model = build_model()
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)


def use_precision(precision: str = "auto", scale=None) -> str:
    """Sets Keras's global dtype policy for the rest of the process; returns the policy chosen.

    Call it before building the model: ``tfscale.train.precision.use_precision("auto", scale)``.
    """
    policy = resolve_precision(precision, scale.topology.accelerator if scale is not None else None)
    keras.config.set_dtype_policy(policy)
    log.info("precision %s -> Keras dtype policy %s", precision, policy)
    return policy


def check_outputs(model: keras.Model, policy: str) -> None:
    """Warns when a mixed-precision model's outputs are not float32 (the loss is then computed in 16 bits)."""
    if not policy.startswith("mixed_"):
        return
    try:
        outputs = model.outputs or []
    except (AttributeError, ValueError):  # a subclassed model that was never called has no outputs yet
        return
    low = [getattr(t, "name", "?") for t in outputs if t.dtype in ("float16", "bfloat16")]
    if low:
        log.warning("model outputs %s are %s under %s: give the last layer dtype='float32' "
                    "(e.g. keras.layers.Activation('softmax', dtype='float32')) for a stable loss",
                    low, policy.removeprefix("mixed_"), policy)
