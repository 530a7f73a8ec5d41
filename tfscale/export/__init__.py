"""Export: SavedModel, .keras and TFLite/LiteRT in every post-training mode, validated and reported.

    import tfscale as ts
    ts.export.tflite(model, "saved_models/m/int8.tflite", quantize="int8", calibration=train)
    report = ts.export.quantize_all(model, "saved_models/m", eval_data=(x_test, y_test))
    print(report.table())

TFLite files are converted with builtin ops only (no flex unless allow_flex=True)
and validated with LiteRT (`ai_edge_litert`). Quantization-aware training and
pruning (tensorflow-model-optimization, tf-keras only) run in a separate process,
so the user's Keras 3 process is never switched to legacy Keras. Every file is
written atomically and never overwritten unless asked. Optional packages
(ai_edge_litert, tfmot, tf_keras, matplotlib) are imported only when used.
"""

from __future__ import annotations

try:  # TensorFlow (the `tensorflow` extra) missing, on a JAX-only install: a ConfigError naming the extra
    from tfscale.export.converter import INT8_IO, MODES, tflite
    from tfscale.export.optimization import prune, qat
    from tfscale.export.report import ExportReport
    from tfscale.export.saving import keras_file as keras
    from tfscale.export.saving import keras_quantized, saved_model
    from tfscale.export.validation import validate
    from tfscale.export.variants import DEFAULT_MODES, EXTRA_MODES, quantize_all
except ModuleNotFoundError as e:
    from tfscale import errors

    raise errors.missing_module(e, where="tfscale.export") from None

__all__ = ["DEFAULT_MODES", "EXTRA_MODES", "INT8_IO", "MODES", "ExportReport", "keras", "keras_quantized", "prune",
           "qat", "quantize_all", "saved_model", "tflite", "validate"]
