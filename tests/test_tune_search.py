"""A Hyperband search on real data (scikit-learn digits), every trial on 2 CPU replicas, from the example run file;
the best model is rebuilt, saved and exported to int8 TFLite."""

import json
import time

import numpy as np
import pytest

import procs
from procs import REPO, run_one
from tune_helpers import same_weights_as_checkpoint


@pytest.fixture(autouse=True, scope="module")
def _needs():
    """This module's processes import sklearn, matplotlib (tests/procs.py hides them by default)."""
    with procs.unhidden("sklearn", "matplotlib"):
        yield


pytestmark = pytest.mark.slow


def test_hyperband_on_two_mirrored_replicas(tmp_path):
    # A subprocess: the 2 logical CPU devices must exist before TensorFlow initializes its devices.
    started = time.monotonic()
    out = run_one(["-m", "tfscale", "tune", str(REPO / "examples" / "tune" / "digits.toml"),
                   "--set", f"tune.directory={tmp_path}", "--set", "tune.epochs=2",
                   "--set", f'tune.export={{path = "{tmp_path / "best.tflite"}", quantize = "int8"}}'], timeout=400).stdout
    wall = time.monotonic() - started
    results = json.loads((tmp_path / "digits" / "tfscale_results.json").read_text())

    assert (results["strategy"], results["num_replicas"]) == ("mirrored", 2)
    assert (results["global_batch_size"], results["per_replica_batch_size"]) == (64, 32)
    trials = results["trials"]
    # Hyperband with 2 epochs at most and factor 2: 2 trials of 1 epoch, the better one continued to 2, 2 of 2.
    assert len(trials) == 5 and len({t["trial"] for t in trials}) == 5
    assert all(t["status"] == "COMPLETED" and t["seconds"] > 0 for t in trials), trials
    # each trial's own training time: the trials ran one after another inside the command, so together they
    # took less than it did (a search-wide or cumulative clock would not); the time itself is printed, not asserted
    print(f"trial seconds {[round(t['seconds'], 2) for t in trials]}, the command {wall:.1f} s")
    assert sum(t["seconds"] for t in trials) < wall, (trials, wall)
    assert sorted(t["hyperparameters"]["tuner/epochs"] for t in trials) == [1, 1, 2, 2, 2]
    best = results["best"]
    assert best["score"] == max(t["score"] for t in trials)
    assert best["score"] > 0.5, best  # 10 classes: chance is 0.1

    # The table on the terminal: one line per trial under the header.
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("trial  status"))
    assert [line.split()[0] for line in lines[header + 2: header + 7]] == [t["trial"] for t in trials]
    # ... with the seconds the results file holds (one decimal)
    assert all(f"{t['seconds']:.1f}" in lines[header + 2 + i].split() for i, t in enumerate(trials)), lines
    assert f"best: trial {best['trial']}" in out

    assert (tmp_path / "digits" / "tfscale_scores.png").read_bytes()[:4] == b"\x89PNG"
    import keras

    model = keras.saving.load_model(results["best_model"])
    assert results["export"] == str(tmp_path / "best.tflite")  # the best model, handed to tfscale.export
    assert (tmp_path / "best.tflite").read_bytes()[4:8] == b"TFL3"
    x = np.zeros((3, 8, 8, 1), "float32")
    assert model.predict(x, verbose=0).shape == (3, 10)
    # Not retrained: the best model is the best trial's model at its best epoch.
    assert same_weights_as_checkpoint(results["best_model"],
                                      tmp_path / "digits" / f"trial_{best['trial']}" / "checkpoint.weights.h5")
