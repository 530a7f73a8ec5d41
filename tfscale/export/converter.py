"""Keras 3 model → TFLite/LiteRT flatbuffer, in every post-training quantization mode.

The converter runs on a concrete function of the (detached) model with TFLite
builtin ops only. Keras' own ``model.export(format="litert")`` turns on
SELECT_TF_OPS (flex) on the TF backend, which mobile LiteRT runtimes lack, so it
is not used; flex ops are allowed only when asked for, and a model that needs
them is refused naming the op and the layer it comes from.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfscale.compat import keras as keras_compat
from tfscale.errors import ConfigError, DataError, ExportError
from tfscale.export import files, handoff, samples
from tfscale.export.source import PreparedModel, input_specs, is_chief, prepare

log = logging.getLogger("tfscale")

MODES = ("float32", "dynamic", "float16", "int8", "int16x8")
INT8_IO = ("int8", "uint8", "float32")
_NEEDS_CALIBRATION = ("int8", "int16x8")


def check_mode(quantize: str | None, int8_io: str = "int8") -> str:
    """The mode name ("float32" for None); a ConfigError naming the accepted ones otherwise."""
    mode = "float32" if quantize in (None, "none") else quantize
    if mode not in MODES:
        raise ConfigError(f"unknown quantization mode {quantize!r}", where="quantize",
                          fix=f"use one of: None, {', '.join(MODES[1:])}")
    if int8_io not in INT8_IO:
        raise ConfigError(f"unknown int8_io {int8_io!r}", where="int8_io", fix=f"use one of: {', '.join(INT8_IO)}")
    return mode


def calibration_inputs(specs: list[tf.TensorSpec], calibration, num_samples: int) -> list[np.ndarray]:
    """`num_samples` calibration examples (one array per input), checked against the model's inputs."""
    if calibration is None:
        raise DataError("int8 and int16x8 need calibration data", where="calibration",
                        fix="pass calibration= the training tf.data pipeline (or numpy inputs)")
    if num_samples < 1:
        raise ConfigError(f"num_calibration_samples must be >= 1, got {num_samples}",
                          where="num_calibration_samples", fix="give e.g. 200")
    inputs, _ = samples.collect(calibration, specs, max_samples=num_samples, where="calibration data")
    return inputs


def _converter(source: PreparedModel, mode: str, calibration: list[np.ndarray] | None, allow_flex: bool,
               int8_io: str) -> tf.lite.TFLiteConverter:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([source.function], source.module)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in _NEEDS_CALIBRATION:
        def representative():
            for i in range(len(calibration[0])):
                yield [x[i:i + 1] for x in calibration]

        converter.representative_dataset = representative
        if mode == "int8":
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io != "float32" and all(s.dtype.is_floating for s in source.specs):
                converter.inference_input_type = converter.inference_output_type = getattr(tf, int8_io)
        else:
            ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if allow_flex:
        ops = ops + [tf.lite.OpsSet.SELECT_TF_OPS]
    converter.target_spec.supported_ops = ops
    return converter


def convert(source: PreparedModel, mode: str, *, calibration: list[np.ndarray] | None = None, allow_flex: bool = False,
            int8_io: str = "int8") -> bytes:
    """The flatbuffer for `source` in `mode`; an ExportError naming op and layer when it cannot convert."""
    converter = _converter(source, mode, calibration, allow_flex, int8_io)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the converter warns about unset input statistics
            return converter.convert()
    except Exception as e:  # ConverterError, and RuntimeError/ValueError from calibration
        raise explain(e, source, mode, allow_flex) from e


def _layer_names(model) -> list[str]:
    names = []
    for layer in keras_compat.flatten_layers(model):
        names.append(layer.name)
    return names


def culprits(error: Exception, model) -> list[tuple[str, str | None]]:
    """(op, layer or None) pairs the converter blamed, from its structured errors or its message."""
    found = []
    known = set(_layer_names(model))
    for item in getattr(error, "errors", None) or []:
        op = item.operator.name or None
        where = next((c.name for c in item.location.call if c.name), "")
        if op:
            found.append((op, _layer_from_path(where, known)))
    if not found:
        for op in re.findall(r"'(tf\.\w+)' op is neither a custom op nor a flex op", str(error)):
            found.append((op, None))
    return list(dict.fromkeys(found))


def _layer_from_path(path: str, known: set[str]) -> str | None:
    """The deepest Keras layer named in a TF name scope path like 'model/my_layer_1/Svd@__inference_..'."""
    layer = None
    for part in path.split("@")[0].split("/"):
        name = part
        while name and name not in known and re.search(r"_\d+$", name):
            name = re.sub(r"_\d+$", "", name)
        if name in known:
            layer = name
    return layer


