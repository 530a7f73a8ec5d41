"""benchmarks/accelerator_check.py runs where TensorFlow is not installed, on 2 CPU host devices, and its figures hold.

The script is run as a user without TensorFlow would run it: `import tensorflow` is blocked before the script
starts (a `python -c` wrapper), and JAX sees 2 host devices from XLA_FLAGS, as it would see 2 GPUs. Nothing
here asserts on time: examples/s and step time only have to be there.
"""

import json

import pytest

import procs
from procs import REPO, run_one


@pytest.fixture(autouse=True, scope="module")
def _needs():
    """This module's processes import jax (tests/procs.py hides them by default)."""
    with procs.unhidden("jax"):
        yield


SCRIPT = REPO / "benchmarks" / "accelerator_check.py"
XLA_FLAGS = "--xla_force_host_platform_device_count=2"  # JAX sees 2 host devices, as it would see 2 GPUs
BLOCKED = ("import runpy, sys\nsys.modules['tensorflow'] = None  # as where TensorFlow is not installed\n"
           "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("accelerator_check") / "report.json"
    env = {"XLA_FLAGS": XLA_FLAGS, "KERAS_BACKEND": "tensorflow"}  # the script is JAX's: it sets the backend
    # 540 s: under pytest's timeout, so that a hang fails with the script's output
    run = run_one(["-c", BLOCKED, str(SCRIPT), "--quick", "--json", str(out)], env=env, timeout=540)
    assert out.exists(), run.stdout[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def unblocked(tmp_path_factory) -> dict:
    """One small run where TensorFlow is installed and importable, as on most machines."""
    out = tmp_path_factory.mktemp("accelerator_check_tf") / "report.json"
    env = {"XLA_FLAGS": XLA_FLAGS, "KERAS_BACKEND": "tensorflow"}
    run = run_one([str(SCRIPT), "--quick", "--models", "mlp", "--epochs", "1", "--check-steps", "2", "--json",
                   str(out)], env=env, timeout=540)
    assert out.exists(), run.stdout[-4000:]
    return json.loads(out.read_text())


def runs(report: dict) -> dict[tuple[str, str], dict]:
    return {(r["model"], r["strategy"]): r for r in report["runs"]}


@pytest.mark.slow
def test_accelerator_check_runs_without_tensorflow_on_the_devices_jax_sees(report):
    assert report["platform"] == "cpu" and report["devices"] == 2
    assert not report["tensorflow_loaded"]
    assert set(runs(report)) == {(m, s) for m in ("conv", "mlp") for s in ("one_device", "data_parallel",
                                                                           "model_parallel")}
    for run in report["runs"]:
        # > 0 by design: the figures must be there; tests never assert on timings (benchmarks compare them)
        assert run["examples_per_s"] > 0 and run["step_ms"] > 0, run
        assert run["devices"] == (1 if run["strategy"] == "one_device" else 2)
    assert runs(report)["mlp", "model_parallel"]["mesh"] == {"data": 1, "model": 2}


@pytest.mark.slow
def test_accelerator_check_losses_match_one_device(report):
    for run in report["runs"]:
        assert run["loss_max_rel_diff"] < 1e-5, run
        assert run["last_loss"] < run["first_loss"], run  # it trains


@pytest.mark.slow
def test_accelerator_check_model_parallel_holds_about_half_the_bytes_per_device(report):
    for model in ("conv", "mlp"):
        one = runs(report)[model, "one_device"]
        assert runs(report)[model, "data_parallel"]["bytes_per_device"] == one["bytes_per_device"]
        sharded = runs(report)[model, "model_parallel"]
        assert sharded["bytes"] == one["bytes"]
        assert sharded["bytes_per_device"] <= 0.55 * one["bytes_per_device"], sharded


@pytest.mark.slow
def test_accelerator_check_leaves_an_installed_tensorflow_unloaded(unblocked):
    """Without the blocker (TensorFlow importable), TensorFlow is still not in sys.modules at the script's end."""
    assert unblocked["tensorflow_loaded"] is False
    assert set(runs(unblocked)) == {("mlp", s) for s in ("one_device", "data_parallel", "model_parallel")}
