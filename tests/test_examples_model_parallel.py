"""examples/model_parallel: a model over a per-device budget, sharded over 2 CPU host devices, fits and trains.

The example runs as a user runs it (a child process, JAX backend chosen by the strategy name), with
`import tensorflow` blocked: model parallelism needs only JAX. Bytes come from the arrays' shards.
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


SCRIPT = REPO / "examples" / "model_parallel" / "train.py"
BLOCKED = ("import runpy, sys\nsys.modules['tensorflow'] = None  # as where TensorFlow is not installed\n"
           "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("model_parallel") / "report.json"
    # the script's replicas=2 makes the 2 host devices; 540 s: under pytest's timeout, so a hang shows the output
    done = run_one(["-c", BLOCKED, str(SCRIPT), "--epochs", "2", "--json", str(out)], timeout=540)
    return json.loads(out.read_text()), done.stdout


def test_model_over_the_budget_fits_when_sharded_over_two_devices(run):
    report, output = run
    assert report["devices"] == ["cpu:0", "cpu:1"] and report["mesh"] == {"data": 1, "model": 2}
    assert report["weights_bytes"] > report["budget_bytes"] >= report["weights_bytes_per_device"]
    assert not report["fits_whole"] and report["fits_sharded"]
    assert report["weights_bytes_per_device"] <= 0.55 * report["weights_bytes"]
    assert report["optimizer_bytes_per_device"] <= 0.55 * report["optimizer_bytes"]
    assert "fits; whole it would not" in output


def test_every_large_variable_is_sharded_and_shown_in_the_table(run):
    report, output = run
    for variable in report["variables"]:
        large = variable["bytes"] >= 65536 * 4
        assert (variable["sharding"] != "replicated") == large, variable
        if large:
            assert variable["bytes_per_device"] * 2 == variable["bytes"], variable
        assert variable["path"] in output
    assert "variable" in output and "per device" in output  # the table's header


def test_sharded_model_trains(run):
    report, _ = run
    assert report["loss"][-1] < report["loss"][0]
    assert report["held_out_accuracy"] > 0.5  # 4 topics: chance is 25%
