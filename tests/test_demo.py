"""`tfscale demo`, the main job, as users run it: under `tfscale launch -n 2`, where only the chief exports."""

import json
import sys

import pytest

import procs

pytestmark = pytest.mark.slow


def test_demo_under_launch_trains_exports_every_variant_and_reports_on_the_chief(tmp_path):
    out = tmp_path / "demo"
    job = procs.run_one(["-m", "tfscale", "launch", "-n", "2", "--", sys.executable, "-m", "tfscale", "demo",
                         "--epochs", "4", "--out", str(out)], timeout=400)
    lines = job.stdout.splitlines()
    chief = "\n".join(line[5:] for line in lines if line.startswith("[w0] "))
    other = "\n".join(line[5:] for line in lines if line.startswith("[w1] "))
    assert "tfscale demo on Scale(multi_worker: 2 replica(s) = 2 worker(s)" in chief, job.stdout[-3000:]
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
