"""SavedModel and .keras files, and Keras-native int8 quantization for serving inside Keras."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from tfscale.compat import keras as keras_compat
from tfscale.errors import ConfigError, ExportError
from tfscale.export import files, handoff
from tfscale.export.source import copy_model, detach, is_chief, prepare

log = logging.getLogger("tfscale")

KERAS_MODES = ("int8", "int4", "float8")


def saved_model(model, path: str | os.PathLike, *, overwrite: bool = False, input_signature=None,
                chief: bool | None = None) -> Path:
    """Writes a TensorFlow SavedModel directory (serving signature "serve"/"serving_default").

    Args:
        model: a Keras 3 model, built under any strategy scope (or none).
        path: the directory to create.
        overwrite: replace an existing directory (swapped in only once complete).
        input_signature: tf.TensorSpec(s) for the inputs; default: the model's inputs.
        chief: write only when True; None: ask the model's strategy (see `tflite`).

    Returns:
        The directory written.
    """
    if handoff.needed():  # a SavedModel holds TensorFlow graphs: written by a TensorFlow process
        return handoff.run("saved_model", model, path, overwrite=overwrite) if handoff.is_chief(chief) else Path(path)
    path = Path(path)
    if not is_chief(model, chief):
        log.info("not the chief: %s not written", path)
        return path
    files.check_target(path, overwrite=overwrite)
    source = prepare(model, input_signature)
    with files.atomic_dir(path, overwrite=overwrite) as tmp:
        try:
            signature = [source.specs[0]] if len(source.specs) == 1 else [list(source.specs)]
            source.model.export(str(tmp), format="tf_saved_model", input_signature=signature, verbose=False)
        except Exception as e:
            raise ExportError(f"could not write a SavedModel of {source.model.name!r}: {e}", where=str(path),
                              fix="check that the model runs on the given input_signature") from e
    log.info("wrote SavedModel %s", path)
    return path


def keras_file(model, path: str | os.PathLike, *, overwrite: bool = False, chief: bool | None = None) -> Path:
    """Writes the model as a .keras file (architecture, weights, compile and optimizer state).

    Args:
        model: a Keras 3 model.
        path: the file to write; must end in ".keras".
        overwrite: replace an existing file.
        chief: write only when True; None: ask the model's strategy (see `tflite`).

    Returns:
        The path written.
    """
    path = _keras_path(path)
    if not is_chief(model, chief):
        log.info("not the chief: %s not written", path)
        return path
    with files.atomic_file(path, overwrite=overwrite, suffix=".keras") as tmp:
        try:
            model.save(tmp)
        except Exception as e:
            raise ExportError(f"could not save {model.name!r} as .keras: {e}", where=str(path),
                              fix="register custom layers with @keras.saving.register_keras_serializable "
                                  "and give them get_config") from e
    log.info("wrote %s", path)
    return path


def _keras_path(path) -> Path:
    path = Path(path)
    if path.suffix != ".keras":
        raise ConfigError(f"a Keras model file must end in .keras, got {path.name!r}", where=str(path),
                          fix=f"use {path.with_suffix('.keras').name}")
    return path


def keras_quantized(model, path: str | os.PathLike, *, mode: str = "int8", overwrite: bool = False,
                    chief: bool | None = None) -> Path:
    """Writes a copy of the model quantized by Keras itself (``model.quantize``), to serve inside Keras.

    The user's model is not changed: a clone is quantized. Keras quantizes the
    layers it knows (Dense, EinsumDense, Embedding, ...) and leaves others float.

    Args:
        model: a Keras 3 model.
        path: the .keras file to write.
        mode: a `keras.Model.quantize` mode: "int8", "int4" or "float8".
        overwrite: replace an existing file.
        chief: write only when True; None: ask the model's strategy (see `tflite`).

    Returns:
        The path written; load it with `keras.models.load_model`.

    Example:
        tfscale.export.keras_quantized(model, "saved_models/m/int8.keras")
    """
    if mode not in KERAS_MODES:
        raise ConfigError(f"unknown Keras quantization mode {mode!r}", where="mode",
                          fix=f"use one of: {', '.join(KERAS_MODES)}")
    path = _keras_path(path)
    if not is_chief(model, chief):
        return path
    files.check_target(path, overwrite=overwrite)
    clone = quantized_clone(model, mode)
    return keras_file(clone, path, overwrite=overwrite)


def quantized_clone(model, mode: str = "int8"):
    """A clone of `model` with `model.quantize(mode)` applied; the original is untouched."""
    try:
        clone = copy_model(detach(model))  # uncompiled: no optimizer state in a file for serving
    except Exception as e:
        raise ExportError(f"could not copy {model.name!r} to quantize it: {e}", where=f"model {model.name!r}",
                          fix="give custom layers get_config so the model can be cloned") from e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per layer Keras leaves in float
        try:
            clone.quantize(mode)
        except Exception as e:
            raise ExportError(f"Keras could not quantize {model.name!r} to {mode}: {e}",
                              where=f"model {model.name!r}", fix="try mode='int8', or export TFLite instead") from e
    done = [layer.name for layer in keras_compat.flatten_layers(clone)
            if getattr(layer, "quantization_mode", None)]
    if not done:
        raise ExportError(f"Keras quantized no layer of {model.name!r} (it quantizes Dense, EinsumDense, Embedding)",
                          where=f"model {model.name!r}", fix="use tfscale.export.tflite(..., quantize='int8')")
    log.info("Keras %s quantized layers: %s", mode, ", ".join(done))
    return clone
