"""The JAX engine's parity with the TensorFlow engine across processes (issue #25, part 2): `Engine.exchange` and
the shared-checkpoint check, an exact `Scale.evaluate`, and `sharded=True` input. One real 2-process JAX launch
on 127.0.0.1 (tests/workers/jax_parity.py); the one-process references run here, in Keras on TensorFlow.
"""

from __future__ import annotations

import json
import sys

import keras
import numpy as np
import pytest

import procs

pytestmark = pytest.mark.slow
WORKER = str(procs.REPO / "tests" / "workers" / "jax_parity.py")
RTOL = 1e-5


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Both workers' results (rank -> dict) and the folder they wrote."""
    out = tmp_path_factory.mktemp("parity")
    with procs.unhidden("jax"):
        job = procs.run_one(["-m", "tfscale", "launch", "-n", "2", "--backend", "jax", "--timeout", "300", "--",
                             sys.executable, WORKER, str(out)], env={"KERAS_BACKEND": "jax"}, timeout=360)
    assert job.returncode == 0, job.stdout[-4000:]
    results = [json.loads((out / f"rank-{rank}.json").read_text()) for rank in range(2)]
    assert all(r["backend"] == "jax" and r["workers"] == 2 and r["replicas"] == 2 for r in results), results
    return results, out


def test_exchange_gives_every_process_each_value_by_rank(launched):
    results, _ = launched
    assert [r["exchange"] for r in results] == [["from-0", "from-1"]] * 2


def test_processes_that_see_different_checkpoint_folders_refuse_before_training(launched):
    """checkpoint_dir another folder on each process (as on hosts that share no disk): every process raises the
    ClusterError before its first step; the same folder on both trains its 4 steps."""
    results, out = launched
    for rank, result in enumerate(results):
        error, steps = result["private"]["error"], result["private"]["steps"]
        assert error is not None and steps == 0, result["private"]
        assert f"private-{rank}' is not shared between the hosts: worker(s) 1 do not see" in error and "NFS" in error
        assert result["shared"] == {"steps": 4}
    assert not list(out.glob("private-*/**/*.weights.h5")) and list(out.glob("shared/**/*.weights.h5"))


def _reference_classifier(data):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.set_weights([data["kernel"], np.zeros(3, "float32")])
    return model


def test_two_processes_evaluate_1001_examples_as_one_process_does(launched):
    """`scale.evaluate` on 2 processes, 1,001 examples in global batches of 64 (15 whole and 41 left): loss and
    accuracy equal one process's `evaluate` on all 1,001, for arrays, a generator function and tf.data. The last
    41 are labelled wrong on purpose: leaving them out (as `model.evaluate` of a distributed input does) gives
    accuracy 1.0 instead of 960/1001."""
    results, out = launched
    data = np.load(out / "data.npz")
    model = _reference_classifier(data)
    one = model.evaluate(data["x"], data["y"], batch_size=64, verbose=0, return_dict=True)
    first_960 = model.evaluate(data["x"][:960], data["y"][:960], batch_size=64, verbose=0, return_dict=True)
    assert one["accuracy"] == pytest.approx(960 / 1001, abs=1e-7)
    for result in results:
        for kind in ("arrays", "generator", "dataset"):
            got = result["evaluate"][kind]
            assert got["accuracy"] == pytest.approx(one["accuracy"], rel=RTOL), (kind, got, one)
            assert got["loss"] == pytest.approx(one["loss"], rel=RTOL), (kind, got, one)
        dropping = result["evaluate"]["dropping"]  # what the feature replaces: 41 examples left out
        assert dropping["accuracy"] == 1.0 and dropping["loss"] == pytest.approx(first_960["loss"], rel=RTOL)
        assert abs(dropping["loss"] - one["loss"]) > 0.05


def test_sharded_input_is_read_as_handed_and_trains_one_model(launched):
    """`distribute(shard, sharded=True)`: each process reads exactly its own 64 ids, in order (nothing re-sharded),
    8 per step; one epoch of `fit` gives both processes the weights one process gets on the global batches
    (rank 0's 8 rows, then rank 1's 8), for NumPy arrays and tf.data."""
    results, out = launched
    shards = [np.load(out / f"shard-{rank}.npz") for rank in range(2)]
    x = np.concatenate([np.concatenate([s["x"][i:i + 8] for s in shards]) for i in range(0, 64, 8)])
    y = np.concatenate([np.concatenate([s["y"][i:i + 8] for s in shards]) for i in range(0, 64, 8)])
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    model.set_weights([np.full((4, 1), 0.1, "float32"), np.zeros(1, "float32")])
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    expected = model.get_weights()
    for rank, result in enumerate(results):
        for kind in ("arrays", "dataset"):
            got = result["sharded"][kind]
            assert got["seen"] == list(range(64 * rank, 64 * rank + 64)), (rank, kind, got["seen"])
            assert got["iterations"] == 8
            weights = [np.asarray(w, "float32") for w in got["weights"]]
            assert len(weights) == len(expected)
            for w, e in zip(weights, expected):
                np.testing.assert_allclose(w, e, rtol=RTOL, atol=1e-6)
