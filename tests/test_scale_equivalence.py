"""The core promise: one model definition, the same training on 1 replica, 2 CPU replicas,
2 worker processes and 2 processes x 2 replicas (real processes talking gRPC on 127.0.0.1)."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from procs import run_one, run_workers

WORKER = str(Path(__file__).resolve().parent / "workers" / "equivalence.py")
RTOL = 1e-5


def _arms(tmp_path):
    def single(name, strategy, replicas):
        out = str(tmp_path / f"{name}.npz")
        run_one([WORKER, out, strategy, str(replicas)])
        return {name: [np.load(out)]}

    def multi(name, replicas):
        out = str(tmp_path / f"{name}.npz")
        run_workers(2, [WORKER, out, "multi_worker", str(replicas)])
        return {name: [np.load(out.replace(".npz", f".{i}.npz")) for i in range(2)]}

    jobs = [(single, "none", "default", 1), (single, "mirrored2", "mirrored", 2),
            (multi, "workers2", 1), (multi, "workers2x2", 2)]
    results = {}
    with ThreadPoolExecutor(2) as pool:
        for done in pool.map(lambda job: job[0](*job[1:]), jobs):
            results.update(done)
    return results


def _max_rel(a, b):
    """Largest difference relative to the tensor's scale (elementwise ratios blow up near zero)."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def test_same_losses_and_weights_on_every_scale(tmp_path):
    results = _arms(tmp_path)
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
