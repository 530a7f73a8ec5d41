"""Keras-native variants in quantize_all's report: int8/int4/float8/GPTQ/AWQ on real models, and bad input."""

import json
import zipfile

import keras
import numpy as np
import pytest

import procs
import quantize_models
import tfscale as ts
from tfscale.cli import main
from tfscale.errors import ConfigError
from tfscale.export import keras_modes


@pytest.fixture(scope="module")
def transformer():
    return quantize_models.transformer(epochs=2)


@pytest.fixture(scope="module")
def cnn():
    return quantize_models.cnn()


@pytest.fixture(scope="module")
def transformer_report(transformer, tmp_path_factory):
    out = tmp_path_factory.mktemp("keras_modes") / "tweets"
    report = ts.export.quantize_all(transformer.model, out, eval_data=transformer.eval_data,
                                    calibration=transformer.calibration[:16], progress=False, latency_runs=10,
                                    modes=["keras_int8", "keras_int4", "keras_gptq", "keras_awq"])
    return out, report


def test_transformer_keras_int8_meets_the_targets_and_int4_is_smaller(transformer_report):
    out, report = transformer_report
    int8, int4, base = report.row("keras_int8"), report.row("keras_int4"), report.row("keras_float32")
    assert base["size_vs_float32"] == 1.0 and base["target"] == "keras" and base["quantized_layers"] == 0
    assert int8["size_vs_float32"] <= 0.30 and int8["drop"] <= 0.5 and int8["agreement"] >= 0.99
    assert int4["size_vs_float32"] <= 0.20 and int4["drop"] is not None
    # weights as serving holds them, not the file (which holds the config and the container's overhead)
    assert int8["size_bytes"] == keras_modes.weight_bytes(keras.models.load_model(int8["path"]))
    for row in (base, int8, int4):
        assert row["p50_us_b1"] > 0 and row["p50_us_b32"] > 0 and row["backend"] == keras.backend.backend()
        assert len(row["p50_rounds_us_b1"]) >= keras_modes.MIN_ROUNDS
    assert report.recommended_by_target["keras"] in ("keras_int8", "keras_int4", "keras_float32")
    assert report.recommended_by_target["edge"] == report.recommended == "float32"
    saved = json.loads((out / "report.json").read_text())
    assert saved["recommended_by_target"] == report.recommended_by_target
    assert {r["mode"]: r.get("target") for r in saved["rows"]}["keras_int8"] == "keras"
    table = report.table()
    assert "Keras model" in table and "p50 µs b32" in table and "recommended for Keras serving (*)" in table


def test_keras_files_reload_with_plain_keras_and_hold_no_optimizer_state(transformer, transformer_report):
    out, report = transformer_report
    x = transformer.eval_data[0][:64]
    assert transformer.model.optimizer is not None  # the user's model was compiled and trained ...
    for mode in ("keras_float32", "keras_int8", "keras_int4"):
        path = out / f"{mode}.keras"
        with zipfile.ZipFile(path) as archive:
            weights = archive.read("model.weights.h5")
        assert b"optimizer" not in weights, mode  # ... the files for serving hold no optimizer state
        loaded = keras.models.load_model(path)  # nested quantized layers (encoder blocks) reload as quantized
        assert getattr(loaded, "optimizer", None) is None
        agree = (loaded.predict(x, verbose=0).argmax(1) == transformer.model.predict(x, verbose=0).argmax(1)).mean()
        assert agree >= 0.95, (mode, agree)
    assert not any(getattr(layer, "quantization_mode", None) for layer in transformer.model.layers)


def test_gptq_and_awq_quantize_the_encoder_blocks_with_calibration(transformer_report):
    _, report = transformer_report
    for mode in ("keras_gptq", "keras_awq"):
        row = report.row(mode)
        assert "error" not in row, row
        # the Dense/EinsumDense layers of the 2 encoder blocks (4 attention + 2 feed-forward each), not the head
        assert row["quantized_layers"] == 12 and row["size_vs_float32"] < 0.8 and row["agreement"] >= 0.9
        # Keras 3.15.1 saves GPTQ layers without their g_idx, and cannot load the file back: the row says so
        if row.get("reload_error"):
            assert any(w.startswith(f"{mode}: keras.models.load_model cannot read") for w in report.warnings)
        else:
            keras.models.load_model(row["path"])
        # its per-layer report all the same (from the variant as made, where the file does not load back)
        assert row.get("layers") and "layers_error" not in row, row.get("layers_error")
        assert any(entry["status"] == "quantized" for entry in row["layers"]), row["layers"]


def test_float8_and_int8_on_the_cnn_leave_its_conv_layers_float(cnn, tmp_path):
    report = ts.export.quantize_all(cnn.model, tmp_path / "cnn", eval_data=cnn.eval_data, calibration=cnn.calibration,
                                    modes=["int8", "keras_int8", "keras_float8"], progress=False, latency_runs=10)
    int8 = report.row("keras_int8")
    assert int8["quantized_layers"] == 2 and int8["agreement"] >= 0.97  # the two Dense layers
    assert report.row("keras_float8")["quantized_layers"] == 2
    assert report.recommended in ("int8", "float32") and "keras" in report.recommended_by_target


