"""The per-layer report (tfscale/export/layers.py): every variant's layers, quantized or float and why, and the
error each layer adds, worst first; in report.json, `tfscale quantize --layers` and report.png's second figure.

The model is tests/quantize_models.py's `cnn` (Conv2D 8, Flatten, Dense 32, Dense 10; Keras names them by what
else this process built, so the tests read the names off the model: CONV, FLAT, DENSE, HEAD). `broken` breaks its
middle Dense on purpose without changing what the float model computes: conv channel 0 is made dead (always 0)
and every Dense weight reading that channel is set to 1000. Per output channel int8 then has a scale of
1000/127, so every real weight of that Dense rounds to 0, in TFLite int8 and in Keras int8 alike. The layer
after it inherits the garbage (its own SNR is as low), so only a report that ranks by the error a layer adds
itself, not by the error it carries, puts DENSE first.
"""

import json

import keras
import numpy as np
import pytest

import quantize_models
from tfscale.cli import main
from tfscale.export import quantize_all

MODES = ["dynamic", "float16", "int8", "int16x8", "keras_int8"]
CONV, FLAT, DENSE, HEAD = range(4)  # positions in the cnn's layers


def names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


def broken(model: keras.Model) -> keras.Model:
    """A copy of the cnn whose `dense` int8 cannot represent (the float model's outputs are unchanged by the
    huge weights: they read a channel that is always 0)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    conv, dense = copy.layers[CONV], copy.layers[DENSE]
    kernel, bias = conv.get_weights()
    kernel[..., 0], bias[0] = 0.0, -1.0  # ReLU(-1) = 0 everywhere: channel 0 is dead
    conv.set_weights([kernel, bias])
    kernel, bias = dense.get_weights()
    kernel[0::8, :] = 1000.0  # Flatten puts channel 0 of each position at every 8th feature
    dense.set_weights([kernel, bias])
    return copy


@pytest.fixture(scope="module")
def cnn():
    return quantize_models.cnn()


@pytest.fixture(scope="module")
def reports(cnn, tmp_path_factory):
    """quantize_all of the cnn and of its broken copy, every TFLite mode and Keras int8; report.json read back,
    and the layer names."""
    found = {"names": names(cnn.model)}
    for name, model in (("plain", cnn.model), ("broken", broken(cnn.model))):
        out = tmp_path_factory.mktemp(name)
        report = quantize_all(model, out, eval_data=cnn.eval_data, calibration=cnn.calibration, modes=MODES,
                              latency_runs=5, progress=False)
        found[name] = (report, json.loads((out / "report.json").read_text()), out)
    return found


def _layers(saved: dict, mode: str) -> list[dict]:
    return next(r for r in saved["rows"] if r["mode"] == mode)["layers"]


def test_the_report_puts_the_broken_layer_first(reports):
    _, saved, _ = reports["broken"]
    name = reports["names"]
    float_model_outputs_unchanged = next(r for r in saved["rows"] if r["mode"] == "float32")
    assert float_model_outputs_unchanged["agreement"] == 1.0
    for mode in ("int8", "dynamic", "int16x8", "keras_int8"):
        layers = _layers(saved, mode)
        assert layers[0]["layer"] == name[DENSE], (mode, layers)
        assert layers[0]["own_snr_db"] < 10 and layers[0]["snr_db"] < 10, (mode, layers)
        after = next(e for e in layers if e["layer"] == name[HEAD])
        assert after["snr_db"] < 10 < after["own_snr_db"], (mode, after)  # it carries the error, adds little
    _, plain, _ = reports["plain"]
    for mode in ("int8", "keras_int8"):
        dense = next(e for e in _layers(plain, mode) if e["layer"] == name[DENSE])
        assert dense["own_snr_db"] > 30, (mode, dense)  # unbroken, int8 costs the same layer little


def test_every_variant_lists_each_layer_with_its_status_and_reason(reports):
    _, saved, _ = reports["plain"]
    conv, flat, dense, head = reports["names"]
    for row in saved["rows"]:
        assert {e["layer"] for e in row["layers"]} == {conv, flat, dense, head}, row["mode"]
        own = [e["own_snr_db"] for e in row["layers"]]
        assert own == sorted(own), row["mode"]  # worst first
    status = {mode: {e["layer"]: e for e in _layers(saved, mode)} for mode in ["float32", *MODES]}
    assert all(e["snr_db"] == 120.0 and e["reason"] == "the float32 variant quantizes nothing"
               for e in status["float32"].values() if e["status"] == "float")
    assert status["int8"][conv]["status"] == "quantized" and status["int8"][conv]["precision"] == "int8"
    assert status["int16x8"][dense]["precision"] == "int16x8"
    assert status["float16"][dense]["precision"] == "float16 weights"
    assert status["dynamic"][dense]["precision"] == "int8 weights"
    assert status["dynamic"][conv]["status"] == "float"
    assert status["dynamic"][conv]["reason"].startswith("the converter kept its ops in float (CONV_2D")
    assert status["keras_int8"][conv]["status"] == "float"
    assert status["keras_int8"][conv]["reason"] == "Keras int8 does not quantize Conv2D layers"
    assert status["keras_int8"][flat]["status"] == "no weights"
    assert 30 < status["int8"][head]["snr_db"] < 120.0


def test_layers_table_and_second_figure(reports):
    report, _, out = reports["broken"]
    text = report.layers_table()
    assert "int8 (int8.tflite):" in text and "keras_int8 (keras_int8.keras):" in text
    assert "Keras int8 does not quantize Conv2D layers" in text and "own dB" in text
    first = text.split("int8 (int8.tflite):")[1].splitlines()[3]
    assert first.split()[0] == reports["names"][DENSE], text  # under the header and its rule, the worst layer
    from matplotlib import image

    report.plot(out / "report.png")
    alone = type(report)([r for r in report.rows if r["mode"] == "float32"], report.recommended, [],
                         report.max_drop, report.reference)
    alone.rows[0].pop("layers")
    alone.plot(out / "alone.png")
    assert image.imread(out / "report.png").shape[0] > image.imread(out / "alone.png").shape[0] + 150


def test_cli_layers_flag_prints_the_per_layer_table(cnn, tmp_path, capsys):
    model = tmp_path / "broken.keras"
    broken(cnn.model).save(model)
    np.savez(tmp_path / "test.npz", x=cnn.eval_data[0], y=cnn.eval_data[1])
    np.savez(tmp_path / "train.npz", x=cnn.calibration)
    args = ["quantize", str(model), "--eval", str(tmp_path / "test.npz"), "--calibration", str(tmp_path / "train.npz"),
            "--modes", "int8", "--out", str(tmp_path / "out"), "--latency-runs", "5", "--no-progress"]
    assert main(args) == 0
    assert "int8 (int8.tflite):" not in capsys.readouterr().out
    assert main(args + ["--layers", "--overwrite"]) == 0
    printed = capsys.readouterr().out
    table = printed.split("int8 (int8.tflite):")[1].splitlines()
    assert table[1].split()[:3] == ["layer", "type", "status"], printed
    assert table[3].split()[0] == names(cnn.model)[DENSE], printed  # the saved model keeps the names
    assert "own dB = the SNR of the error the layer adds itself" in printed
