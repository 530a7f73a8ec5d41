"""Mixed precision: which Keras dtype policy to train with, chosen from the hardware or by name.

"auto" picks bfloat16 on a TPU, float16 on GPUs of compute capability 7.0 or
more (tensor cores; the engine says, `Engine.float16_capable`), and float32
elsewhere (a CPU gains nothing from float16). The same on both engines.
With "mixed_float16", Keras wraps the optimizer in a `LossScaleOptimizer`
(dynamic loss scaling) when the model is compiled.
"""

from __future__ import annotations

import contextlib
import logging

import keras

from tfscale.config import PRECISIONS
from tfscale.errors import ConfigError

log = logging.getLogger("tfscale")

def resolve_precision(precision: str = "auto", accelerator: str | None = None, *, float16: bool = False) -> str:
    """The Keras dtype policy name for `precision` on `accelerator` ("TPU", "GPU" or "CPU").

    `float16`: the GPUs run float16 fast (`scale.engine.float16_capable()`).

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
    if accelerator == "GPU" and float16:
        return "mixed_float16"
    return "float32"


def for_scale(precision: str, scale) -> str:
    """`resolve_precision` for the accelerators of `scale` (None: a CPU)."""
    if scale is None:
        return resolve_precision(precision)
    return resolve_precision(precision, scale.engine.accelerator,
                             float16=precision == "auto" and scale.engine.float16_capable())


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
    policy = for_scale(precision, scale)
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
