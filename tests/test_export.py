"""tfscale.export: every TFLite mode validated with LiteRT, the report, SavedModel/.keras, and bad input."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import tfscale as ts
from tfscale.errors import ConfigError, DataError, ExportError
from tfscale.export import child_job
from tfscale.export import report as report_lib
from tfscale.export import samples


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    return (x[:1400], d.target[:1400]), (x[1400:], d.target[1400:])


def build(num_classes=10):
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                             keras.layers.Dense(num_classes)], name="digits")


@pytest.fixture(scope="module")
def model(digits):
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    m = build()
    m.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    m.fit(x, y, epochs=5, batch_size=64, verbose=0)
    return m


def no_temp_files(folder):
    return [p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith(".old")] == []


def input_dtype(path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_input_details()[0]["dtype"]


@pytest.fixture(scope="module")
def float32_size(model, tmp_path_factory):
    return ts.export.tflite(model, tmp_path_factory.mktemp("f32") / "f32.tflite").stat().st_size


@pytest.mark.parametrize("mode, max_ratio", [(None, 1.0), ("dynamic", 0.45), ("float16", 0.6), ("int8", 0.45),
                                             ("int16x8", 0.5)])
def test_every_mode_converts_and_agrees_with_keras(model, digits, float32_size, tmp_path, mode, max_ratio):
    (x, _), test = digits
    path = ts.export.tflite(model, tmp_path / f"{mode}.tflite", quantize=mode, calibration=x,
                            num_calibration_samples=100)
    row = ts.export.validate(path, model, test, latency_runs=5)
    assert row["size_bytes"] == path.stat().st_size <= max_ratio * float32_size
    assert row["metric"] == "accuracy" and row["keras_value"] > 0.8 and row["samples"] == len(test[0])
    assert row["agreement"] >= 0.97 and abs(row["drop"]) <= 2.0
    # p50 is the median of the timing rounds' medians (as the report says), not one round's; no check of p90 >= p50
    # (true of any sample) nor of threads_all (it restates latency.usable_cores; test_output_report checks the cores)
    assert len(row["p50_rounds_us_1t"]) >= 5
    assert row["p50_us_1t"] == pytest.approx(float(np.median(row["p50_rounds_us_1t"])), rel=2e-3)
    assert row["xnnpack"] is (mode != "int16x8")  # XNNPACK takes every op but int16x8's (it has no such kernels)
    if mode == "int8":
        assert input_dtype(path) == np.int8
    assert no_temp_files(tmp_path)


def test_int8_io_uint8_and_float32(model, digits, tmp_path):
    (x, _), test = digits
    u8 = ts.export.tflite(model, tmp_path / "u8.tflite", quantize="int8", calibration=x, int8_io="uint8")
    f32 = ts.export.tflite(model, tmp_path / "f.tflite", quantize="int8", calibration=x, int8_io="float32")
    assert input_dtype(u8) == np.uint8 and input_dtype(f32) == np.float32
    assert ts.export.validate(u8, model, test, latency_runs=3)["agreement"] >= 0.97
    with pytest.raises(ConfigError, match="int8_io"):
        ts.export.tflite(model, tmp_path / "x.tflite", quantize="int8", calibration=x, int8_io="int4")


def test_calibration_from_batched_unbatched_and_distributed_datasets(digits):
    (x, y), _ = digits
    spec = [tf.TensorSpec([None, 8, 8, 1], tf.float32, name="img")]
    unbatched = tf.data.Dataset.from_tensor_slices((x, y))
    for data in (unbatched, unbatched.batch(32), x, (x, y)):
        inputs, labels = samples.collect(data, spec, max_samples=50, where="test")
        np.testing.assert_array_equal(inputs[0], x[:50])
        assert labels is None if data is x else (labels == y[:50]).all()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    distributed = strategy.experimental_distribute_dataset(unbatched.batch(16))
    inputs, labels = samples.collect(distributed, spec, max_samples=40, where="test")
    np.testing.assert_array_equal(inputs[0], x[:40])
    np.testing.assert_array_equal(labels, y[:40])


@pytest.mark.parametrize("bad, message", [
    (np.zeros((20, 8, 8), "float32"), r"shape \(20, 8, 8\).*takes \(N, 8, 8, 1\)"),
    (np.zeros((20, 9, 9, 1), "float32"), r"shape \(20, 9, 9, 1\)"),
    ((np.zeros((20, 8, 8, 1)) * 16).astype("uint8"), r"uint8 but the model input .* takes float32"),
    (np.array([["a"] * 8] * 8)[None, ..., None], "<U1"),
])
def test_wrong_calibration_data_is_a_clear_error_and_writes_nothing(model, tmp_path, bad, message):
    with pytest.raises(DataError, match=message) as info:
        ts.export.tflite(model, tmp_path / "int8.tflite", quantize="int8", calibration=bad)
    assert info.value.fix and "calibration" in info.value.where
    assert list(tmp_path.iterdir()) == []


def test_missing_calibration_and_unknown_mode(model, tmp_path):
    with pytest.raises(DataError, match="need calibration"):
        ts.export.tflite(model, tmp_path / "a.tflite", quantize="int16x8")
    with pytest.raises(ConfigError, match="unknown quantization mode 'int4'"):
        ts.export.tflite(model, tmp_path / "a.tflite", quantize="int4")


class Det(keras.layers.Layer):
    def call(self, x):
        return tf.linalg.det(x)[:, None]


class Svd(keras.layers.Layer):
    def call(self, x):
        return tf.linalg.svd(x, compute_uv=False)


class Erfinv(keras.layers.Layer):
    def call(self, x):
        return tf.math.erfinv(tf.clip_by_value(x, -0.5, 0.5))


def unconvertible(layer):
    inputs = keras.Input((4, 4))
    return keras.Model(inputs, keras.layers.Dense(2)(layer(name="odd_layer")(inputs)), name="odd")


def test_unconvertible_model_names_op_and_layer(tmp_path):
    with pytest.raises(ExportError) as info:
        ts.export.tflite(unconvertible(Svd), tmp_path / "svd.tflite")
    assert "unsupported op(s) tf.Svd (layer 'odd_layer')" in str(info.value)
    assert info.value.where == "layer 'odd_layer'" and "flex" not in str(info.value)
    with pytest.raises(ExportError) as info:
        ts.export.tflite(unconvertible(Det), tmp_path / "det.tflite")
    message = str(info.value)
    assert "tf.MatrixDeterminant (layer 'odd_layer')" in message and "flex (SELECT_TF_OPS)" in message
    assert "allow_flex=True" in info.value.fix
    assert list(tmp_path.iterdir()) == []
    path = ts.export.tflite(unconvertible(Det), tmp_path / "det.tflite", allow_flex=True)
    assert path.read_bytes()[4:8] == b"TFL3"


def test_existing_files_are_kept_unless_overwrite_and_failures_leave_them_intact(model, tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")
    with pytest.raises(ExportError, match="already exists") as info:
        ts.export.tflite(model, path)
    assert "overwrite" in info.value.fix and path.read_bytes() == b"old"
    with pytest.raises(ExportError, match="tf.Erfinv"):
        ts.export.tflite(unconvertible(Erfinv), path, overwrite=True)
    assert path.read_bytes() == b"old" and no_temp_files(tmp_path)
    ts.export.tflite(model, path, overwrite=True)
    assert path.read_bytes()[4:8] == b"TFL3" and no_temp_files(tmp_path)


def test_only_the_chief_writes(model, digits, tmp_path):
    assert ts.export.tflite(model, tmp_path / "a.tflite", chief=False) == tmp_path / "a.tflite"
    assert ts.export.saved_model(model, tmp_path / "sm", chief=False) == tmp_path / "sm"
    assert ts.export.keras(model, tmp_path / "a.keras", chief=False) == tmp_path / "a.keras"
    report = ts.export.quantize_all(model, tmp_path / "all", eval_data=digits[1], chief=False)
    assert report.rows == [] and report.recommended is None
    assert list(tmp_path.iterdir()) == []


def test_saved_model_and_keras_files_round_trip(model, digits, tmp_path):
    x = digits[1][0][:16]
    expected = model.predict(x, verbose=0)
    folder = ts.export.saved_model(model, tmp_path / "sm")
    loaded = tf.saved_model.load(str(folder))
    np.testing.assert_allclose(loaded.serve(tf.constant(x)).numpy(), expected, atol=1e-5)
    with pytest.raises(ExportError, match="already exists"):
        ts.export.saved_model(model, folder)
    (folder / "marker").write_text("old")
    ts.export.saved_model(model, folder, overwrite=True)
    assert not (folder / "marker").exists() and (folder / "saved_model.pb").exists()
    path = ts.export.keras(model, tmp_path / "m.keras")
    np.testing.assert_allclose(keras.models.load_model(path).predict(x, verbose=0), expected, atol=1e-6)
    with pytest.raises(ConfigError, match="end in .keras"):
        ts.export.keras(model, tmp_path / "m.h5")
    assert no_temp_files(tmp_path)


def test_keras_native_int8_leaves_the_model_alone(model, digits, tmp_path):
    x = digits[1][0]
    path = ts.export.keras_quantized(model, tmp_path / "q.keras")
    quantized = keras.models.load_model(path)
    assert quantized.layers[-1].kernel.dtype == "int8" and model.layers[-1].kernel.dtype == "float32"
    assert not any(getattr(layer, "quantization_mode", None) for layer in model.layers)
    agree = (quantized.predict(x, verbose=0).argmax(1) == model.predict(x, verbose=0).argmax(1)).mean()
    assert agree >= 0.97
    with pytest.raises(ConfigError, match="unknown Keras quantization mode"):
        ts.export.keras_quantized(model, tmp_path / "b.keras", mode="int2")


def test_model_built_under_a_strategy_converts(digits, tmp_path):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        m = build()
    assert isinstance(m.weights[0].value, tf.distribute.DistributedValues)
    (x, _), test = digits
    path = ts.export.tflite(m, tmp_path / "int8.tflite", quantize="int8", calibration=x)
    row = ts.export.validate(path, m, test[0], latency_runs=3)  # inputs only: agreement, no metric
    assert row["metric"] is None and row["agreement"] >= 0.95


def test_quantize_all_writes_every_variant_a_report_and_a_plot(model, digits, tmp_path):
    (x, _), test = digits
    out = tmp_path / "digits"
    report = ts.export.quantize_all(model, out, eval_data=test, calibration=tf.data.Dataset.from_tensor_slices(x),
                                    num_calibration_samples=100, latency_runs=10, progress=False)
    modes = ["float32", "dynamic", "float16", "int8", "int16x8"]
    assert [r["mode"] for r in report.rows] == modes
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{m}.tflite" for m in modes] + ["report.json"])
    assert report.row("int8")["size_vs_float32"] < 0.45 and report.row("float32")["size_vs_float32"] == 1.0
    assert report.recommended in modes and report.recommended != "float32"
    chosen = report.row(report.recommended)
    assert chosen["drop"] <= 0.5 and chosen["size_bytes"] <= 1.02 * min(
        r["size_bytes"] for r in report.rows if r["drop"] <= 0.5)
    saved = json.loads((out / "report.json").read_text())
    assert saved["recommended"] == report.recommended and len(saved["rows"]) == 5
    table = report.table()
    assert all(m in table for m in modes) and f"recommended (*): {report.recommended}: the smallest file" in table
    assert table.splitlines()[0].split()[:8] == ["mode", "size", "KB", "size", "/", "f32", "accuracy", "%"]
    assert f"p50 µs {len(os.sched_getaffinity(0))} thr" in table and "drop pp" in table
    png = report.plot(out / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ExportError, match="already exists"):
        ts.export.quantize_all(model, out, eval_data=test, modes=["int8"])


def _row(mode, size, p50, p50_bare, xnnpack=True, drop=0.0, rounds=None):
    row = {"mode": mode, "path": f"{mode}.tflite", "size_bytes": size, "drop": drop, "agreement": 1.0,
           "p50_us_1t": p50, "p50_us_1t_no_xnnpack": p50_bare, "xnnpack": xnnpack, "metric": "accuracy"}
    if rounds is not None:
        row["p50_rounds_us_1t"] = rounds
    return row


def test_report_recommends_smallest_within_budget_and_explains_slow_variants():
    rows = [_row("float32", 5000, 57, 87), _row("dynamic", 1352, 17, 60), _row("int8", 1340, 20, 149),
            _row("int16x8", 1365, 660, 1000, xnnpack=False), _row("float16", 1200, 50, 90, drop=0.9)]
    assert report_lib.recommend(rows, 0.5) == "int8"  # dynamic is as small (within 2%); 3 µs faster is noise
    rows[2] = _row("int8", 1340, 40, 149)
    assert report_lib.recommend(rows, 0.5) == "dynamic"  # 23 µs and 2.4x faster: that counts
    assert report_lib.recommend(rows, 1.0) == "float16"
    notes = report_lib.review(rows, 0.5)
    assert any(n.startswith("int16x8 is slower than float32") and "XNNPACK" in n for n in notes)
    assert any(n.startswith("int8 is fast only with XNNPACK") and "149 vs 87" in n for n in notes)
    assert any(n.startswith("float16: accuracy loss 0.90 pp exceeds") for n in notes)
    assert not any(n.startswith("dynamic") for n in notes)
    tiny = [_row("float32", 5000, 10, 37), _row("dynamic", 1300, 14, 40)]  # 4 µs: noise, not a finding
    assert report_lib.review(tiny, 0.5) == []


def test_latency_differences_within_the_round_to_round_spread_do_not_count():
    """Paired by round: a gap smaller than the spread of the per-round differences is noise."""
    base = [30, 31, 29, 30, 32, 30, 31, 29, 30, 31]
    noisy = [b + d for b, d in zip(base, [9, 9, 9, 30, -12, 25, -10, 9, 28, -11])]  # median +9, spread 26
    steady = [b + 9 for b in base]  # always 9 µs slower
    small, big = _row("int8", 1340, 30, 60, rounds=base), _row("dynamic", 1352, 30, 60, rounds=base)
    assert not report_lib.faster(small, dict(big, p50_us_1t=39, p50_rounds_us_1t=noisy))
    assert report_lib.faster(small, dict(big, p50_us_1t=39, p50_rounds_us_1t=steady))
    rows = [_row("float32", 5000, 40, 80, rounds=[40] * 10), dict(big, p50_us_1t=21, p50_rounds_us_1t=[21] * 10),
            dict(small, p50_us_1t=30, p50_rounds_us_1t=noisy)]
    assert report_lib.recommend(rows, 0.5) == "int8"  # dynamic 9 µs faster by p50, but not beyond the spread


def test_auto_metric_for_regression_and_binary_outputs(digits, tmp_path):
    (x, y), _ = digits
    for labels, units, metric in [(y.astype("float32") / 10, 1, "mae"), ((y > 4).astype("int32"), 1,
                                                                         "binary_accuracy")]:
        m = build(units)
        path = ts.export.tflite(m, tmp_path / f"{metric}.tflite")
        row = ts.export.validate(path, m, (x[:200], labels[:200]), latency_runs=3)
        assert row["metric"] == metric and row["max_abs_diff"] < 1e-4
        assert (row["agreement"] is None) == (metric == "mae")



def test_child_job_protocol_returns_the_result_or_raises_the_childs_error(tmp_path):
    """export/child_job.py, the protocol of export's child processes: job.json in, result.json out; the child's
    own error, an exit without a result and a timeout each become an ExportError."""
    (tmp_path / "tfscale_echo_worker.py").write_text(
        "import json, sys, time\nfrom pathlib import Path\n"
        "folder = Path(sys.argv[1]); job = json.loads((folder / 'job.json').read_text())\n"
        "if job['do'] == 'crash': sys.exit(5)\n"
        "if job['do'] == 'sleep': time.sleep(60)\n"
        "result = {'echo': job['value']} if job['do'] == 'echo' else "
        "{'error': {'what': 'bad x', 'where': 'x', 'fix': 'give y'}}\n"
        "(folder / 'result.json').write_text(json.dumps(result))\n")
    env = child_job.child_env(PYTHONPATH=str(tmp_path))
    folders = []

    def run(do, **options):
        with child_job.job_folder("tfscale-test-") as folder:
            folders.append(folder)
            child_job.write_job(folder, {"do": do, "value": 7})
            return child_job.run("tfscale_echo_worker", folder, env=env, name="the echo worker", where="echo",
                                 **options)

    assert run("echo") == {"echo": 7}
    with pytest.raises(ExportError, match="bad x.*Where: x.*Fix: give y"):
        run("fail")
    with pytest.raises(ExportError, match="the echo worker exited with code 5.*Where: echo"):
        run("crash", capture=True)
    with pytest.raises(ExportError, match="the echo worker did not finish within 0.5 s.*Fix: wait longer"):
        run("sleep", timeout=0.5, timeout_fix="wait longer")
    assert len(folders) == 4 and not any(f.exists() for f in folders)  # every job folder removed, failed or not
