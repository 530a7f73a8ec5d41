"""The notebooks run top to bottom on a CPU with small settings, and are stored without outputs.

colab_tpu runs once per TPU route (KERAS_BACKEND set in the kernel's environment before its first cell):
with no TPU here it must say how to get one, fall back, and report accuracy on held-out digits.
"""

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
NOTEBOOKS_BY_NAME = {p.stem: p for p in NOTEBOOKS}
COLAB_TPU = NOTEBOOKS_BY_NAME["colab_tpu"]
# Appended to the executed copy only: what the kernel imported by the end
PROBE = 'import sys\nprint("tensorflow imported:", sys.modules.get("tensorflow") is not None)'


def test_all_four_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} == {"quickstart", "colab_tpu", "multi_worker", "quantization"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def execute(path: Path, tmp_path: Path, monkeypatch, probe: str = "", **environ: str
            ) -> tuple[nbformat.NotebookNode, str]:
    """Runs the notebook in a fresh kernel (it inherits this environment); returns it and its text output.

    `probe`: code appended after the last cell, to print what the notebook computed. A cell that raises
    fails here: nbclient raises CellExecutionError (allow_errors is False).
    """
    from nbclient import NotebookClient

    monkeypatch.setenv("TFSCALE_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "1")
    for name in ("TF_CONFIG", "KERAS_BACKEND", "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(path.parent.parent), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE + ("\n" + probe if probe else "")))
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")
    return notebook, text


# quickstart runs in tests/test_output_lines.py (as a user runs it, with its output counted): not twice
QUANTIZATION_PROBE = """import json
print("report:", json.dumps({"modes": [r["mode"] for r in report.rows], "recommended": report.recommended,
                             "keras": report.reference["keras_value"], "samples": report.reference["samples"],
                             "rows": {r["mode"]: [r["value"], r["drop"], r["size_bytes"], os.path.getsize(r["path"])]
                                      for r in report.rows},
                             "png": (out / "report.png").stat().st_size}))"""


def test_quantization_notebook_exports_every_variant_and_recommends_one(tmp_path, monkeypatch):
    _, text = execute(NOTEBOOKS_BY_NAME["quantization"], tmp_path, monkeypatch, probe=QUANTIZATION_PROBE)
    report = json.loads(re.search(r"^report: (.*)$", text, re.M)[1])
    assert report["modes"] == ["float32", "dynamic", "float16", "int8", "int16x8"]
    assert report["samples"] == 297 and report["keras"] > 0.5, report  # it learned: 10 classes, chance is 10%
    for mode, (value, drop, size, on_disk) in report["rows"].items():
        assert size == on_disk > 0 and 0 <= value <= 1, (mode, report)
    best = report["rows"][report["recommended"]]
    assert best[1] <= 0.5 and best[2] < report["rows"]["float32"][2], report  # within budget, smaller
    assert re.search(rf"^recommended \(\*\): {report['recommended']}: ", text, re.M), text  # the table says so
    shown = float(re.search(r"^Keras model: accuracy ([\d.]+) % on 297 examples", text, re.M)[1])
    assert shown == pytest.approx(100 * report["keras"], abs=0.01)
    assert report["png"] > 0


def test_multi_worker_notebook_trains_on_two_workers_to_one_model(tmp_path, monkeypatch):
    _, text = execute(NOTEBOOKS_BY_NAME["multi_worker"], tmp_path, monkeypatch)
    lines = re.findall(r"^worker (\d): (\d) replicas, accuracy on the 297 held-out digits ([\d.]+)%$", text, re.M)
    assert [(rank, replicas) for rank, replicas, _ in lines] == [("0", "2"), ("1", "2")], text
    accuracies = {float(a) for _, _, a in lines}
    assert len(accuracies) == 1, text  # one model: the same held-out accuracy on both workers
    assert accuracies.pop() > 25, text  # one fast epoch learned something: 10 classes, chance is 10%


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_colab_tpu_falls_back_on_cpu_and_reports_held_out_accuracy(backend, tmp_path, monkeypatch):
    _, text = execute(COLAB_TPU, tmp_path, monkeypatch, KERAS_BACKEND=backend)
    assert f"KERAS_BACKEND={backend}:" in text
    # no TPU here: a hint that says how to get one, not TensorFlow's kernel error
    assert "No TPU in this runtime" in text and "Runtime > Change runtime type > TPU" in text
    assert "OpKernel" not in text and "ConfigureDistributedTPU" not in text
    assert re.search(rf"{backend} / one_device|{backend} / default", text), text
    accuracy = re.search(r"accuracy on the (\d+) held-out digits: (\d+\.\d)%", text)
    assert accuracy and int(accuracy[1]) > 0, text
    assert float(accuracy[2]) > 50, text  # it learned: 10 classes, chance is 10%
    assert f"tensorflow imported: {backend == 'tensorflow'}" in text  # the JAX route runs without TensorFlow
