"""`tfscale demo`, the main job on an embedded default: digits -> train under `Scale.auto()` -> TFLite -> report.

Real data that ships with scikit-learn (1,797 handwritten 8x8 digits), a small conv
net trained with the batch and learning-rate contract on whatever `Scale.auto()`
finds (one CPU, N CPU replicas, GPUs, or the workers of `tfscale launch`), then
every TFLite variant written, validated and compared by `tfscale.export.quantize_all`.
Only the chief exports and reports.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path


DEFAULT_OUT = os.path.join("saved_models", "demo")
DEMO_MODES = ("float32", "dynamic", "float16", "int8")
EPOCHS = 12
CALIBRATION_SAMPLES = 1000  # int8 ranges from most of the 1,437 training digits: cheap for this model
GLOBAL_BATCH_SIZE = 64
# Adam tuned at batch 32; sqrt scaling for an Adam-like optimizer, with a short warmup.
TRAINING = {"optimizer": "adam", "base_lr": 2e-3, "base_batch_size": 32, "lr_scaling": "sqrt", "warmup_steps": 20,
            "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"], "seed": 0}


@dataclasses.dataclass
class DemoResult:
    """What the demo did.

    Attributes:
        scale: the `Scale` it trained under.
        fit: the `tfscale.fit` result (model, history, batch plan, throughput).
        test_accuracy: accuracy of the Keras model on the held-out digits.
        test_examples: how many held-out digits.
        report: the export report (None on non-chief workers or without export).
        files: what was written: "report_json", "report_png" and one path per TFLite mode.
        seconds: wall time of "train", "export" and "total".
    """

    scale: object
    fit: object
    test_accuracy: float
    test_examples: int
    report: object | None
    files: dict[str, str]
    seconds: dict[str, float]


def run_demo(*, replicas: int | None = None, epochs: int = EPOCHS, out_dir: str | os.PathLike = DEFAULT_OUT,
             export: bool = True, verbose: int | str = 0, progress: bool = True) -> DemoResult:
    """Trains the digits model under `Scale.auto()` and exports every TFLite variant.

    Args:
        replicas: replicas per worker (CPU replicas on a machine without GPUs); None: auto.
        epochs: training epochs.
        out_dir: where the TFLite files, report.json and report.png go (replaced if present).
        export: write the TFLite variants and the report.
        verbose: Keras progress output on the chief (0, 1, 2).
        progress: the export's progress bar on stderr.
    """
    import tensorflow as tf

    from tfscale.recipes import digits
    from tfscale.scale import Scale
    from tfscale.train.fit import fit

    start = time.perf_counter()
    scale = Scale.auto(replicas=replicas)
    # The nearest multiple of the replicas (3 replicas: 63); the learning rate follows the batch.
    global_batch = scale.num_replicas * max(1, round(GLOBAL_BATCH_SIZE / scale.num_replicas))
    x_train, y_train, x_test, y_test = digits.load()
    trained = fit(digits.build_model, (x_train, y_train), scale=scale, epochs=epochs,
                  global_batch_size=global_batch, verbose=verbose, **TRAINING)
    test = scale.distribute(tf.data.Dataset.from_tensor_slices((x_test, y_test)),
                            global_batch_size=global_batch, drop_remainder=False)
    accuracy = trained.model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    trained_at = time.perf_counter()
    report, files = None, {}
    if export and scale.is_chief:
        report, files = _export(trained.model, Path(out_dir), (x_train, y_train), (x_test, y_test), progress)
    end = time.perf_counter()
    scale.barrier("tfscale_demo_done")  # the other workers exit with the chief, not while it exports
    seconds = {"train": trained_at - start, "export": end - trained_at, "total": end - start}
    return DemoResult(scale, trained, float(accuracy), len(x_test), report, files, seconds)


def _export(model, out_dir: Path, train, test, progress: bool):
    import tensorflow as tf

    from tfscale.export import quantize_all
    from tfscale.export.variants import REPORT_FILE

    calibration = tf.data.Dataset.from_tensor_slices(train)
    report = quantize_all(model, out_dir, eval_data=test, calibration=calibration, modes=DEMO_MODES,
                          overwrite=True, progress=progress, num_calibration_samples=CALIBRATION_SAMPLES)
    files = {row["mode"]: row["path"] for row in report.rows if "path" in row}
    files["report_json"] = str(out_dir / REPORT_FILE)
    files["report_png"] = str(report.plot(out_dir / "report.png", overwrite=True))
    return report, files
