"""A quiet run: of every line a person sees, at most 5% come from anything but tfscale, their code or Keras' bar.

Four runs as a new user makes them, with no TF_CPP_MIN_LOG_LEVEL set: `tfscale demo`, `tfscale info`, the
demo under `tfscale launch -n 2` (which also checks what it trains, exports and reports), and the quickstart
notebook. A line is foreign when it has the shape of what TensorFlow, absl, LiteRT, Python's warnings or
another library's logger print (`FOREIGN`), whatever it says; no line may be an ERROR.
"""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

import procs
from tfscale import quiet

pytestmark = pytest.mark.slow

FOREIGN = tuple(re.compile(p) for p in (
    r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]",  # absl / TensorFlow C++ logging
    r"All log messages before absl::InitializeLog",
    r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):[\w.]+:",  # Python logging's default format: TF's, absl's, others'
    r"^\S+\.py:\d+: \w*Warning: ",  # warnings.warn, e.g. Keras' UserWarnings
    r"^(INFO|WARNING|ERROR): ",  # the TFLite runtime's own logging
    r"fully_quantize: \d+, inference_type",
    r"^To enable the following instructions",
    r"Local rendezvous",
))
ERROR = re.compile(r"\bERROR\b|^E\d{4} |Traceback \(most recent call last\)")
PREFIX = re.compile(r"^\[w\d+\] ")  # tfscale launch's worker prefix


def count(text: str) -> tuple[int, list[str], list[str]]:
    """(lines, the foreign ones, the errors) of a run's combined output."""
    lines = [PREFIX.sub("", line) for line in text.rstrip("\n").split("\n")]  # a bar redrawn with \r is one line
    foreign, after_warning = [], False
    for line in lines:
        is_foreign = any(p.search(line) for p in FOREIGN) or (after_warning and line.startswith("  "))
        after_warning = bool(re.search(r"^\S+\.py:\d+: \w*Warning: ", line))
        if is_foreign:
            foreign.append(line)
    return len(lines), foreign, [line for line in lines if ERROR.search(line)]


def user_env() -> dict[str, str]:
    """The tests' environment (one thread per process) without the quiet settings a user would not have set,
    and with every installed package importable, as for a user."""
    return {k: v for k, v in procs.base_env(hide=()).items() if k not in ("TF_CPP_MIN_LOG_LEVEL", quiet.VERBOSE_ENV)}


def run(argv: list[str], timeout: float = 400, **extra) -> str:
    import subprocess

    done = subprocess.run([sys.executable, *argv], env={**user_env(), **extra}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout)
    text = done.stdout.decode("utf-8", "replace")  # no newline translation: a bar redrawn with \r stays one line
    assert done.returncode == 0, text[-3000:]
    return text


def check(name: str, text: str) -> None:
    lines, foreign, errors = count(text)
    print(f"\n{name}: {lines} lines, {len(foreign)} not from tfscale, the user's code or Keras' bar")
    assert lines > 0
    assert not errors, "\n".join(errors)
    assert len(foreign) <= 0.05 * lines, "\n".join(foreign)


def test_info_is_quiet():
    check("tfscale info", run(["-m", "tfscale", "info"]))


def test_verbose_shows_everything_again():
    _, foreign, _ = count(run(["-m", "tfscale", "info"], TFSCALE_VERBOSE="1"))
    assert foreign, "TFSCALE_VERBOSE=1 should show TensorFlow's own start-up lines"


def test_demo_is_quiet(tmp_path):
    text = run(["-m", "tfscale", "demo", "--epochs", "3", "--out", str(tmp_path / "demo")])
    check("tfscale demo", text)
    assert "recommended (*):" in text


def test_demo_under_launch_is_quiet_trains_exports_every_variant_and_reports_on_the_chief(tmp_path):
    """The main job as users run it on a cluster: `tfscale launch -n 2 -- tfscale demo`; only the chief exports."""
    out = tmp_path / "demo"
    text = run(["-m", "tfscale", "launch", "-n", "2", "--", sys.executable, "-m", "tfscale", "demo",
                "--epochs", "4", "--out", str(out)])
    check("tfscale launch -n 2 -- tfscale demo", text)
    lines = text.splitlines()
    chief = "\n".join(line[5:] for line in lines if line.startswith("[w0] "))
    other = "\n".join(line[5:] for line in lines if line.startswith("[w1] "))
    assert "tfscale demo on Scale(multi_worker: 2 replica(s) = 2 worker(s)" in chief, text[-3000:]
    assert "test accuracy" not in other and "recommended" not in other  # only the chief reports
    accuracy = float(chief.split("test accuracy: ")[1].split()[0])  # "97.22 % on 360 held-out digits"
    assert accuracy >= 85
    report = json.loads((out / "report.json").read_text())
    assert [row["mode"] for row in report["rows"]] == ["float32", "dynamic", "float16", "int8"]
    sizes = {row["mode"]: row["size_bytes"] for row in report["rows"]}
    assert sizes["int8"] < 0.5 * sizes["float32"] and sizes["float16"] < 0.75 * sizes["float32"]
    for name in ("float32.tflite", "dynamic.tflite", "float16.tflite", "int8.tflite", "report.png"):
        assert (out / name).stat().st_size > 0
    for mode in ("float32", "int8"):
        assert f"\n{mode}" in chief  # the table rows
    assert "wrote " in chief and "report.png" in chief


def test_quickstart_notebook_is_quiet(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key in list(os.environ):
        if key not in user_env():
            monkeypatch.delenv(key)
    for key, value in user_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TFSCALE_NOTEBOOK_FAST", "1")
    notebook = nbformat.read(procs.REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                texts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                texts.append(output.get("data", {}).get("text/plain", ""))
            elif output.output_type == "error":
                texts.append("Traceback (most recent call last)\n" + "\n".join(output.traceback))
    check("notebooks/quickstart.ipynb", "\n".join(t.rstrip("\n") for t in texts))
