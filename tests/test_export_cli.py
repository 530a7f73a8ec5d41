"""`tfscale export` and `tfscale quantize`: files, table, report, and errors as messages, not tracebacks."""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from procs import run_one
from tfscale.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x[:1400], d.target[:1400], epochs=5, batch_size=64, verbose=0)
    model.save(folder / "digits.keras")
    np.savez(folder / "test.npz", x=x[1400:], y=d.target[1400:])
    np.savez(folder / "train.npz", x=x[:1400], y=d.target[:1400])
    return folder


def test_quantize_writes_variants_report_and_plot_then_refuses_to_overwrite(files, tmp_path, capsys):
    out = tmp_path / "digits"
    args = ["quantize", str(files / "digits.keras"), "--eval", str(files / "test.npz"), "--modes", "int8,dynamic",
            "--calibration", str(files / "train.npz"), "--out", str(out), "--latency-runs", "5", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "recommended (*):" in printed and "int8" in printed and "p50 µs" in printed and "size KB" in printed
    assert sorted(p.name for p in out.iterdir()) == ["dynamic.tflite", "float32.tflite", "int8.tflite",
                                                     "report.json", "report.png"]
    report = json.loads((out / "report.json").read_text())
    assert [r["mode"] for r in report["rows"]] == ["float32", "int8", "dynamic"]
    assert report["recommended"] in ("int8", "dynamic") and report["reference"]["metric"] == "accuracy"
    before = (out / "int8.tflite").read_bytes()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err and (out / "int8.tflite").read_bytes() == before
    assert main(args + ["--overwrite"]) == 0


def test_export_every_format(files, tmp_path, capsys):
    model = str(files / "digits.keras")
    assert main(["export", model, "--format", "tflite", "--quantize", "int8", "--calibration",
                 str(files / "train.npz"), "--out", str(tmp_path / "m.tflite"), "--eval", str(files / "test.npz")]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "agreement" in printed and (tmp_path / "m.tflite").read_bytes()[4:8] == b"TFL3"
    assert "drop pp" in printed and "p50 µs (batch 1, 1 thread)" in printed
    assert "0000000" not in printed and "9999999" not in printed  # figures are rounded
    figure = {name: float(value) for name, value in re.findall(
        r"^(agreement with Keras %|accuracy % \(TFLite\)|accuracy % \(Keras\))\s+([\d.]+)$", printed, re.M)}
    assert len(figure) == 3, printed
    assert figure["agreement with Keras %"] >= 95, printed  # the int8 file predicts the Keras model's classes
    assert figure["accuracy % (TFLite)"] >= figure["accuracy % (Keras)"] - 2 and figure["accuracy % (Keras)"] > 30
    assert main(["export", model, "--format", "keras", "--quantize", "int8", "--out", str(tmp_path / "q.keras")]) == 0
    assert keras.models.load_model(tmp_path / "q.keras").layers[-1].kernel.dtype == "int8"
    assert main(["export", model, "--format", "saved_model", "--out", str(tmp_path / "sm")]) == 0
    assert (tmp_path / "sm" / "saved_model.pb").exists()
    # it loads without Keras and serves the Keras model's outputs
    x = np.load(files / "test.npz")["x"][:32]
    loaded = tf.saved_model.load(str(tmp_path / "sm"))  # kept: its variables live as long as it does
    served = np.asarray(loaded.serve(x))
    np.testing.assert_allclose(served, np.asarray(keras.models.load_model(files / "digits.keras")(x)), atol=1e-5)


def test_bad_input_is_one_clear_message(files, tmp_path, capsys):
    model = str(files / "digits.keras")
    assert main(["quantize", model, "--eval", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.npz does not exist" in capsys.readouterr().err
    np.savez(tmp_path / "wrong.npz", x=np.zeros((10, 9, 9), "float32"))
    assert main(["export", model, "--format", "tflite", "--quantize", "int8", "--calibration",
                 str(tmp_path / "wrong.npz"), "--out", str(tmp_path / "w.tflite")]) == 2
    err = capsys.readouterr().err
    assert "shape (10, 9, 9)" in err and "Traceback" not in err
    assert main(["quantize", str(tmp_path / "nope.keras"), "--eval", str(files / "test.npz"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "cannot load a Keras model" in capsys.readouterr().err
    assert not (tmp_path / "w.tflite").exists() and not (tmp_path / "o").exists()


def test_console_command_runs_in_a_fresh_process_without_optional_packages(files, tmp_path):
    """`python -m tfscale export` in a new process; tfscale.export imports no optional package on its own."""
    out = tmp_path / "f16.tflite"
    argv = ["tfscale", "export", str(files / "digits.keras"), "--format", "tflite", "--quantize", "float16",
            "--out", str(out)]
    code = ("import runpy, sys, tensorflow, keras; before = set(sys.modules); "
            "import tfscale.export; from tfscale.export import latency, legacy_config, optimization, runtime, "
            "tfmot_worker, variants; "
            f"sys.argv = {argv!r}; "
            "exit_code = 0\n"
            "try:\n    runpy.run_module('tfscale', run_name='__main__')\n"
            "except SystemExit as e:\n    exit_code = e.code\n"
            "print('optional:', [m for m in ('tensorflow_model_optimization', 'tf_keras', 'ai_edge_litert', "
            "'matplotlib', 'sklearn') if m in sys.modules and m not in before]); sys.exit(exit_code)")
    proc = run_one(["-c", code], timeout=180)
    assert f"wrote {out}" in proc.stdout and out.read_bytes()[4:8] == b"TFL3"
    assert "optional: []" in proc.stdout
