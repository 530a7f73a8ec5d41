"""Export works on a model built under a multi-worker strategy, and only the chief writes."""

import json

from procs import REPO, run_workers

WORKER = str(REPO / "tests" / "workers" / "export_strategy.py")


def results(procs):
    return sorted((json.loads(line[len("RESULT "):]) for p in procs for line in p.stdout.splitlines()
                   if line.startswith("RESULT ")), key=lambda r: r["rank"])


def test_multi_worker_model_exports_on_the_chief_only(tmp_path):
    chief, other = results(run_workers(2, [WORKER, str(tmp_path), "multi_worker", "1"], timeout=300))
    assert chief["chief"] and not other["chief"] and chief["replicas"] == 2
    assert chief["distributed"] and other["distributed"]
    assert chief["files"] == ["all", "int8.tflite", "model.keras", "saved_model"]
    assert chief["report_modes"] == ["float32", "int8"] and other["report_modes"] == []
    assert other["files"] == [] and sorted(p.name for p in tmp_path.iterdir()) == ["0"]
    assert chief["samples"] == 256 and chief["agreement"] >= 0.9
    assert chief["tf_keras_loaded"] is False and other["tf_keras_loaded"] is False  # in the workers, not here
