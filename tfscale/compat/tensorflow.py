"""TensorFlow's private APIs that tfscale uses (the TensorFlow quarantine; see `tfscale.compat`).

Checked on TensorFlow 2.20 (tensorflow-tpu) and 2.21 (`CHECKED`). Each use, its reason, and what happens
where it is gone:

1. **The coordination service's barrier and key-value store** (`tensorflow.python.eager.context.context()`:
   `wait_at_barrier`, `set_config_key_value`, `get_config_key_value`, `delete_config_key_value`). Reason:
   TensorFlow 2.21 has no public API for them; the multi-worker strategies start the service, and tfscale's
   exit barrier (`TensorFlowEngine.barrier`) and the exchange of preemption flags (`TensorFlowEngine.exchange`)
   use it. Gone: `UpstreamError`.
2. **Attributes on tf.data functions tfscale traces** (`tensorflow.python.data.ops.structured_function.
   StructuredFunctionWrapper`, its `defun_kwargs` argument). Reason: a function carrying
   `experimental_ints_on_device` is set up without Grappler's multi-device pass, `iter()` ~100 ms -> ~5 ms
   (tfscale/data/functions.py). tf.data offers no public way to give a function attributes. The patch is
   scoped: `StructuredFunctionWrapper.__init__` is TensorFlow's own except while a thread is inside
   `data_function_attributes`, and then it adds the attributes only to functions traced in that thread
   (other threads, and the user's functions traced outside, get TensorFlow's default). Outside `CHECKED`, or
   where the class or the argument is gone: nothing is marked (iterators set up at TensorFlow's usual speed).
3. **The distributed dataset's step count and per-step check** (`DistributedDatasetsFromFunction._cardinality`,
   `._enable_get_next_as_optional`, `strategy.extended._in_multi_worker_mode()`). Reason: TF reports one
   worker's count of per-replica batches as the cardinality, which Keras reads as steps per epoch, and on
   several workers runs a collective before every step to agree that all still have data (tfscale's input
   gives every worker the same steps by construction); no public setter exists (tfscale/compat/keras/
   multi_worker.py, its docstring's 4-6). Gone: the step count stays TensorFlow's and the check stays on.
4. **int8 with some layers kept in float** (`TFLiteConverter._experimental_calibrate_only`,
   `tensorflow.lite.python.convert.mlir_quantize(..., denylisted_nodes=)`). Reason: mixed precision to an
   accuracy budget (tfscale/export/mixed.py) calibrates once and quantizes again with a growing list of ops left
   in float; the public `tf.lite.experimental.QuantizationDebugger` does the same two calls but runs the
   deprecated `tf.lite.Interpreter`, which tfscale never uses. Read and tested on TensorFlow 2.21 only. Gone:
   `UpstreamError` (the "auto" variant is not made; every other variant is).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading

from tfscale import compat

log = logging.getLogger("tfscale")

CHECKED = ((2, 20), (2, 21))  # the TensorFlow versions every use here was read and tested on
_CHECKED_TEXT = "2.20-2.21"


def in_checked_range() -> bool:
    import tensorflow as tf

    return CHECKED[0] <= compat.version(tf.__version__) <= CHECKED[1]


# 1. The coordination service ---------------------------------------------------------------------------------

_COORDINATION = ("wait_at_barrier", "set_config_key_value", "get_config_key_value", "delete_config_key_value")


def _coordination(method: str):
    """The method `method` of TensorFlow's eager context, which reaches the coordination service."""
    import tensorflow as tf

    try:
        from tensorflow.python.eager import context  # private: see 1. in the module docstring

        return getattr(context.context(), method)
    except (ImportError, AttributeError):
        raise compat.changed("TensorFlow", tf.__version__, f"tensorflow.python.eager.context.context().{method}",
                             _CHECKED_TEXT, needed_for="the workers' exit barrier and exchange of flags") from None


def wait_at_barrier(name: str, timeout_s: float) -> None:
    """Waits until every task of the cluster reached the barrier `name` (raises TensorFlow's error after timeout)."""
    _coordination("wait_at_barrier")(name, int(timeout_s * 1000))


def set_key_value(key: str, value: str) -> None:
    """Stores `value` under `key` in the coordination service's key-value store."""
    _coordination("set_config_key_value")(key, value)


def get_key_value(key: str, timeout_s: float) -> str:
    """The value under `key`, waiting for a task to store it (TensorFlow's error after `timeout_s`)."""
    return _coordination("get_config_key_value")(key, int(timeout_s * 1000))


def delete_key_value(key: str) -> None:
    _coordination("delete_config_key_value")(key)


# 2. Attributes on tf.data functions tfscale traces -----------------------------------------------------------

_traced = threading.local()  # .attributes: the attributes to give functions traced in this thread, or None
_lock = threading.Lock()
_patch = {"inside": 0, "original": None, "patched": None}  # threads inside `data_function_attributes`
_wrapper_found: list = []  # [(StructuredFunctionWrapper, index of defun_kwargs)] or [None] once looked up


