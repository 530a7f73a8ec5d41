"""Preemption and elastic resume on real workers: a SIGTERM to `tfscale launch` (forwarded to every worker) saves
one checkpoint at an agreed step, the job exits 143, and a restart on the same or another number of workers or
replicas ends with the weights of the uninterrupted run (tests/workers/preempt_resume.py)."""

import random
import sys

import numpy as np
import pytest

import procs
from tfscale.scale.checkpoint_store import CheckpointStore

pytestmark = pytest.mark.slow
WORKER = str(procs.REPO / "tests" / "workers" / "preempt_resume.py")
STEPS = 10  # per epoch, as in the worker (3 epochs, global batch 24)


def _launch(n, out, ckpt, *extra, replicas=None, backend=None, check=True, env=None):
    argv = ["-m", "tfscale", "launch", "-n", str(n)]
    argv += ["--replicas-per-worker", str(replicas)] if replicas else []
    argv += ["--backend", backend] if backend else []
    return procs.run_one([*argv, "--", sys.executable, WORKER, str(out), str(ckpt), *map(str, extra)],
                         timeout=300, check=check, env=env)


def _single(out, ckpt, *extra, replicas=None, env=None, check=True):
    return procs.run_one([WORKER, str(out), str(ckpt), *map(str, extra)], timeout=300, check=check,
                         env={**({"REPLICAS": str(replicas)} if replicas else {}), **(env or {})})


def _weights(path):
    data = np.load(path)
    return [data[k] for k in sorted((k for k in data.files if k[0] == "w" and k[1:].isdigit()), key=lambda k: int(k[1:]))]


def _assert_same(a, b):
    assert len(a) == len(b) >= 4
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: one process, one replica, the same global batch."""
    folder = tmp_path_factory.mktemp("reference")
    _single(folder / "ref.npz", folder / "ckpt")
    return _weights(folder / "ref.npz")


@pytest.fixture(scope="module")
def jax_reference(tmp_path_factory):
    """The uninterrupted run on JAX (its initial weights come from JAX's random numbers, not TensorFlow's)."""
    folder = tmp_path_factory.mktemp("jax_reference")
    _single(folder / "ref.npz", folder / "ckpt", env={"KERAS_BACKEND": "jax"})
    return _weights(folder / "ref.npz")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The worker's arrays and 10 more rows, as `tfscale data convert` shards (4 of them, 250 records)."""
    from tfscale.data.convert import convert

    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.RandomState(0)  # as in the worker
    x = rng.rand(STEPS * 24, 12).astype("float32")
    x = np.concatenate([x, np.random.RandomState(1).rand(10, 12).astype("float32")])
    y = (x[:, :6].sum(1) > x[:, 6:].sum(1)).astype("int32")
    with open(folder / "table.csv", "w") as f:
        f.write(",".join(f"f{i}" for i in range(12)) + ",label\n")
        f.writelines(",".join(repr(float(v)) for v in row) + f",{label}\n" for row, label in zip(x, y))
    convert(str(folder / "table.csv"), str(folder / "out"), 4, label="label")
    return str(folder / "out")


@pytest.fixture(scope="module")
def shards_reference(shards, tmp_path_factory):
    """The uninterrupted run on the converted shards: one process, one replica."""
    folder = tmp_path_factory.mktemp("shards_reference")
    _single(folder / "ref.npz", folder / "ckpt", env={"DATA": shards})
    return _weights(folder / "ref.npz")


def _preempted(job, ckpt, at):
    """The job exited 143 with a preemption checkpoint at or after the signalled step; returns it."""
    assert job.returncode == 143, job.stdout[-3000:]
    newest = CheckpointStore(str(ckpt)).list()[0]
    assert newest.reason == "preemption", newest
    lost_to_signal = newest.global_step - at  # steps between the signal and the save: trained, then saved
    assert 0 <= lost_to_signal <= 2, (at, newest)
    print(f"signal at step {at}, saved at step {newest.global_step} ({newest.name}): 0 steps lost")
    return newest


def test_two_tensorflow_workers_sigtermed_mid_epoch_resume_equal_to_the_uninterrupted_run(reference, tmp_path):
    at = random.Random().randrange(STEPS + 1, 2 * STEPS - 2)  # mid-epoch 2, a random step
    job = _launch(2, tmp_path / "out.npz", tmp_path / "ckpt", at, check=False)
    assert "interrupted by SIGTERM" in job.stdout, job.stdout[-3000:]
    saved = _preempted(job, tmp_path / "ckpt", at)
    assert (saved.num_workers, saved.num_replicas) == (2, 2)
    again = _launch(2, tmp_path / "out.npz", tmp_path / "ckpt")
    assert f"resumed at {saved.epoch}:{saved.step}" in again.stdout, again.stdout[-2000:]
    _assert_same(_weights(tmp_path / "out.npz"), reference)
    _assert_same(_weights(tmp_path / "out.1.npz"), reference)