def pure_cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                             keras.layers.Conv2D(10, 3), keras.layers.GlobalAveragePooling2D()], name="pure_cnn")


def test_a_keras_mode_that_covers_no_layer_is_a_failed_row_with_the_reason(cnn, tmp_path):
    out = tmp_path / "pure"
    report = ts.export.quantize_all(pure_cnn(), out, eval_data=cnn.eval_data, modes=["keras_int4"], progress=False,
                                    latency_runs=5)
    assert "quantizes none of 'pure_cnn'" in report.row("keras_int4")["error"]
    assert any(w.startswith("keras_int4: not produced: Keras int4 quantizes none of 'pure_cnn''s layers (Conv2D"
                            ) for w in report.warnings), report.warnings
    assert not (out / "keras_int4.keras").exists() and report.recommended_by_target["keras"] == "keras_float32"


def test_gptq_without_calibration_data_is_a_clear_error_and_writes_nothing(transformer, tmp_path, capsys):
    out = tmp_path / "none"
    with pytest.raises(ConfigError, match="keras_gptq need calibration data"):
        ts.export.quantize_all(transformer.model, out, eval_data=transformer.eval_data, modes=["keras_gptq"])
    assert not out.exists()
    transformer.model.save(tmp_path / "t.keras")
    np.savez(tmp_path / "eval.npz", x=transformer.eval_data[0][:50], y=transformer.eval_data[1][:50])
    code = main(["quantize", str(tmp_path / "t.keras"), "--eval", str(tmp_path / "eval.npz"), "--modes", "keras_awq",
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "keras_awq need calibration data" in err and "--calibration" in err
    assert "Traceback" not in err and not out.exists()


def other_major(path, version="2.15.0"):
    """A copy of the .keras file at `path` whose metadata.json says another Keras wrote it."""
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    meta = json.loads(entries["metadata.json"])
    meta["keras_version"] = version
    entries["metadata.json"] = json.dumps(meta).encode()
    old = path.with_name("old.keras")
    with zipfile.ZipFile(old, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return old


def test_a_keras_file_of_another_major_version_is_refused_with_the_fix(cnn, tmp_path, capsys):
    cnn.model.save(tmp_path / "cnn.keras")
    old = other_major(tmp_path / "cnn.keras")
    with pytest.raises(ConfigError, match=r"saved by Keras 2\.15\.0; this is Keras 3\.") as e:
        ts.export.quantize_all(str(old), tmp_path / "out", eval_data=cnn.eval_data, modes=["keras_int8"])
    assert "re-save it with Keras 3" in str(e.value) and not (tmp_path / "out").exists()
    np.savez(tmp_path / "eval.npz", x=cnn.eval_data[0], y=cnn.eval_data[1])
    code = main(["quantize", str(old), "--eval", str(tmp_path / "eval.npz"), "--modes", "keras_int8",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "saved by Keras 2.15.0" in err and "Traceback" not in err


def test_cli_writes_keras_variants_beside_tflite_files(cnn, tmp_path, capsys):
    cnn.model.save(tmp_path / "cnn.keras")
    np.savez(tmp_path / "eval.npz", x=cnn.eval_data[0], y=cnn.eval_data[1])
    out = tmp_path / "out"
    code = main(["quantize", str(tmp_path / "cnn.keras"), "--eval", str(tmp_path / "eval.npz"), "--modes",
                 "int8,keras_int8", "--out", str(out), "--no-progress", "--latency-runs", "5"])
    printed = capsys.readouterr().out
    assert code == 0 and "recommended for Keras serving (*)" in printed
    made = {p.name for p in out.iterdir()}
    assert {"float32.tflite", "int8.tflite", "keras_float32.keras", "keras_int8.keras"} <= made


def test_keras_variants_are_made_and_timed_on_the_jax_backend(cnn, tmp_path):
    cnn.model.save(tmp_path / "cnn.keras")
    np.savez(tmp_path / "eval.npz", x=cnn.eval_data[0], y=cnn.eval_data[1])
    code = ("import json, sys, numpy as np, tfscale as ts\n"
            "d = np.load(sys.argv[2])\n"
            "r = ts.export.quantize_all(sys.argv[1], sys.argv[3], eval_data=(d['x'], d['y']), modes=['keras_int8'],"
            " progress=False, latency_runs=5)\n"
            "print('RESULT', json.dumps({'rows': r.rows}))\n")
    done = procs.run_one(["-c", code, str(tmp_path / "cnn.keras"), str(tmp_path / "eval.npz"), str(tmp_path / "out")],
                         env={"KERAS_BACKEND": "jax"}, timeout=300)
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    rows = {r["mode"]: r for r in result["rows"]}
    assert rows["keras_int8"]["backend"] == "jax" and rows["keras_int8"]["agreement"] >= 0.97
    assert "p50_us_1t" in rows["float32"]  # the TFLite file: made in a TensorFlow process
    assert keras.models.load_model(tmp_path / "out" / "keras_int8.keras").layers[-1].quantization_mode == "int8"
