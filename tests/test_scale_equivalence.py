"""The core promise: one model definition, the same training on 1 replica, 2 CPU replicas,
2 worker processes and 2 processes x 2 replicas (real processes talking gRPC on 127.0.0.1).

Keras `fit` (tests/workers/equivalence.py) and, in the same processes on 1 replica, 2 replicas and
2 workers, `tfscale.fit` with learning-rate scaling, warmup, accumulation and mixed precision
(tests/workers/train_equivalence.py): one TensorFlow start-up per process for both.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from procs import run_one, run_workers

WORKER = str(Path(__file__).resolve().parent / "workers" / "equivalence.py")
RTOL = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """({arm: [its processes' Keras-fit arrays]}, {arm: its tfscale.fit arrays}) for every arm."""
    tmp_path = tmp_path_factory.mktemp("equivalence")
    fit_arm = {"none": "default", "mirrored2": "mirrored", "workers2": "workers"}  # its name in `fitted`

    def single(name, strategy, replicas):
        out, fit_out = str(tmp_path / f"{name}.npz"), str(tmp_path / f"fit-{fit_arm[name]}.npz")
        run_one([WORKER, out, strategy, str(replicas), fit_out], timeout=400)
        return {name: [np.load(out)]}

    def multi(name, replicas):
        out = str(tmp_path / f"{name}.npz")
        fit_out = [str(tmp_path / f"fit-{fit_arm[name]}.npz")] if name in fit_arm else []
        run_workers(2, [WORKER, out, "multi_worker", str(replicas), *fit_out], timeout=400)
        return {name: [np.load(out.replace(".npz", f".{i}.npz")) for i in range(2)]}

    jobs = [(single, "none", "default", 1), (single, "mirrored2", "mirrored", 2),
            (multi, "workers2", 1), (multi, "workers2x2", 2)]
    results = {}
    with ThreadPoolExecutor(2) as pool:
        for done in pool.map(lambda job: job[0](*job[1:]), jobs):
            results.update(done)
    fitted = {name: np.load(tmp_path / f"fit-{name}.npz") for name in ("default", "mirrored", "workers.0", "workers.1")}
    return results, fitted


def _max_rel(a, b):
    """Largest difference relative to the tensor's scale (elementwise ratios blow up near zero)."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def test_same_losses_and_weights_on_every_scale(runs):
    results = runs[0]
    reference = results["none"][0]
    assert int(reference["steps"]) == 20 and int(reference["num_replicas"]) == 1
    weights = [k for k in reference.files if k.startswith("w")]
    report = {}
    for name, expected_replicas in (("mirrored2", 2), ("workers2", 2), ("workers2x2", 4)):
        for run in results[name]:
            assert int(run["num_replicas"]) == expected_replicas
            assert int(run["steps"]) == 20, f"{name} ran {int(run['steps'])} steps"
            if name.startswith("workers"):
                assert "steps_per_execution=2" in str(run["spe_error"]) and "19246" in str(run["spe_error"])
                # per step besides the gradients': one all-reduce for all logs (one op per local replica);
                # no reduce per log, no "does every worker still have data" reduce (equal steps by design)
                besides = [str(c) for c in run["collectives"] if not str(c).startswith("sgd/")]
                assert len(besides) == expected_replicas // 2, f"{name}: collectives besides the gradients': {besides}"
            loss_diff = float(np.max(np.abs(reference["losses"] - run["losses"]) / np.abs(reference["losses"])))
            weight_diff = max(_max_rel(reference[w], run[w]) for w in weights)
            assert loss_diff < RTOL, f"{name}: per-step losses differ by {loss_diff:.2e} relative"
            assert weight_diff < RTOL, f"{name}: final weights differ by {weight_diff:.2e} relative"
            assert abs(float(run["eval_loss"]) - float(reference["eval_loss"])) < RTOL * 10
            assert np.allclose(run["predictions"], reference["predictions"], rtol=RTOL, atol=1e-6)
            report[name] = max(report.get(name, 0.0), loss_diff, weight_diff)
        if len(results[name]) > 1:  # every worker ends with identical weights
            first, other = results[name]
            assert all(np.array_equal(first[w], other[w]) for w in weights), f"{name}: workers disagree"
    print("largest relative differences:", report)


@pytest.fixture(scope="module")
def fitted(runs):
    """The `tfscale.fit` arms by name: default, mirrored, workers.0, workers.1."""
    return runs[1]


def _weights(arm, precision):
    return [arm[k] for k in sorted(arm.files, key=lambda k: (len(k), k)) if k.startswith(f"{precision}_w")]


def test_float32_with_warmup_scaling_and_accumulation_is_the_same_on_every_scale(fitted):
    ref = fitted["default"]
    # 0.05 at batch 16 -> 0.2 at 32 x 2 accumulated (linear); warmup from 0.05 over 3 updates of 2 batches.
    assert ref["float32_peak_lr"] == pytest.approx(0.2)
    np.testing.assert_allclose(ref["float32_lr"][:7], [0.1, 0.15, 0.15, 0.2, 0.2, 0.2, 0.2], rtol=1e-6)
    for name in ("mirrored", "workers.0", "workers.1"):
        arm = fitted[name]
        assert len(arm["float32_losses"]) == 24
        np.testing.assert_allclose(arm["float32_losses"], ref["float32_losses"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(arm["float32_lr"], ref["float32_lr"], rtol=1e-6)
        for a, b in zip(_weights(arm, "float32"), _weights(ref, "float32"), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert (fitted["mirrored"]["num_replicas"], fitted["workers.0"]["num_replicas"]) == (2, 2)


def test_mixed_float16_with_loss_scaling_follows_the_same_losses(fitted):
    ref = fitted["default"]
    assert str(ref["mixed_float16_dtype"]) == "float16"
    for name in ("mirrored", "workers.0", "workers.1"):
        arm = fitted[name]
        assert str(arm["mixed_float16_dtype"]) == "float16"
        # float16 sums over a batch split in two round differently: close, not bit-equal.
        np.testing.assert_allclose(arm["mixed_float16_losses"], ref["mixed_float16_losses"], rtol=1e-3)
    for a, b in zip(_weights(fitted["workers.0"], "mixed_float16"), _weights(fitted["workers.1"], "mixed_float16"),
                    strict=True):
        np.testing.assert_array_equal(a, b)  # the workers of one job hold the same weights


def test_global_batch_that_does_not_divide_over_the_replicas_is_refused(fitted):
    for name in ("mirrored", "workers.0"):
        message = str(fitted[name]["indivisible_error"])
        assert "33 does not divide evenly over 2 replicas" in message and "32 or 34" in message
