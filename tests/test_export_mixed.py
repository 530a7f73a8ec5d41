"""Mixed precision to an accuracy budget (tfscale/export/mixed.py): modes auto (TFLite) and keras_auto (Keras).

The model is tests/quantize_models.py's `cnn` (Conv2D 8, Flatten, Dense 32, Dense 10: CONV, DENSE, HEAD below; Keras
names them by what else this process built, so the tests read the names off the model), with one
layer broken on purpose so that plain int8 misses the 0.5 pp budget while the float model computes the same:
a unit (or channel) feeding the layer is made dead (always 0) and the layer's weights reading it are set to 1000,
so per-channel int8 scales of 1000/127 round every real weight of that layer to 0.

- `head_broken`: the small head (330 weights) breaks. Keeping it alone in float meets the budget, and the mix is
  far smaller than float16. That is the must-show case; its table is in the lead's notes.
- `dense_broken`: the Dense 32 (9,248 of the 9,658 weights) breaks. Keeping it in float makes a file larger than
  float16's, so no mix is worth making: the auto rows fail, naming the closest mix (plain int8) and its loss.
"""

import json

import keras
import numpy as np
import pytest

import quantize_models
from tfscale.cli import main
from tfscale.export import quantize_all
from tfscale.export.mixed import Mix, search

BUDGET = 0.5
MODES = ["float16", "int8", "auto", "keras_int8", "keras_auto"]
CONV, DENSE, HEAD = 0, 2, 3  # positions in the cnn's layers


def _dead_unit_feeding(model: keras.Model, source: int, target: int, rows) -> keras.Model:
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    before, layer = copy.layers[source], copy.layers[target]
    kernel, bias = before.get_weights()
    kernel[..., 0], bias[0] = 0.0, -1.0  # ReLU(-1) = 0: unit/channel 0 is always 0
    before.set_weights([kernel, bias])
    kernel, bias = layer.get_weights()
    kernel[rows, :] = 1000.0  # read only from the dead unit: the float outputs do not change
    layer.set_weights([kernel, bias])
    return copy


@pytest.fixture(scope="module")
def cnn():
    return quantize_models.cnn()


def _run(model, cnn, out):
    report = quantize_all(model, out, eval_data=cnn.eval_data, calibration=cnn.calibration, modes=MODES,
                          max_drop=BUDGET, latency_runs=5, progress=False)
    saved = json.loads((out / "report.json").read_text())
    return report, {r["mode"]: r for r in saved["rows"]}


def test_auto_meets_the_budget_that_int8_misses_keeping_only_the_broken_layer_float(cnn, tmp_path):
    model = _dead_unit_feeding(cnn.model, DENSE, HEAD, [0])
    conv, dense, head = (model.layers[i].name for i in (CONV, DENSE, HEAD))
    report, rows = _run(model, cnn, tmp_path)
    assert rows["int8"]["drop"] > 10 and rows["keras_int8"]["drop"] > 10  # plain int8 misses the budget
    auto, keras_auto = rows["auto"], rows["keras_auto"]
    assert auto["drop"] <= BUDGET and keras_auto["drop"] <= BUDGET
    for row in (auto, keras_auto):
        assert [k["layer"] for k in row["float_layers"]] == [head]  # float only where it must be
        assert row["float_layers"][0]["reason"].startswith("kept in float to meet the 0.5 pp budget")
        layers = {e["layer"]: e for e in row["layers"]}
        assert layers[head]["status"] == "float" and layers[dense]["status"] == "quantized"
        assert layers[head]["reason"] == row["float_layers"][0]["reason"]
        assert [s["float_layers"] for s in row["search"]][:2] == [[], [head]]
    assert rows["int8"]["size_bytes"] < auto["size_bytes"] < rows["float16"]["size_bytes"]
    assert keras_auto["size_bytes"] < rows["keras_float32"]["size_bytes"] / 2  # weights, below float16's
    assert (tmp_path / "auto.tflite").read_bytes()[4:8] == b"TFL3" and (tmp_path / "keras_auto.keras").is_file()
    assert report.recommended == "auto" and report.recommended_by_target["keras"] == "keras_auto"
    loaded = keras.models.load_model(tmp_path / "keras_auto.keras")
    quantized = {layer.name: layer.quantization_mode for layer in loaded.layers if layer.weights}
    assert quantized == {conv: None, dense: "int8", head: None}


def test_a_budget_nothing_meets_names_the_closest_variant(cnn, tmp_path, capsys):
    model = _dead_unit_feeding(cnn.model, CONV, DENSE, slice(0, None, 8))
    dense = model.layers[DENSE].name
    report, rows = _run(model, cnn, tmp_path / "api")
    for mode, what in (("auto", "file"), ("keras_auto", "weights")):
        error = rows[mode]["error"]
        assert f"no int8/float mix meets the 0.5 pp budget below float16's {what}" in error, error
        assert "the closest, plain int8, lost" in error and f"keeping {dense} in float makes it" in error, error
        assert any(w.startswith(f"{mode}: not produced: no int8/float mix") for w in report.warnings)
    assert not (tmp_path / "api" / "auto.tflite").exists() and rows["float16"]["drop"] <= BUDGET
    path = tmp_path / "broken.keras"
    model.save(path)
    np.savez(tmp_path / "test.npz", x=cnn.eval_data[0], y=cnn.eval_data[1])
    args = ["quantize", str(path), "--eval", str(tmp_path / "test.npz"), "--modes", "int8",
            "--out", str(tmp_path / "cli"), "--latency-runs", "5", "--no-progress"]
    assert main(args + ["--budget", "0.5pp"]) == 0
    printed = capsys.readouterr().out
    assert "warning: auto: not produced: no int8/float mix meets the 0.5 pp budget" in printed, printed
    assert "the closest, plain int8, lost" in printed
    with pytest.raises(SystemExit) as stop:
        main(args + ["--budget=-1pp", "--overwrite"])
    assert stop.value.code == 2 and "a budget is a drop of 0 or more" in capsys.readouterr().err
    assert main(args + ["--budget", "0.5", "--max-drop", "2", "--overwrite"]) == 2
    assert "--budget 0.5 and --max-drop 2 disagree" in capsys.readouterr().err


def test_search_adds_worst_first_then_returns_what_int8_can_take_back():
    """The greedy search on its own: `c` alone decides the budget, but `a` and `b` come first in the order."""
    def build(kept):
        return Mix(list(kept), 100 + 10 * len(kept))

    def measure(mix):
        mix.loss = 0.1 if "c" in mix.kept else 3.0

    best, tried = search(["a", "b", "c", "d"], build, measure, budget=0.5, cap=1000)
    assert best.kept == ["c"] and [m.kept for m in tried][:4] == [[], ["a"], ["a", "b"], ["a", "b", "c"]]
    best, tried = search(["a", "b", "c"], build, measure, budget=0.5, cap=125)
    assert best is None and tried[-1].kept == ["a", "b", "c"] and tried[-1].loss is None  # refused for its size
