"""Export benchmark: every TFLite variant of two Fashion-MNIST models; Keras-native modes and TF's plain converter
on the three quantization models (tests/quantize_models.py: digits, cnn, transformer), side by side.

Models: the TFLite post-training-quantization tutorial's conv net, and an MLP of
1.33M parameters (784-1024-512-10). For each: train, `tfscale.export.quantize_all`
(files, accuracy, agreement, recommendation, warnings), then latency at batch 1
with 1 thread, with and without the XNNPACK delegate, measured in rounds that
alternate the arms (every variant, both delegate settings, and Keras
predict_on_batch) and reported as the median over rounds of each round's p50.

Then, for each of tests/quantize_models.py's models (the demo's digits net, the
export tests' CNN, the tiny keras-hub transformer on the sentiment tweets):
Keras' own int8/int4 (GPTQ and AWQ where the model has transformer blocks) in
quantize_all's report, and tfscale's int8 TFLite file against TF's plain
converter's full-integer int8 of the same model (TFLiteConverter.from_keras_model,
Optimize.DEFAULT, the same representative data, TFLITE_BUILTINS_INT8, int8 in/out
for float inputs): size, and latency at batch 1 with 1 thread and XNNPACK in
alternating rounds (median of the per-round medians).

    python benchmarks/bench_quantize.py [--epochs 3] [--rounds 7] [--out saved_models/bench_quantize]
    python benchmarks/bench_quantize.py --only keras   # the three quantization models only

Prints one JSON object with named figures, ratios and the issue's targets.
Timings depend on the machine and its load; compare ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

import _fashion  # noqa: E402

PLAIN_SLOWER_MAX = 1.05  # tfscale's int8 file against TF's plain converter's, batch 1
KERAS_TARGETS = {"keras_int8_weights_ratio_max": 0.30, "keras_int8_drop_pp_max": 0.5, "keras_int8_agreement_min": 0.99,
                 "keras_int4_weights_ratio_max": 0.20}
TARGETS = {"int8_size_ratio_max": 0.26, "int8_drop_pp_max": 0.5, "int8_agreement_min": 0.99,
           "recommended_speedup_min": 3.0}
CLEARLY_SLOWER = 1.5


def conv_net():
    """The TFLite post-training integer quantization tutorial's model."""
    import keras

    return keras.Sequential([keras.Input((28, 28)), keras.layers.Reshape((28, 28, 1)),
                             keras.layers.Conv2D(12, 3, activation="relu"), keras.layers.MaxPooling2D(2),
                             keras.layers.Flatten(), keras.layers.Dense(10)], name="tutorial_conv")


def mlp():
    import keras

    return keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                             keras.layers.Dense(1024, activation="relu"), keras.layers.Dense(512, activation="relu"),
                             keras.layers.Dense(10)], name="mlp_1m")


def train(build, data, epochs: int):
    import keras

    (x, y), _ = data
    keras.utils.set_random_seed(0)
    model = build()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
    return model, time.perf_counter() - start


def _tflite_arm(path, source, example, delegate: bool):
    """One invoke of `path` with 1 thread on a real example, as a zero-argument call."""
    from tfscale.export import runtime

    interpreter = runtime.interpreter(Path(path), 1, delegate)
    inputs, _ = runtime.io_details(interpreter, source)
    for x, d in zip(example, inputs):
        interpreter.set_tensor(d["index"], runtime.quantize(x, d))
    return interpreter.invoke


