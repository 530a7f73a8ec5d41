"""`tfscale tune --workers 3`: a chief oracle and 3 tuners on 127.0.0.1 share one search; one tuner dies mid-trial."""

import json

import pytest

import procs
from procs import run_one
from tune_helpers import write_run


@pytest.fixture(autouse=True, scope="module")
def _needs():
    """This module's processes import sklearn, matplotlib (tests/procs.py hides them by default)."""
    with procs.unhidden("sklearn", "matplotlib"):
        yield


pytestmark = pytest.mark.slow

MAX_TRIALS = 5


def test_tuners_share_one_search_and_outlive_a_dead_one(tmp_path):
    sync = tmp_path / "sync"
    sync.mkdir()
    run_file = write_run(tmp_path, strategy={"name": "default"}, tuner="random", objective="val_accuracy",
                         max_trials=MAX_TRIALS, epochs=1, global_batch_size=64)
    # Every tuner holds a trial at once (tests/workers/tune_model.py waits for it); then tuner2 dies holding its.
    env = {"TUNE_TEST_SYNC": str(sync), "TUNE_TEST_TUNERS": "tuner0,tuner1,tuner2", "TUNE_TEST_DIE": "tuner2"}
    proc = run_one(["-m", "tfscale", "tune", str(run_file), "--workers", "3", "--timeout", "400"], env=env,
                   timeout=450)
    out = proc.stdout

    assert all((sync / f"tuner{i}.started").exists() for i in range(3))  # all three got a trial
    assert "tuner2 was killed by SIGKILL; the search went on without it" in out
    results = json.loads((tmp_path / "searches" / "test" / "tfscale_results.json").read_text())
    trials = results["trials"]
    ids = [t["trial"] for t in trials]
    # Every trial the chief handed out is recorded once and finished, the dead tuner's by another tuner.
    assert len(ids) == len(set(ids)) == MAX_TRIALS
    assert all(t["status"] == "COMPLETED" and t["score"] is not None for t in trials), trials
    assert {t["tuner"] for t in trials} == {"tuner0", "tuner1"}
    assert results["dead_tuners"] == ["tuner2"]