def _flex_would_work(source: PreparedModel) -> bool:
    try:
        _converter(source, "float32", None, True, "int8").convert()
        return True
    except Exception:
        return False


def explain(error: Exception, source: PreparedModel, mode: str, allow_flex: bool) -> ExportError:
    """An ExportError saying which op of which layer stopped the conversion, and what to do."""
    blamed = culprits(error, source.model)
    if not blamed:
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        return ExportError(f"TFLite conversion ({mode}) of model {source.model.name!r} failed: {first}",
                           where=f"model {source.model.name!r}",
                           fix="run with -v/logging INFO for the converter's log; try another quantization mode")
    ops = ", ".join(f"{op} (layer {layer!r})" if layer else op for op, layer in blamed)
    if not allow_flex and _flex_would_work(source):
        return ExportError(f"model {source.model.name!r} needs TensorFlow ops that TFLite has no builtin kernel "
                           f"for: {ops}; they would need flex (SELECT_TF_OPS), which mobile LiteRT runtimes lack",
                           where=f"layer {blamed[0][1]!r}" if blamed[0][1] else f"model {source.model.name!r}",
                           fix="rewrite that layer with ops TFLite supports (keras.ops), or pass allow_flex=True "
                               "if the target runtime links the flex delegate")
    return ExportError(f"model {source.model.name!r} cannot convert to TFLite ({mode}): unsupported op(s) {ops}",
                       where=f"layer {blamed[0][1]!r}" if blamed[0][1] else f"model {source.model.name!r}",
                       fix="rewrite that layer with ops TFLite supports (keras.ops), or register a custom op")


def tflite(model, path: str | os.PathLike, *, quantize: str | None = None, calibration=None,
           num_calibration_samples: int = 200, input_signature=None, allow_flex: bool = False,
           int8_io: str = "int8", overwrite: bool = False, chief: bool | None = None) -> Path:
    """Converts a Keras 3 model to one TFLite/LiteRT file, written atomically.

    Args:
        model: a Keras 3 model, built under any strategy scope (or none).
        path: the .tflite file to write.
        quantize: None (float32), "dynamic" (int8 weights), "float16", "int8"
            (full integer, needs calibration) or "int16x8" (int16 activations,
            int8 weights, needs calibration; float32 input/output).
        calibration: examples for int8/int16x8: the training tf.data pipeline
            (batched or not, x or (x, y)), a distributed dataset, or numpy inputs.
        num_calibration_samples: how many examples to draw (the first N).
        input_signature: tf.TensorSpec(s) for the inputs; default: the model's inputs.
        allow_flex: allow SELECT_TF_OPS (flex) ops, which mobile runtimes lack.
        int8_io: input/output type of an int8 model: "int8" (default), "uint8",
            or "float32" (quantize/dequantize inside the model).
        overwrite: replace an existing file.
        chief: write only when True; other workers pass False (e.g. scale.is_chief)
            and get the path back without anything written. None (default):
            ask the model's strategy (worker 0 of a multi-worker strategy writes).

    Returns:
        The path written.

    Raises:
        ExportError: the model cannot convert (naming the op and layer), or the file exists.
        DataError: calibration data is missing, or of the wrong shape or dtype.

    Example:
        tfscale.export.tflite(model, "saved_models/m/int8.tflite", quantize="int8", calibration=train)
    """
    if handoff.needed():  # Keras here runs on JAX: convert in a TensorFlow process
        return handoff.run("tflite", model, path, limits={"calibration": num_calibration_samples}, quantize=quantize,
                           calibration=calibration, num_calibration_samples=num_calibration_samples,
                           allow_flex=allow_flex, int8_io=int8_io, overwrite=overwrite) \
            if handoff.is_chief(chief) else Path(path)
    mode = check_mode(quantize, int8_io)
    path = Path(path)
    if mode in _NEEDS_CALIBRATION:  # every worker draws from a distributed dataset, in step
        calibration = samples.localize(calibration, input_specs(model, input_signature),
                                       max_samples=num_calibration_samples, where="calibration data")
    if not is_chief(model, chief):
        log.info("not the chief: %s not written", path)
        return path
    files.check_target(path, overwrite=overwrite)
    source = prepare(model, input_signature)
    calib = None
    if mode in _NEEDS_CALIBRATION:
        calib = calibration_inputs(source.specs, calibration, num_calibration_samples)
    flatbuffer = convert(source, mode, calibration=calib, allow_flex=allow_flex, int8_io=int8_io)
    files.write_bytes(path, flatbuffer, overwrite=overwrite)
    log.info("wrote %s (%s, %d bytes)", path, mode, len(flatbuffer))
    return path
