"""The model as export sees it: detached from any strategy, with input specs and a serving function.

A model built under a strategy scope holds distributed variables (MirroredVariable
and friends). Export never converts those directly: it clones the model outside
the strategy and copies the weights, so conversion, saving and validation work
the same for a model built on a laptop or on worker 0 of a cluster.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import keras
import tensorflow as tf

from tfscale.compat import keras as keras_compat
from tfscale.errors import ExportError

log = logging.getLogger("tfscale")


@dataclasses.dataclass
class PreparedModel:
    """A model ready to export.

    Attributes:
        model: the model itself, or its clone outside any strategy.
        specs: one `tf.TensorSpec` per model input, batch dimension None.
        function: a concrete tf.function running the model in inference mode;
            it returns a list of outputs, named output_0, output_1, ... in TFLite.
        module: a tf.Module that tracks the function's variables (the converter needs it).
    """

    model: keras.Model
    specs: list[tf.TensorSpec]
    function: tf.types.experimental.ConcreteFunction
    module: tf.Module

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.specs]

    def predict(self, inputs: Sequence, batch_size: int = 256) -> list:
        """The model's outputs (numpy, one array per output) for whole input arrays."""
        import numpy as np

        n = len(inputs[0])
        parts = []
        for start in range(0, n, batch_size):
            batch = [tf.constant(x[start:start + batch_size], dtype=s.dtype) for x, s in zip(inputs, self.specs)]
            parts.append([o.numpy() for o in self.function(*batch)])
        return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]


def _is_distributed(model: keras.Model) -> bool:
    return any(isinstance(getattr(v, "value", v), tf.distribute.DistributedValues) for v in model.weights)


def copy_model(model: keras.Model) -> keras.Model:
    """A new, uncompiled model with the same architecture and weights (variables of the current scope)."""
    clone = model.__class__.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def is_chief(model, chief: bool | None = None) -> bool:
    """`chief` if given; otherwise whether `model`'s strategy says this process writes.

    MultiWorkerMirroredStrategy answers True on worker 0 only; single-process
    strategies (and no strategy) always answer True. Export never reads TF_CONFIG.
    """
    if chief is not None:
        return bool(chief)
    strategy = getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def detach(model: keras.Model) -> keras.Model:
    """`model`, or its clone with plain variables when it was built under a strategy scope."""
    if not _is_distributed(model):
        return model
    try:
        clone = copy_model(model)
    except Exception as e:  # subclassed models without get_config cannot be cloned
        log.info("could not clone %s outside its strategy (%s); converting it in place", model.name, e)
        return model
    log.info("cloned %s outside its distribution strategy for export", model.name)
    return clone


def input_specs(model: keras.Model, input_signature=None) -> list[tf.TensorSpec]:
    """One TensorSpec per input, from `input_signature` or the model's own inputs (batch None).

    Raises:
        ExportError: the model has no known inputs (a subclassed model never
            called) and no input_signature was given.
    """
    if input_signature is not None:
        specs = [input_signature] if isinstance(input_signature, tf.TensorSpec) else list(input_signature)
        if not all(isinstance(s, tf.TensorSpec) for s in specs):
            raise ExportError("input_signature must be a tf.TensorSpec or a list of them",
                              where="input_signature", fix="e.g. input_signature=[tf.TensorSpec([None, 28, 28, 1])]")
        return [tf.TensorSpec([None, *s.shape[1:]], s.dtype, name=s.name or f"input_{i}") for i, s in enumerate(specs)]
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        inputs = None
    if inputs:
        return [tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=_clean(t.name, i)) for i, t in enumerate(inputs)]
    shapes = keras_compat.build_shapes(model)
    if len(shapes) == 1:
        shape = tuple(next(iter(shapes.values())))
        return [tf.TensorSpec([None, *shape[1:]], getattr(model, "input_dtype", None) or "float32", name="input_0")]
    raise ExportError(f"the input shape of model {model.name!r} is unknown", where=f"model {model.name!r}",
                      fix="build the model (call it once or start it with keras.Input) or pass "
                          "input_signature=[tf.TensorSpec([None, ...], tf.float32)]")


def _clean(name: str | None, index: int) -> str:
    name = (name or "").replace(":", "_").replace("/", "_")
    return name if name and name.replace("_", "").isalnum() and not name[0].isdigit() else f"input_{index}"


def prepare(model: keras.Model, input_signature=None) -> PreparedModel:
    """Detaches `model`, finds its input specs and traces its serving function."""
    if not isinstance(model, keras.Model):
        raise ExportError(f"expected a Keras 3 model, got {type(model).__name__}", where="model",
                          fix="pass a keras.Model (a tf-keras/Keras 2 model must be converted by tf-keras itself)")
    specs = input_specs(model, input_signature)
    detached = detach(model)

    def serve(*args):
        outputs = detached(args[0] if len(args) == 1 else list(args), training=False)
        return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]

    module = tf.Module()
    module.variables_ = [getattr(v, "value", v) for v in detached.weights]
    module.serve = tf.function(serve, input_signature=specs, autograph=False)
    return PreparedModel(detached, specs, module.serve.get_concrete_function(), module)
