"""The memory planner of model_parallel (issue #26 part 3): `tfscale info --backend jax --model M --device-memory`.

Its bytes per device are checked against the arrays' own shardings after building (every model of
benchmarks/bench_layouts.py: keras-hub Gemma, Llama, Qwen, Qwen-MoE, GPT-2 and BERT in tiny configurations, and an
MLP, with Adam, on every mesh of 4 CPU host devices: JAX processes, KERAS_BACKEND=jax); the command's
recommendation and its error for a model that fits no mesh run as a user runs them.
"""

from __future__ import annotations

import json

import pytest

import procs
from procs import REPO, run_one

pytestmark = pytest.mark.slow
JAX4 = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
MLP = f"{REPO / 'tests' / 'workers' / 'planner_models.py'}:mlp"


@pytest.fixture(autouse=True, scope="module")
def _needs():
    with procs.unhidden("jax"):
        yield


def test_planned_bytes_per_device_equal_the_arrays_shardings_on_every_mesh():
    found = json.loads(run_one([str(REPO / "tests" / "workers" / "planner_check.py")], env=JAX4,
                               timeout=300).stdout.strip().splitlines()[-1])
    for name in ("gemma", "llama", "qwen", "qwen_moe", "gpt2", "bert", "mlp"):
        meshes = [row["mesh"] for row in found[name]]
        assert meshes == [{"data": 4, "model": 1}, {"data": 2, "model": 2}, {"data": 1, "model": 4}], meshes
        for row in found[name]:
            for part in ("parameters", "optimizer"):
                planned, measured = row["planned"][part], row["measured"][part]
                assert abs(planned - measured) <= 0.10 * measured, (name, row)  # the bar: within 10 %
        # sharding over the model axis really divides the memory: 4 devices hold about a quarter each
        whole, quarter = found[name][0]["measured"]["parameters"], found[name][2]["measured"]["parameters"]
        assert quarter < 0.3 * whole, (name, found[name])
    assert found["too_small"].startswith("ConfigError: the model does not fit 1.00 MiB per device on any mesh")
    assert "give devices with at least 3.45 MiB each" in found["too_small"], found["too_small"]
    assert found["fits_8mib"]["recommended"] == {"data": 2, "model": 2}, found["fits_8mib"]


def _info(*args: str):
    return run_one(["-m", "tfscale", "info", "--backend", "jax", "--replicas", "4", "--model", MLP, *args],
                   env={"KERAS_BACKEND": "jax"}, timeout=300, check=False)


def test_tfscale_info_device_memory_recommends_the_smallest_model_axis_that_fits():
    run = _info("--device-memory", "8MiB", "--batch-size", "64", "--json")
    assert run.returncode == 0, run.stdout[-3000:]
    plan = json.loads(run.stdout[run.stdout.index("{"):])["memory_plan"]
    assert plan["devices"] == 4 and plan["device_memory_bytes"] == 8 << 20 and plan["batch_size"] == 64
    assert [m["mesh"]["model"] for m in plan["meshes"]] == [1, 2, 4]
    assert plan["meshes"][0]["total_bytes"] > 8 << 20 >= plan["meshes"][1]["total_bytes"]
    assert plan["recommended"] == {"data": 2, "model": 2}
    table = _info("--device-memory", "8MiB", "--batch-size", "64")
    assert table.returncode == 0 and "recommended: mesh data=2, model=2" in table.stdout, table.stdout[-3000:]


def test_tfscale_info_device_memory_too_small_for_every_mesh_gives_the_memory_that_would_fit():
    run = _info("--device-memory", "1MiB", "--batch-size", "64")
    assert run.returncode != 0
    assert "Traceback" not in run.stdout, run.stdout[-3000:]
    assert "does not fit 1.00 MiB per device on any mesh of 4 device(s)" in run.stdout, run.stdout[-3000:]
    assert "give devices with at least 3.45 MiB each" in run.stdout
    bad = _info("--device-memory", "lots")
    assert bad.returncode != 0 and "'lots' is not a memory size" in bad.stdout and "Traceback" not in bad.stdout
