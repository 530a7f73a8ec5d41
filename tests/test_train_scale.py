"""Training at scale for real: a killed worker's job resumes (`tfscale.fit` on every scale: test_scale_equivalence).

Every process here is a real TensorFlow process on 127.0.0.1 (tests/procs.py).
"""

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


def test_two_kills_in_a_row_resume_and_end_like_an_uninterrupted_run(tmp_path):
    """Worker 1 SIGKILLed mid-epoch 2, then the restarted chief while it writes a checkpoint (half a file on
    disk): --max-restarts 2 resumes twice, from the last whole checkpoint, and the half file is gone."""
    worker = str(WORKERS / "train_resume.py")
    (tmp_path / "tmp").mkdir()
    reference = _start([worker, str(tmp_path / "ref.npz"), str(tmp_path / "ref_ckpt"), str(tmp_path / "ref_tb")])
    job = procs.run_one(["-m", "tfscale", "launch", "-n", "2", "--max-restarts", "2", "--", sys.executable, worker,
                         str(tmp_path / "out.npz"), str(tmp_path / "ckpt"), str(tmp_path / "tb"),
                         str(tmp_path / "killed"), "2"], env={"TMPDIR": str(tmp_path / "tmp")}, timeout=400)
    procs.wait_all([reference], timeout=200)
    assert (tmp_path / "killed").exists(), job.stdout  # worker 1 really died mid-epoch
    half = (tmp_path / "killed.2").read_text()  # then the restarted chief, mid-checkpoint
    assert "epoch-00002" in half and not os.path.exists(half), half
    assert job.stdout.count("restarting all 2 worker(s)") == 2, job.stdout[-3000:]
    ref, chief, other = (np.load(tmp_path / n) for n in ("ref.npz", "out.0.npz", "out.1.npz"))
    assert (int(chief["resumed_from_epoch"]), int(other["resumed_from_epoch"])) == (1, 1)
    assert (int(chief["epochs_run"]), int(ref["epochs_run"])) == (2, 3)
    for key in (k for k in ref.files if k.startswith("w")):
        np.testing.assert_allclose(chief[key], ref[key], atol=1e-5)
        np.testing.assert_array_equal(chief[key], other[key])
    # Only the chief's folders exist; the other worker's temporary ones are gone, and so are partial files.
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["epoch-00002.json", "epoch-00002.weights.h5",
                                                     "epoch-00003.json", "epoch-00003.weights.h5"]
    assert os.listdir(tmp_path / "tb" / "train")
    assert not [n for n in os.listdir(tmp_path / "tmp") if n.startswith("tfscale-")]
    # Progress on the chief only.
    assert "[w0] Epoch 3/3" in job.stdout and "[w1] Epoch" not in job.stdout
