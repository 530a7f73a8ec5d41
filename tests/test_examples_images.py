"""examples/images end to end, small: Fashion-MNIST folder → `tfscale data convert` → `tfscale launch -n 2` → int8.

Needs Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist); nothing is downloaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import procs

RUN = procs.REPO / "examples" / "images" / "run.sh"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> Path:
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        pytest.fail("Fashion-MNIST is missing (CI: apt-get install -y dataset-fashion-mnist)")
    work = tmp_path_factory.mktemp("fashion")
    env = procs.base_env(PYTHON=sys.executable, WORK=str(work), OUT=str(work / "out"), PER_CLASS="30",
                         TEST_PER_CLASS="10", KERAS_HOME=str(work / "keras"))
    done = subprocess.run(["bash", str(RUN), "--epochs", "5", "--global-batch-size", "32",
                           "--learning-rate", "3e-3"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-5000:]
    return work


def test_image_folder_holds_every_class(job):
    train = sorted(p.name for p in (job / "images" / "train").iterdir())
    assert train == ["0_t-shirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat", "5_sandal", "6_shirt",
                     "7_sneaker", "8_bag", "9_ankle_boot"]
    assert sum(1 for _ in (job / "images" / "train").rglob("*.png")) == 300
    assert sum(1 for _ in (job / "images" / "test").rglob("*.png")) == 100


def test_convert_wrote_four_shards_per_split(job):
    for split, records in (("train", 300), ("test", 100)):
        meta = json.loads((job / "tfrecords" / split / "dataset.json").read_text())
        assert meta["num_shards"] == 4
        assert sum(s["records"] for s in meta["shards"]) == records
        assert set(meta["class_counts"].values()) == {records // 10}


def test_trained_on_two_workers(job):
    summary = json.loads((job / "out" / "train_report.json").read_text())
    assert (summary["num_workers"], summary["num_replicas"]) == (2, 2)


def test_int8_tflite_is_full_integer_small_and_agrees(job):
    from ai_edge_litert.interpreter import Interpreter

    report = json.loads((job / "out" / "report.json").read_text())
    rows = {row["mode"]: row for row in report["rows"]}
    assert rows["float32"]["value"] > 0.25  # 10 classes: chance is 0.1
    assert rows["int8"]["size_bytes"] < 0.35 * rows["float32"]["size_bytes"]
    assert rows["int8"]["agreement"] >= 0.85  # a small, briefly trained model: many close calls
    interpreter = Interpreter(str(job / "out" / "int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