@pytest.mark.parametrize("before, after", [((2, 2), (1, 2)), ((1, 2), (1, 3))],
                         ids=["4-replicas-to-2", "2-replicas-to-3"])
def test_elastic_resume_on_another_number_of_replicas_equals_the_uninterrupted_run(reference, tmp_path, before,
                                                                                 after):
    """(workers, replicas per worker) before the preemption and after: the global batch (24) and the learning
    rate stay, the per-replica batch is derived anew."""
    at = random.Random().randrange(STEPS + 1, 2 * STEPS - 2)
    out, ckpt = tmp_path / "out.npz", tmp_path / "ckpt"
    workers, replicas = before
    job = (_launch(workers, out, ckpt, at, replicas=replicas, check=False) if workers > 1
           else _single(out, ckpt, at, replicas=replicas, check=False))
    saved = _preempted(job, ckpt, at)
    assert saved.num_replicas == workers * replicas
    workers, replicas = after
    resumed = _single(out, ckpt, replicas=replicas)
    assert f"{workers * replicas} replica(s), resumed at {saved.epoch}:{saved.step}" in resumed.stdout, resumed.stdout
    _assert_same(_weights(out), reference)


def test_converted_shards_read_in_elastic_order_resume_on_one_worker_equal_to_the_uninterrupted_run(
        shards, shards_reference, tmp_path):
    """`tfscale data convert` shards through an elastic pipeline, shuffled each epoch: 2 TensorFlow workers
    preempted mid-epoch, resumed in 1 process at the exact next global batch (not at the epoch's start), end
    equal to one uninterrupted process: global batch k holds the same records on 1 worker and on 2."""
    at = random.Random().randrange(STEPS + 1, 2 * STEPS - 2)
    out, ckpt = tmp_path / "out.npz", tmp_path / "ckpt"
    job = _launch(2, out, ckpt, at, check=False, env={"DATA": shards})
    saved = _preempted(job, ckpt, at)
    assert saved.num_workers == 2 and saved.step > 0, saved
    resumed = _single(out, ckpt, env={"DATA": shards})
    assert f"1 replica(s), resumed at {saved.epoch}:{saved.step}" in resumed.stdout, resumed.stdout
    assert "starts again at its first batch" not in resumed.stdout
    _assert_same(_weights(out), shards_reference)


def test_jax_data_parallel_over_2_processes_resumes_in_1_process_equal_to_the_uninterrupted_run(jax_reference,
                                                                                                 tmp_path):
    """JAX: 2 processes agree on the step through the distributed runtime's key-value store, save, exit 143;
    one process with one device resumes there, and ends equal to one uninterrupted JAX process."""
    at = random.Random().randrange(STEPS + 1, 2 * STEPS - 2)
    out, ckpt = tmp_path / "out.npz", tmp_path / "ckpt"
    job = _launch(2, out, ckpt, at, backend="jax", check=False, env={"KERAS_BACKEND": "jax"})
    saved = _preempted(job, ckpt, at)
    assert (saved.backend, saved.num_workers) == ("jax", 2)
    resumed = _single(out, ckpt, env={"KERAS_BACKEND": "jax"})
    assert f"resumed at {saved.epoch}:{saved.step}" in resumed.stdout, resumed.stdout
    _assert_same(_weights(out), jax_reference)


def test_a_model_sharded_over_2_processes_is_saved_by_each_its_own_shards_and_resumes_on_data_parallel(tmp_path):
    """JAX model_parallel, the model axis across 2 processes: the preemption checkpoint is a folder of shards
    (no process gathers the model); 1 process with 2 devices on data_parallel resumes from it and ends equal to
    the uninterrupted 2-process run."""
    env = {"KERAS_BACKEND": "jax", "STRATEGY": "model_parallel", "WIDTH": "512"}
    _launch(2, tmp_path / "ref.npz", tmp_path / "ref_ckpt", backend="jax", env=env)
    at = random.Random().randrange(STEPS + 1, 2 * STEPS - 2)
    out, ckpt = tmp_path / "out.npz", tmp_path / "ckpt"
    saved = _preempted(_launch(2, out, ckpt, at, backend="jax", check=False, env=env), ckpt, at)
    assert all(name.startswith(saved.name + ".sharded/") for name in saved.files) and len(saved.files) > 2, saved
    assert not (ckpt / f"{saved.name}.weights.h5").exists()
    assert CheckpointStore(str(ckpt)).verify(saved) is None
    resumed = _single(out, ckpt, replicas=2, env={**env, "STRATEGY": "data_parallel"})
    assert f"2 replica(s), resumed at {saved.epoch}:{saved.step}" in resumed.stdout, resumed.stdout[-2000:]
    _assert_same(_weights(out), _weights(tmp_path / "ref.npz"))
