"""The notebooks run top to bottom on a CPU with small settings, and are stored without outputs.

colab_tpu runs once per TPU route (KERAS_BACKEND set in the kernel's environment before its first cell):
with no TPU here it must say how to get one, fall back, and report accuracy on held-out digits.
"""

import os
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
COLAB_TPU = next(p for p in NOTEBOOKS if p.stem == "colab_tpu")
# Appended to the executed copy only: what the kernel imported by the end
PROBE = 'import sys\nprint("tensorflow imported:", sys.modules.get("tensorflow") is not None)'


def test_all_four_notebooks_exist():
    assert {p.stem for p in NOTEBOOKS} == {"quickstart", "colab_tpu", "multi_worker", "quantization"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def execute(path: Path, tmp_path: Path, monkeypatch, **environ: str) -> tuple[nbformat.NotebookNode, str]:
    """Runs the notebook in a fresh kernel (it inherits this environment); returns it and its text output."""
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
    notebook.cells.append(nbformat.v4.new_code_cell(PROBE))
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]
    text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")
    return notebook, text


# quickstart runs in tests/test_output_lines.py (as a user runs it, with its output counted): not twice
@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem not in ("colab_tpu", "quickstart")],
                         ids=lambda p: p.stem)
def test_notebook_executes_on_cpu(path, tmp_path, monkeypatch):
    notebook, _ = execute(path, tmp_path, monkeypatch)
    assert any(c.outputs for c in notebook.cells if c.cell_type == "code")


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
