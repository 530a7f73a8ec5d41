"""Export benchmark on real Fashion-MNIST: every TFLite variant of two models, side by side.

Models: the TFLite post-training-quantization tutorial's conv net, and an MLP of
1.33M parameters (784-1024-512-10). For each: train, `tfscale.export.quantize_all`
(files, accuracy, agreement, recommendation, warnings), then latency at batch 1
with 1 thread, with and without the XNNPACK delegate, measured in rounds that
alternate the arms (every variant, both delegate settings, and Keras
predict_on_batch) and reported as the median over rounds of each round's p50.

    python benchmarks/bench_quantize.py [--epochs 3] [--rounds 7] [--out saved_models/bench_quantize]

Prints one JSON object with named figures, ratios and the issue's targets.
Timings depend on the machine and its load; compare ratios, measured in one run.
"""

from __future__ import annotations

import argparse
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
    args = parser.parse_args()
    import ai_edge_litert
    import keras
    import tensorflow as tf

    load_before = os.getloadavg()
    data = _fashion.load()
    results = {name: measure(name, build, data, args) for name, build in (("tutorial_conv", conv_net),
                                                                          ("mlp_1m", mlp))}
    print(json.dumps({
        "benchmark": "bench_quantize", "data": "Fashion-MNIST (60,000 train / 10,000 test)",
        "environment": {"cpu_count": os.cpu_count(), "load_average_before": load_before,
                        "load_average_after": os.getloadavg(), "tensorflow": tf.__version__,
                        "keras": keras.__version__, "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?"),
                        "rounds": args.rounds, "runs_per_round": args.runs},
        "models": results, "targets": targets(results)}, indent=2))


if __name__ == "__main__":
    main()
