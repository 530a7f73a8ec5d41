"""The tensorflow-model-optimization worker: QAT and pruning, in a process of its own.

Run by `tfscale.export.optimization` as ``python -m tfscale.export.tfmot_worker JOB_DIR``
with TF_USE_LEGACY_KERAS=1, never imported by the user's process: tfmot works
only on tf-keras (Keras 2) models and flips TF_USE_LEGACY_KERAS when imported.

JOB_DIR/job.json names the Keras 3 model config, its weights (weights.npz, in
`get_weights()` order), training examples (train.npz: x0.., y, and the Keras 3
model's outputs on the first examples, to check the rebuilt model), the loss,
and the tasks; each task writes one .tflite. The worker writes
JOB_DIR/result.json: per task the training history and notes, or an error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from tfscale.errors import ExportError
from tfscale.export import child_job

CHECK_TOLERANCE = 1e-3


class WorkerError(ExportError):
    """A failure the worker can explain, reported to the parent as what, where and fix."""

    def __init__(self, what: str, where: str = "", fix: str = ""):
        super().__init__(what, where=where, fix=fix)


def _rebuild(job: dict, arrays, tf_keras):
    from tfscale.export.legacy_config import translate

    config, dropped = translate(job["model"], tf_keras)
    try:
        model = tf_keras.models.model_from_json(json.dumps(config))
    except Exception as e:
        raise WorkerError(f"tf-keras cannot rebuild the model for tfmot: {e}", "model config",
                          "tfmot handles built-in Keras layers only; custom layers need a tf-keras twin") from e
    weights = [arrays[f"w{i}"] for i in range(job["num_weights"])]
    if len(weights) != len(model.get_weights()):
        raise WorkerError(f"the rebuilt tf-keras model has {len(model.get_weights())} weights, the Keras 3 "
                          f"model {len(weights)}", "model weights", "use built-in layers only")
    model.set_weights(weights)
    return model, dropped


def _check(model, job: dict, arrays) -> float:
    inputs = _inputs(job, arrays, slice(0, len(arrays["check_out"])))
    diff = float(np.abs(model.predict(inputs, verbose=0) - arrays["check_out"]).max())
    if diff > CHECK_TOLERANCE:
        raise WorkerError(f"the model rebuilt in tf-keras differs from the Keras 3 model (max |diff| {diff:.3g})",
                          "model config", "report this model's layers to tfscale; use built-in layers")
    return diff


def _inputs(job: dict, arrays, rows=slice(None)):
    xs = [arrays[f"x{i}"][rows] for i in range(len(job["inputs"]))]
    return xs[0] if len(xs) == 1 else xs


def _compile(model, job: dict, tf_keras):
    loss = job["loss"]
    if isinstance(loss, dict):
        from tfscale.export.legacy_config import translate_object

        loss = tf_keras.losses.deserialize(translate_object(loss, tf_keras))
    model.compile(optimizer=tf_keras.optimizers.Adam(job["learning_rate"]), loss=loss)


def _fit(model, job: dict, arrays, callbacks=()) -> list[float]:
    history = model.fit(_inputs(job, arrays), arrays["y"], epochs=job["epochs"], batch_size=job["batch_size"],
                        verbose=0, callbacks=list(callbacks), shuffle=True)
    return [float(v) for v in history.history["loss"]]


def _qat_model(model, tfmot, notes: list[str]):
    quantize = tfmot.quantization.keras
    try:
        return quantize.quantize_model(model)
    except RuntimeError as e:  # a layer tfmot's default 8-bit scheme does not support
        from tfscale.compat.tfmot import default_8bit_registry

        registry = default_8bit_registry()
        skipped = [layer.name for layer in model.layers if not registry.supports(layer)]
        notes.append(f"tfmot cannot quantize-train layer(s) {skipped} ({e}); they stay float during QAT")

        def annotate(layer):
            return quantize.quantize_annotate_layer(layer) if registry.supports(layer) else layer

        import tf_keras

        annotated = tf_keras.models.clone_model(model, clone_function=annotate)
        annotated.set_weights(model.get_weights())
        with quantize.quantize_scope():
            return quantize.quantize_apply(annotated)


def _convert(model, job: dict, arrays, mode: str) -> bytes:
    import tensorflow as tf

    specs = [tf.TensorSpec([None, *s["shape"]], s["dtype"], name=s["name"]) for s in job["inputs"]]

    def serve(*args):
        out = model(args[0] if len(args) == 1 else list(args), training=False)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    function = tf.function(serve, input_signature=specs, autograph=False).get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        n = min(job["num_calibration_samples"], len(arrays["y"]))
        calibration = [arrays[f"x{i}"][:n] for i in range(len(specs))]
        converter.representative_dataset = lambda: ([x[i:i + 1] for x in calibration] for i in range(n))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if mode in ("int8", "qat") and job["int8_io"] != "float32" and all(s.dtype.is_floating for s in specs):
        converter.inference_input_type = converter.inference_output_type = getattr(tf, job["int8_io"])
    return converter.convert()


def run_task(task: dict, job: dict, arrays, tf_keras, tfmot) -> dict:
    """One task ("qat" or "prune") on a fresh copy of the model; writes task["out"]."""
    model, dropped = _rebuild(job, arrays, tf_keras)
    result = {"kind": task["kind"], "dropped_config_keys": dropped, "notes": [], "check_max_abs_diff": _check(
        model, job, arrays)}
    if task["kind"] == "qat":
        model = _qat_model(model, tfmot, result["notes"])
        _compile(model, job, tf_keras)
        result["history"] = _fit(model, job, arrays)
        flatbuffer = _convert(model, job, arrays, "qat")
    elif task["kind"] == "prune":
        sparsity = tfmot.sparsity.keras
        schedule = sparsity.ConstantSparsity(task["sparsity"], begin_step=0, frequency=1)
        model = sparsity.prune_low_magnitude(model, pruning_schedule=schedule)
        _compile(model, job, tf_keras)
        result["history"] = _fit(model, job, arrays, [sparsity.UpdatePruningStep()])
        model = sparsity.strip_pruning(model)
        kernels = [w for layer in model.layers for w in layer.get_weights()[:1] if w.ndim > 1]
        result["sparsity"] = float(sum((k == 0).sum() for k in kernels) / max(1, sum(k.size for k in kernels)))
        flatbuffer = _convert(model, job, arrays, task["quantize"])
    else:
        raise WorkerError(f"unknown task {task['kind']!r}", "job.json", "use qat or prune")
    Path(task["out"]).write_bytes(flatbuffer)
    result["size_bytes"] = len(flatbuffer)
    return result


def main(job_dir: str) -> int:
    job_dir = Path(job_dir)
    job = child_job.read_job(job_dir)
    out = {"tasks": []}
    try:
        import tensorflow as tf  # noqa: F401  (TF_USE_LEGACY_KERAS=1 is set: tf.keras is tf-keras)
        import tensorflow_model_optimization as tfmot
        import tf_keras

        tf_keras.utils.set_random_seed(job.get("seed", 0))
        with np.load(job_dir / "train.npz") as arrays:
            arrays = dict(arrays)
        for task in job["tasks"]:
            out["tasks"].append(run_task(task, job, arrays, tf_keras, tfmot))
        code = 0
    except Exception as e:  # noqa: BLE001 - a WorkerError, or anything else with the traceback's tail
        out["error"] = child_job.error_result(
            e, prefix="the tfmot worker failed: ", where="tfmot worker",
            fix="rerun with logging at INFO (tfscale -v) for the worker's traceback; tfmot handles built-in Keras "
                "layers only")
        code = 3
    child_job.write_result(job_dir, out)
    return code


if __name__ == "__main__":
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        sys.exit("tfmot_worker must run with TF_USE_LEGACY_KERAS=1 (tfscale.export.optimization starts it)")
    sys.exit(main(sys.argv[1]))
