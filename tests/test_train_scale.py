"""Training at scale for real: the same losses on 1, 2 replicas and 2 workers; a killed worker's job resumes.

Every process here is a real TensorFlow process on 127.0.0.1 (tests/procs.py).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import procs

WORKERS = procs.REPO / "tests" / "workers"
pytestmark = pytest.mark.slow


def _start(argv, **env):
    return subprocess.Popen([sys.executable, *argv], env=procs.base_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    """No strategy, mirrored x2 and 2 workers x1, run side by side; their saved arrays by name."""
    out = tmp_path_factory.mktemp("equivalence")
    worker = str(WORKERS / "train_equivalence.py")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in procs.free_ports(2)]}
    started = [_start([worker, str(out / "default.npz"), "default", "1"]),
               _start([worker, str(out / "mirrored.npz"), "mirrored", "2"])]
    started += [_start([worker, str(out / "workers.npz"), "multi_worker", "1"],
                       TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
                for i in range(2)]
    procs.wait_all(started, timeout=400)
    return {name: np.load(out / f"{name}.npz") for name in ("default", "mirrored", "workers.0", "workers.1")}


def _weights(arm, precision):
    return [arm[k] for k in sorted(arm.files, key=lambda k: (len(k), k)) if k.startswith(f"{precision}_w")]


def test_float32_with_warmup_scaling_and_accumulation_is_the_same_on_every_scale(arms):
    ref = arms["default"]
    # 0.05 at batch 16 -> 0.2 at 32 x 2 accumulated (linear); warmup from 0.05 over 3 updates of 2 batches.
    assert ref["float32_peak_lr"] == pytest.approx(0.2)
    np.testing.assert_allclose(ref["float32_lr"][:7], [0.1, 0.15, 0.15, 0.2, 0.2, 0.2, 0.2], rtol=1e-6)
    for name in ("mirrored", "workers.0", "workers.1"):
        arm = arms[name]
        assert len(arm["float32_losses"]) == 24
        np.testing.assert_allclose(arm["float32_losses"], ref["float32_losses"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(arm["float32_lr"], ref["float32_lr"], rtol=1e-6)
        for a, b in zip(_weights(arm, "float32"), _weights(ref, "float32")):
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert (arms["mirrored"]["num_replicas"], arms["workers.0"]["num_replicas"]) == (2, 2)


def test_mixed_float16_with_loss_scaling_follows_the_same_losses(arms):
    ref = arms["default"]
    assert str(ref["mixed_float16_dtype"]) == "float16"
    for name in ("mirrored", "workers.0", "workers.1"):
        arm = arms[name]
        assert str(arm["mixed_float16_dtype"]) == "float16"
        # float16 sums over a batch split in two round differently: close, not bit-equal.
        np.testing.assert_allclose(arm["mixed_float16_losses"], ref["mixed_float16_losses"], rtol=1e-3)
    for a, b in zip(_weights(arms["workers.0"], "mixed_float16"), _weights(arms["workers.1"], "mixed_float16")):
        np.testing.assert_array_equal(a, b)  # the workers of one job hold the same weights


def test_global_batch_that_does_not_divide_over_the_replicas_is_refused(arms):
    for name in ("mirrored", "workers.0"):
        message = str(arms[name]["indivisible_error"])
        assert "33 does not divide evenly over 2 replicas" in message and "32 or 34" in message


def test_killed_worker_job_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
    worker = str(WORKERS / "train_resume.py")
    (tmp_path / "tmp").mkdir()
    reference = _start([worker, str(tmp_path / "ref.npz"), str(tmp_path / "ref_ckpt"), str(tmp_path / "ref_tb")])
    job = procs.run_one(["-m", "tfscale", "launch", "-n", "2", "--max-restarts", "1", "--", sys.executable, worker,
                         str(tmp_path / "out.npz"), str(tmp_path / "ckpt"), str(tmp_path / "tb"),
                         str(tmp_path / "killed")], env={"TMPDIR": str(tmp_path / "tmp")}, timeout=400)
    procs.wait_all([reference], timeout=200)
    assert (tmp_path / "killed").exists(), job.stdout  # worker 1 really died mid-epoch once
    assert "restarting all 2 worker(s)" in job.stdout
    ref, chief, other = (np.load(tmp_path / n) for n in ("ref.npz", "out.0.npz", "out.1.npz"))
    assert (int(chief["resumed_from_epoch"]), int(other["resumed_from_epoch"])) == (1, 1)
    assert (int(chief["epochs_run"]), int(ref["epochs_run"])) == (2, 3)
    for key in (k for k in ref.files if k.startswith("w")):
        np.testing.assert_allclose(chief[key], ref[key], atol=1e-5)
        np.testing.assert_array_equal(chief[key], other[key])
    # Only the chief's folders exist; the other worker's temporary ones are gone, and so are partial files.
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["epoch-00002.weights.h5", "epoch-00003.weights.h5"]
    assert os.listdir(tmp_path / "tb" / "train")
    assert not [n for n in os.listdir(tmp_path / "tmp") if n.startswith("tfscale-")]
    # Progress on the chief only.
    assert "[w0] Epoch 3/3" in job.stdout and "[w1] Epoch" not in job.stdout
