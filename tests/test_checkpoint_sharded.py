"""Sharded checkpoints on JAX (tfscale/scale/sharded.py): a model sharded across 2 processes is saved without
any process holding it whole, restored onto another mesh and process count, trains on with the same losses,
and exports. Real JAX processes on 127.0.0.1 (tests/workers/jax_sharded_ckpt.py).
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import procs
from procs import run_one

WORKER = str(Path(__file__).resolve().parent / "workers" / "jax_sharded_ckpt.py")
JAX = {"KERAS_BACKEND": "jax"}
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _needs():
    """This module's processes import jax (tests/procs.py hides them by default)."""
    with procs.unhidden("jax"):
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The 2-process model_parallel run that saves mid-way and trains on; then, from its checkpoint, a
    1-process data_parallel run over 2 devices and a 1-device export (at the same time)."""
    out = tmp_path_factory.mktemp("sharded")
    ckpt = str(out / "ckpt")
    run_one(["-m", "tfscale", "launch", "-n", "2", "--backend", "jax", "--", sys.executable, WORKER, "train",
             str(out / "train.npz"), ckpt], timeout=300)
    jobs = [("resume", {**JAX, "TFSCALE_REPLICAS_PER_WORKER": "2"}), ("export", JAX)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda job: run_one([WORKER, job[0], str(out / f"{job[0]}.npz"), ckpt], env=job[1],
                                          timeout=300), jobs))
    return {"train": [np.load(out / f"train.{rank}.npz") for rank in range(2)],
            "resume": np.load(out / "resume.npz"), "export": np.load(out / "export.npz")}


def _arrays(run, prefix):
    keys = sorted((k for k in run.files if k[0] == prefix and k[1:].isdigit()), key=lambda k: int(k[1:]))
    return [run[k] for k in keys]


def test_sharded_save_holds_no_process_all_weights(runs):
    for rank, run in enumerate(runs["train"]):
        assert bool(run["sharded"])
        shardings = json.loads(str(run["shardings"]))
        assert shardings["sequential/dense/kernel"] == shardings["sequential/dense_1/kernel"] == "(None, 'model')"
        full = int(run["full"])  # the whole model's weights and Adam's state
        peak = int(run["peak_device"]) + int(run["peak_host"])
        gathered = int(run["gather_device"]) + int(run["gather_host"])
        print(f"\nrank {rank}: full model+optimizer {full} B; peak held during save_sharded {peak} B "
              f"({peak / full:.3f}: {int(run['peak_device'])} on devices + {int(run['peak_host'])} by Python/NumPy, "
              f"{int(run['samples'])} samples); during host_weights + save_weights {gathered} B "
              f"({gathered / full:.3f})")
        assert peak < 0.75 * full
        assert gathered >= full  # the measure sees a process holding the whole model
    # process 0 lists the folder once every process has written (the others return without reading it: process 0
    # may move it next)
    files = json.loads(str(runs["train"][0]["files"]))
    assert files["bytes"] == sum(files["files"].values())
    assert 0.5 * full < files["bytes"] < 1.25 * full  # every shard written, and once (zstd-compressed)
    assert any(f.startswith("model/ocdbt.process_1/") for f in files["files"])  # written by each process
    assert any(f.startswith("optimizer/") for f in files["files"])
    assert json.loads(str(runs["train"][1]["files"])) == {"files": {}, "bytes": 0}


def test_restored_on_one_process_data_parallel_trains_on_with_the_same_losses(runs):
    uninterrupted, resumed = runs["train"][0], runs["resume"]
    np.testing.assert_array_equal(uninterrupted["losses"], runs["train"][1]["losses"])
    assert not bool(resumed["sharded"]) and int(resumed["iterations"]) == 3
    for prefix in ("w", "o"):  # weights, then Adam's iteration, learning rate, moments
        saved, restored = _arrays(uninterrupted, prefix), _arrays(resumed, prefix)
        assert len(saved) == len(restored) > 0
        for a, b in zip(saved, restored):
            np.testing.assert_array_equal(a, b)  # keras-team/keras#23251: restored weights differ on JAX
    after = uninterrupted["losses"][3:]
    assert len(after) == len(resumed["losses"]) == 4
    np.testing.assert_allclose(resumed["losses"], after, rtol=1e-5, atol=0)


def test_sharded_checkpoint_exports_to_a_keras_file(runs):
    export = runs["export"]
    assert str(export["paths"][0]) == "sequential_1/dense_3/kernel"  # built anew: matched by order, not path
    for saved, restored in zip(_arrays(runs["train"][0], "w"), _arrays(export, "w"), strict=True):
        np.testing.assert_array_equal(saved, restored)
    np.testing.assert_array_equal(export["loaded"], export["restored"])


def test_user_mistakes_are_tfscale_errors(runs):
    errors = json.loads(str(runs["export"]["errors"]))
    assert errors["mismatch"].startswith("ConfigError: sharded checkpoint ")
    assert "variable sequential_2/dense_6/kernel has shape (64, 512) in this model and (64, 1024) in the " \
           "checkpoint (saved as sequential/dense/kernel)" in errors["mismatch"]
    assert "is not a tfscale sharded checkpoint" in errors["not_a_checkpoint"]
    assert errors["missing"].startswith("ConfigError: ") and "nothing-here is not a folder" in errors["missing"]
    assert errors["exists"].startswith("ConfigError: ") and "exists already" in errors["exists"]
