"""A search killed (SIGKILL) mid-trial and run again loses no finished trial and repeats none."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import procs
from procs import base_env, kill_all, run_one
from tune_helpers import same_weights_as_checkpoint, trial_files, write_run


@pytest.fixture(autouse=True, scope="module")
def _needs():
    """This module's processes import sklearn, matplotlib (tests/procs.py hides them by default)."""
    with procs.unhidden("sklearn", "matplotlib"):
        yield


pytestmark = pytest.mark.slow

MAX_TRIALS = 4


def test_killed_search_resumes_without_losing_or_repeating_trials(tmp_path):
    run_file = write_run(tmp_path, strategy={"name": "default"}, tuner="random", objective="val_accuracy",
                         max_trials=MAX_TRIALS, epochs=2, global_batch_size=64, seed=3)
    project = tmp_path / "searches" / "test"
    argv = [sys.executable, "-m", "tfscale", "tune", str(run_file)]
    first = subprocess.Popen(argv, env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:  # kill it while a trial runs, after at least two have finished
            trials = trial_files(project)
            states = [t["status"] for t in trials.values()]
            if states.count("COMPLETED") >= 2 and "RUNNING" in states:
                break
            assert first.poll() is None, f"the search ended before it could be killed:\n{first.stdout.read()[-3000:]}"
            assert time.monotonic() < deadline, f"no trial ran in time: {trials}"
            time.sleep(0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        kill_all([first])
    before = trial_files(project)  # read after the kill: the files as the killed run left them
    finished = {i: t for i, t in before.items() if t["status"] == "COMPLETED"}
    interrupted = [i for i, t in before.items() if t["status"] == "RUNNING"]
    assert len(finished) >= 2 and len(interrupted) == 1
    weights = {i: os.stat(project / f"trial_{i}" / "checkpoint.weights.h5").st_mtime_ns for i in finished}

    out = run_one(["-m", "tfscale", "tune", str(run_file), "--set", "tune.retrain=true"], timeout=400).stdout
    assert f"trial(s) {interrupted[0]} were left unfinished" in out

    after = trial_files(project)
    results = json.loads((project / "tfscale_results.json").read_text())
    assert sorted(after) == sorted(t["trial"] for t in results["trials"]) == [str(i) for i in range(MAX_TRIALS)]
    assert all(t["status"] == "COMPLETED" for t in after.values()), after
    for i, trial in finished.items():  # not run again: same record, same weights file
        assert after[i]["metrics"] == trial["metrics"] and after[i]["score"] == trial["score"]
        assert os.stat(project / f"trial_{i}" / "checkpoint.weights.h5").st_mtime_ns == weights[i]
    # The interrupted trial ran again with its own hyperparameters; no two trials tried the same ones.
    assert after[interrupted[0]]["hyperparameters"]["values"] == before[interrupted[0]]["hyperparameters"]["values"]
    values = [json.dumps(t["hyperparameters"]["values"], sort_keys=True) for t in after.values()]
    assert len(set(values)) == MAX_TRIALS
    # Retrained from scratch with the best hyperparameters: not the best trial's own weights.
    best = project / f"trial_{results['best']['trial']}" / "checkpoint.weights.h5"
    assert not same_weights_as_checkpoint(results["best_model"], best)