def _wrapper():
    """(StructuredFunctionWrapper, the position of its `defun_kwargs`), or None (see 2.: nothing is marked)."""
    if not _wrapper_found:
        _wrapper_found.append(_find_wrapper())
    return _wrapper_found[0]


def _find_wrapper():
    import tensorflow as tf

    if not in_checked_range():
        log.debug("tf.data functions set up as TensorFlow does (TensorFlow %s is outside %s)", tf.__version__,
                  _CHECKED_TEXT)
        return None
    try:
        from tensorflow.python.data.ops import structured_function  # private: see 2. in the module docstring

        wrapper = structured_function.StructuredFunctionWrapper
        parameters = list(inspect.signature(wrapper.__init__).parameters)
    except (ImportError, AttributeError, TypeError, ValueError) as e:
        log.debug("tf.data functions set up as TensorFlow does (no StructuredFunctionWrapper: %s)", e)
        return None
    if "defun_kwargs" not in parameters:
        log.debug("tf.data functions set up as TensorFlow does (StructuredFunctionWrapper has no defun_kwargs)")
        return None
    return wrapper, parameters.index("defun_kwargs")  # counting self


def can_mark_data_functions() -> bool:
    """True where `data_function_attributes` marks functions (TensorFlow in `CHECKED`, the wrapper as read)."""
    return _wrapper() is not None


@contextlib.contextmanager
def data_function_attributes(attributes: dict):
    """tf.data functions traced inside, in this thread, carry `attributes`; yields False where none can (2.)."""
    found = _wrapper()
    if found is None:
        yield False
        return
    before = getattr(_traced, "attributes", None)
    _traced.attributes = attributes
    _enter(*found)
    try:
        yield True
    finally:
        _traced.attributes = before
        _leave(found[0])


def _enter(wrapper, position: int) -> None:
    with _lock:
        if _patch["inside"] == 0:
            original = wrapper.__init__

            @functools.wraps(original)
            def init(self, *args, **kwargs):
                attributes = getattr(_traced, "attributes", None)
                if attributes and len(args) < position and not kwargs.get("defun_kwargs"):
                    kwargs["defun_kwargs"] = dict(attributes)
                return original(self, *args, **kwargs)

            _patch.update(original=original, patched=init)
            wrapper.__init__ = init
        _patch["inside"] += 1


def _leave(wrapper) -> None:
    with _lock:
        _patch["inside"] -= 1
        if _patch["inside"] == 0:
            if wrapper.__init__ is _patch["patched"]:  # not patched again by someone else meanwhile
                wrapper.__init__ = _patch["original"]
            _patch.update(original=None, patched=None)


# 3. The distributed dataset ----------------------------------------------------------------------------------

def set_distributed_steps(distributed, steps: int) -> bool:
    """Makes a distributed dataset report `steps` (or `tf.data.UNKNOWN_CARDINALITY`) as its cardinality, which
    Keras reads as steps per epoch; False where it has no such field (3.)."""
    if not hasattr(distributed, "_cardinality"):
        return False
    distributed._cardinality = steps
    return True


def distributed_steps(dataset) -> int | None:
    """The cardinality a distributed dataset reports (`set_distributed_steps`), or None."""
    return getattr(dataset, "_cardinality", None)


def skip_data_check(distributed) -> bool:
    """Turns off the per-step cross-worker check that every worker still has data (3.); False where it cannot."""
    if not hasattr(distributed, "_enable_get_next_as_optional"):
        return False
    distributed._enable_get_next_as_optional = False
    return True


def in_multi_worker_mode(strategy) -> bool:
    """`strategy` spans several worker processes (False where TensorFlow does not say; 3.)."""
    mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(mode and mode())


# 4. int8 with some layers kept in float ------------------------------------------------------------------------

def calibrated_model(converter) -> bytes:
    """The float flatbuffer of a converter set up for int8, with the calibration statistics of its
    `representative_dataset` and no quantization yet (4.)."""
    import tensorflow as tf

    if not hasattr(converter, "_experimental_calibrate_only"):
        raise compat.changed("TensorFlow", tf.__version__, "TFLiteConverter._experimental_calibrate_only",
                             _CHECKED_TEXT, needed_for="int8 with layers kept in float (the auto variant)")
    converter._experimental_calibrate_only = True
    return converter.convert()


def quantize_calibrated(calibrated: bytes, float_nodes: list[str]) -> bytes:
    """`calibrated` (from `calibrated_model`) quantized to int8 with float32 input and output, except the ops
    whose output tensors are named in `float_nodes`, which stay float (4.)."""
    import tensorflow as tf

    try:
        from tensorflow.lite.python import convert  # private: see 4. in the module docstring

        quantize = convert.mlir_quantize
    except (ImportError, AttributeError):
        raise compat.changed("TensorFlow", tf.__version__, "tensorflow.lite.python.convert.mlir_quantize",
                             _CHECKED_TEXT, needed_for="int8 with layers kept in float (the auto variant)") from None
    return quantize(calibrated, fully_quantize=False, denylisted_nodes=list(float_nodes))
