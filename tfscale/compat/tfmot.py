"""TensorFlow Model Optimization's private APIs that tfscale uses (the tfmot quarantine; see `tfscale.compat`).

Checked on tensorflow-model-optimization 0.8.1 (with tf-keras), in tfscale's tfmot worker process.

1. `default_8bit_registry` (`tensorflow_model_optimization.python.core.quantization.keras.default_8bit.
   default_8bit_quantize_registry.Default8BitQuantizeRegistry`): which layers tfmot's default 8-bit scheme
   can quantize-train, so that QAT annotates only those and leaves the others float; tfmot exports no public
   test. Gone: `UpstreamError`, which the worker reports as the export's error.
"""

from __future__ import annotations

from tfscale import compat

CHECKED_TEXT = "0.8.1"


def default_8bit_registry():
    """tfmot's registry of the layers its default 8-bit QAT scheme supports (`registry.supports(layer)`; 1.)."""
    try:
        from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (  # private: 1.
            default_8bit_quantize_registry)

        return default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    except (ImportError, AttributeError):
        raise compat.changed("tensorflow-model-optimization", compat.version_of("tensorflow-model-optimization"),
                             "Default8BitQuantizeRegistry", CHECKED_TEXT,
                             needed_for="quantization-aware training of models with layers tfmot cannot "
                                        "quantize") from None