def alternating_latency(model, report, example, rounds: int, runs: int) -> dict:
    """Median over `rounds` of each arm's p50 (µs); all arms run in every round, order rotated."""
    from tfscale.export.latency import _timed
    from tfscale.export.source import prepare

    source = prepare(model)
    arms = {}
    for row in report.rows:
        if row.get("path", "").endswith(".tflite"):
            arms[(row["mode"], "xnnpack")] = (_tflite_arm(row["path"], source, example, True), runs)
            arms[(row["mode"], "no_xnnpack")] = (_tflite_arm(row["path"], source, example, False), runs)
    x = example[0]
    arms[("keras", "predict_on_batch")] = (lambda: model.predict_on_batch(x), max(10, runs // 10))
    medians = {key: [] for key in arms}
    keys = list(arms)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            call, n = arms[key]
            medians[key].append(float(np.median(_timed(call, n))))
    result = {}
    for (mode, kind), values in medians.items():
        result.setdefault(mode, {})[kind] = float(np.median(values))
    return result


def measure(name, build, data, args) -> dict:
    from tfscale.export import quantize_all

    model, seconds = train(build, data, args.epochs)
    (x_train, _), test = data
    report = quantize_all(model, Path(args.out) / name, eval_data=test, calibration=x_train,
                          modes=("float32", "dynamic", "float16", "int8", "int16x8", "keras_int8"),
                          max_drop=0.5, overwrite=True, progress=False, latency_runs=args.runs)
    report.plot(Path(args.out) / name / "report.png", overwrite=True)
    latency = alternating_latency(model, report, [test[0][:1]], args.rounds, args.runs)
    rows = {r["mode"]: r for r in report.rows}
    f32, int8 = rows["float32"], rows["int8"]
    best = report.recommended
    return {
        "params": model.count_params(), "train_seconds": round(seconds, 1), "eval_examples": len(test[0]),
        "sizes_bytes": {m: r.get("size_bytes") for m, r in rows.items()},
        "int8_vs_float32_size_ratio": int8["size_bytes"] / f32["size_bytes"],
        "keras_accuracy": report.reference["keras_value"],
        "accuracy": {m: r.get("value") for m, r in rows.items()},
        "accuracy_drop_pp": {m: r.get("drop") for m, r in rows.items()},
        "top1_agreement": {m: r.get("agreement") for m, r in rows.items()},
        "int8_accuracy_drop_pp": int8["drop"], "int8_top1_agreement": int8["agreement"],
        "latency_us_1thread_batch1": {m: v for m, v in latency.items() if m != "keras"},
        "keras_predict_on_batch_us": latency["keras"]["predict_on_batch"],
        "xnnpack_applied": {m: r.get("xnnpack") for m, r in rows.items() if m != "keras_int8"},
        "recommended": best,
        "recommended_speedup_vs_float32_tflite": latency["float32"]["xnnpack"] / latency[best]["xnnpack"],
        "recommended_size_ratio": rows[best]["size_bytes"] / f32["size_bytes"],
        "warnings": report.warnings, "table": report.table().splitlines(),
    }


def plain_int8(model, calibration, path: Path) -> Path:
    """TF's plain converter, full-integer int8, as TF's post-training integer quantization tutorial does it."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if calibration.dtype.kind == "f":
        converter.inference_input_type = converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(sys.stderr):  # from_keras_model prints "Saved artifact at ...": keep stdout JSON
        path.write_bytes(converter.convert())
    return path


def against_plain(trained, out: Path, rounds: int, runs: int) -> dict:
    """tfscale's int8 file and the plain converter's: sizes and batch-1 latency (1 thread, XNNPACK), alternating."""
    import tfscale as ts
    from tfscale.export.latency import _timed
    from tfscale.export.source import prepare

    calibration = trained.calibration[:200]
    ours = ts.export.tflite(trained.model, out / "tfscale_int8.tflite", quantize="int8", calibration=calibration,
                            overwrite=True)
    plain = plain_int8(trained.model, calibration, out / "plain_int8.tflite")
    source, example = prepare(trained.model), [trained.eval_data[0][:1]]
    arms = {"tfscale": _tflite_arm(ours, source, example, True), "plain": _tflite_arm(plain, source, example, True)}
    medians = {k: [] for k in arms}
    for r in range(rounds):
        for key in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
            medians[key].append(float(np.median(_timed(arms[key], runs))))
    p50 = {k: float(np.median(v)) for k, v in medians.items()}
    sizes = {"tfscale": ours.stat().st_size, "plain": plain.stat().st_size}
    return {"size_bytes": sizes, "p50_us_1t_xnnpack": p50, "size_ratio": sizes["tfscale"] / sizes["plain"],
            "latency_ratio": p50["tfscale"] / p50["plain"], "rounds_us": medians}


def keras_modes(trained, out: Path, runs: int) -> dict:
    """quantize_all's Keras rows (and its int8 TFLite row) for one model."""
    from tfscale.export import keras_modes as km
    from tfscale.export import quantize_all

    modes = ["int8", "keras_int8", "keras_int4"]
    if km.structure(trained.model) is not None:
        modes += ["keras_gptq", "keras_awq"]
    report = quantize_all(trained.model, out, eval_data=trained.eval_data, calibration=trained.calibration,
                          modes=modes, overwrite=True, progress=False, latency_runs=runs)
    keep = ("size_bytes", "size_vs_float32", "value", "drop", "agreement", "p50_us_b1", "p50_us_b32",
            "quantized_layers", "p50_us_1t", "error")
    return {"params": trained.model.count_params(), "recommended": report.recommended_by_target,
            "rows": {r["mode"]: {k: r[k] for k in keep if k in r} for r in report.rows},
            "warnings": report.warnings, "table": report.table().splitlines()}


def quantization_models(args) -> dict:
    import quantize_models

    results = {}
    for name, build in quantize_models.BUILDERS.items():
        trained = build()
        out = Path(args.out) / f"q_{name}"
        out.mkdir(parents=True, exist_ok=True)
        results[name] = {"keras_modes": keras_modes(trained, out / "report", args.runs),
                         "against_plain_converter": against_plain(trained, out, args.rounds, args.runs)}
    return results


def keras_targets(results: dict) -> dict:
    checks = {}
    rows = results["transformer"]["keras_modes"]["rows"]
    int8, int4 = rows["keras_int8"], rows["keras_int4"]
    checks["keras_int8_weights_le_0.30x (transformer)"] = int8["size_vs_float32"] <= 0.30
    checks["keras_int8_drop_le_0.5pp (transformer)"] = int8["drop"] <= 0.5
    checks["keras_int8_agreement_ge_99pct (transformer)"] = int8["agreement"] >= 0.99
    checks["keras_int4_weights_le_0.20x (transformer)"] = int4["size_vs_float32"] <= 0.20
    for name, r in results.items():
        plain = r["against_plain_converter"]
        checks[f"int8_file_no_larger_than_plain_converter ({name})"] = plain["size_ratio"] <= 1.0
        checks[f"int8_no_slower_than_plain_converter_le_1.05x ({name})"] = plain["latency_ratio"] <= PLAIN_SLOWER_MAX
    return checks


def targets(results: dict) -> dict:
    big = results["mlp_1m"]
    checks = {
        "int8_size_ratio_le_0.26 (mlp)": big["int8_vs_float32_size_ratio"] <= TARGETS["int8_size_ratio_max"],
        "recommended_ge_3x_faster_than_float32 (mlp)":
            big["recommended_speedup_vs_float32_tflite"] >= TARGETS["recommended_speedup_min"],
        # Variants clearly slower than float32 here (>= 1.5x, with or without XNNPACK) must be flagged, with a reason.
        "clearly_slower_variants_flagged_with_reason": all(
            any(w.startswith(f"{m} is slower") or w.startswith(f"{m} is fast only") for w in r["warnings"])
            for r in results.values() for m, lat in r["latency_us_1thread_batch1"].items()
            if m != "float32" and any(lat[k] >= CLEARLY_SLOWER * r["latency_us_1thread_batch1"]["float32"][k]
                                      for k in ("xnnpack", "no_xnnpack"))),
    }
    for name, r in results.items():
        checks[f"int8_drop_le_0.5pp ({name})"] = r["int8_accuracy_drop_pp"] <= TARGETS["int8_drop_pp_max"]
        checks[f"int8_agreement_ge_99pct ({name})"] = r["int8_top1_agreement"] >= TARGETS["int8_agreement_min"]
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=7, help="alternating latency rounds (median; >= 5)")
    parser.add_argument("--runs", type=int, default=200, help="invokes per arm per round")
    parser.add_argument("--out", default="saved_models/bench_quantize")
    parser.add_argument("--only", choices=("fashion", "keras"), default=None,
                        help="fashion: the two Fashion-MNIST models only; keras: the three quantization models only")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # quantize_models.py
    import ai_edge_litert
    import keras
    import tensorflow as tf

    load_before = os.getloadavg()
    results, quantized = {}, {}
    if args.only != "keras":
        data = _fashion.load()
        results = {name: measure(name, build, data, args) for name, build in (("tutorial_conv", conv_net),
                                                                              ("mlp_1m", mlp))}
    if args.only != "fashion":
        quantized = quantization_models(args)
    print(json.dumps({
        "benchmark": "bench_quantize", "data": "Fashion-MNIST (60,000 train / 10,000 test)",
        "environment": {"cpu_count": os.cpu_count(), "load_average_before": load_before,
                        "load_average_after": os.getloadavg(), "tensorflow": tf.__version__,
                        "keras": keras.__version__, "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?"),
                        "rounds": args.rounds, "runs_per_round": args.runs},
        "models": results, "quantization_models": quantized,
        "targets": {**(targets(results) if results else {}), **(keras_targets(quantized) if quantized else {})}},
        indent=2))


if __name__ == "__main__":
    main()
