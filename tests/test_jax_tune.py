"""keras-tuner on the JAX engine (issue #25, part 2): `tfscale tune --workers 2` with KERAS_BACKEND=jax, every
trial under `data_parallel` on 2 host devices (XLA_FLAGS --xla_force_host_platform_device_count=2). A chief
oracle and 2 tuner processes on 127.0.0.1 share one search; the chief rebuilds and saves the best model.
"""

import json

import pytest

import procs
from procs import REPO, run_one

pytestmark = pytest.mark.slow
MODEL = REPO / "tests" / "workers" / "tune_jax.py"
MAX_TRIALS = 2


@pytest.fixture(autouse=True, scope="module")
def _needs():
    """This module's processes import JAX, and matplotlib for the scores' plot (tests/procs.py hides them)."""
    with procs.unhidden("jax", "matplotlib"):
        yield


def test_tuners_on_jax_search_under_data_parallel_on_2_devices(tmp_path):
    record = tmp_path / "record"
    record.mkdir()
    run_file = tmp_path / "run.toml"
    run_file.write_text(f'model = "{MODEL}:build_model"\n\n[data]\ntrain = "{MODEL}:train_data"\n'
                        f'validation = "{MODEL}:validation_data"\n\n[strategy]\nname = "data_parallel"\n\n'
                        f'[tune]\ndirectory = "{tmp_path / "searches"}"\nproject_name = "jax"\ntuner = "random"\n'
                        f'objective = "val_accuracy"\nmax_trials = {MAX_TRIALS}\nepochs = 1\nglobal_batch_size = 32\n')
    env = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "TUNE_JAX_RECORD": str(record), "TUNE_JAX_TUNERS": "tuner0,tuner1"}
    proc = run_one(["-m", "tfscale", "tune", str(run_file), "--workers", "2", "--timeout", "300"], env=env,
                   timeout=360)
    results = json.loads((tmp_path / "searches" / "jax" / "tfscale_results.json").read_text())
    trials = results["trials"]
    assert len({t["trial"] for t in trials}) == len(trials) == MAX_TRIALS, proc.stdout[-4000:]
    assert all(t["status"] == "COMPLETED" and t["score"] is not None for t in trials), trials
    assert {t["tuner"] for t in trials} == {"tuner0", "tuner1"}, trials  # both tuners trained trials
    info = results
    assert (info["strategy"], info["num_replicas"], info["global_batch_size"], info["per_replica_batch_size"]) == \
        ("data_parallel", 2, 32, 16), {k: info[k] for k in ("strategy", "num_replicas")}
    builds = [json.loads(p.read_text()) for p in sorted(record.glob("*.json"))]
    trial_builds = [b for b in builds if b["build"] >= 2]  # every process's first build declares the space
    assert len(trial_builds) >= MAX_TRIALS + 1, builds  # the trials, and the chief's best model
    for built in builds:  # each model on JAX, laid out by the data_parallel distribution over both devices
        assert (built["backend"], built["distribution"], built["devices"]) == ("jax", "DataParallel", 2), built
    assert (tmp_path / "searches" / "jax" / "best_model.keras").exists()
