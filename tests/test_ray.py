"""`tfscale.ray.fit` on a real Ray cluster of two nodes, each in its own network namespace (tests/cluster/netns.py).

The head runs in host 0 (`ray start --head`), the second node in host 1 (`ray start --address=...`), each with
1 CPU, no dashboard, its own --temp-dir and token authentication (a token made for the test); the drivers run
in host 0 too. One Ray job checks most of it: 2 workers (one per node, as each node has one CPU), rank 1
SIGKILLs itself in its second epoch, Ray's `FailureConfig(max_failures=1)` restarts the worker group, which
resumes from tfscale's checkpoint, and the final weights equal a one-process run within 1e-5. Then Ray Data
shards read as already-sharded input, and user mistakes on the live cluster. The cluster is removed with the
namespaces (every process in them killed), not with `ray stop`, which kills every Ray process of the machine.
"""

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from procs import REPO, base_env, run_one
from require import skip_or_fail
from tests.cluster import netns

pytestmark = pytest.mark.slow
WORKER = str(REPO / "tests" / "workers" / "ray_fit.py")
RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6379
RAY_TIMEOUT = 240  # seconds for one Ray job on a loaded 2-core machine (a bound, not an expectation)


# ---------------------------------------------------------------------------------------------- without Ray


def test_import_tfscale_loads_no_ray_and_a_missing_ray_is_a_config_error_with_the_pip_command():
    code = ("import sys, tfscale as ts\n"
            "assert 'ray' not in sys.modules\n"
            "try:\n"
            "    ts.ray.fit(lambda: None, num_workers=2)\n"
            "except ts.ConfigError as e:\n"
            "    print('ERR', e)\n"
            "assert 'ray' not in sys.modules\n")
    done = run_one(["-c", code], hide=("ray", "jax", "sklearn", "pandas", "matplotlib"), timeout=120)
    assert "ERR tfscale.ray needs Ray Train, which is not installed" in done.stdout, done.stdout
    assert 'pip install "tfscale[ray]"' in done.stdout


MISTAKES = {
    "not_callable": (lambda fit: fit("train.py"), "train_fn must be a function, got str"),
    "no_workers": (lambda fit: fit(lambda: None, num_workers=0), "num_workers=0 must be a whole number of at least 1"),
    "fractional_workers": (lambda fit: fit(lambda: None, num_workers=2.5), "num_workers=2.5"),
    "config_unused": (lambda fit: fit(lambda: None, train_loop_config={"lr": 1}), "train_fn takes no argument"),
    "two_arguments": (lambda fit: fit(lambda a, b: None), "train_fn takes 2 arguments"),
    "config_not_dict": (lambda fit: fit(lambda c: None, train_loop_config=[1]), "train_loop_config must be a dict"),
    "max_failures": (lambda fit: fit(lambda: None, max_failures=-2), "max_failures=-2"),
    "backend": (lambda fit: fit(lambda: None, backend="torch"), "backend='torch'"),
    "no_resources": (lambda fit: fit(lambda: None, cpus_per_worker=0), "asks Ray for no resource"),
    "cpu_in_resources": (lambda fit: fit(lambda: None, resources_per_worker={"CPU": 2}),
                         "resources_per_worker holds ['CPU']"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_mistakes_in_the_arguments_are_config_errors_before_ray_starts(mistake):
    import tfscale as ts

    call, message = MISTAKES[mistake]

    with pytest.raises(ts.ConfigError) as caught:
        call(ts.ray.fit)
    assert message in str(caught.value) and caught.value.fix


def test_each_ray_worker_gets_its_place_in_the_tfscale_worker_contract():
    from tfscale.ray.backend import places

    envs = places(["10.0.0.2:5001", "10.0.0.1:5002", "10.0.0.2:5003", "[fd00::1]:5004"], restart=2)
    assert [(e.rank, e.local_rank, e.local_world_size, e.node_rank) for e in envs] == [
        (0, 0, 2, 0), (1, 0, 1, 1), (2, 1, 2, 0), (3, 0, 1, 2)]
    assert envs[1].to_environ() == {"TFSCALE_RANK": "1", "TFSCALE_WORLD_SIZE": "4", "TFSCALE_LOCAL_RANK": "0",
                                    "TFSCALE_LOCAL_WORLD_SIZE": "1", "TFSCALE_NODE_RANK": "1", "TFSCALE_RESTART": "2"}


# ---------------------------------------------------------------------------------------------- a Ray cluster


def _ray_env(token: str, **extra: str) -> dict[str, str]:
    # Ray's processes need pandas (Ray Train's Result); the TensorFlow workers (they inherit the nodes'
    # environment) never import JAX here.
    return base_env(hide=("sklearn", "matplotlib", "jax"), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
                    RAY_USAGE_STATS_ENABLED="0", RAY_DEDUP_LOGS="0", **extra)


def _kill_leftovers(root: str) -> list[int]:
    """Processes of this cluster outside the namespaces (there should be none): found by its temp dir."""
    killed = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.pid != os.getpid() and any(root in arg for arg in proc.info["cmdline"] or ()):
                proc.kill()
                killed.append(proc.pid)
    return killed


@pytest.fixture(scope="module")
def cluster():
    """A 2-node Ray cluster (hosts 0 and 1), stopped and removed at the end whatever happens."""
    reason = netns.skip_reason()
    if reason:
        skip_or_fail(reason)  # a failure in CI
    assert importlib.util.find_spec("ray") is not None, 'Ray is missing: pip install -e ".[test]" (it holds ray)'
    root = tempfile.mkdtemp(prefix="tfsray-", dir="/tmp")  # short: Ray's socket paths live under it
    token = secrets.token_hex(32)
    try:
        with netns.hosts(2) as (h0, h1):
            common = ["--num-cpus", "1", "--disable-usage-stats"]
            head = h0.run([RAY, "start", "--head", "--node-ip-address", h0.addr, "--port", str(PORT),
                           "--include-dashboard=false", "--temp-dir", f"{root}/n0", *common], env=_ray_env(token), timeout=120)
            assert head.returncode == 0, head.stdout[-3000:] + head.stderr[-3000:]
            node = h1.run([RAY, "start", "--address", f"{h0.addr}:{PORT}", "--node-ip-address", h1.addr,
                           "--temp-dir", f"{root}/n1", *common], env=_ray_env(token), timeout=120)
            assert node.returncode == 0, node.stdout[-3000:] + node.stderr[-3000:]
            yield h0, h1, token, root
        # Leaving `hosts` kills every process in the two namespaces: the whole cluster. Not `ray stop`: it kills
        # every Ray process of the machine by name (psutil), other clusters included, whatever namespace.
    finally:
        _kill_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)


def _driver(h0, token: str, *args: str, backend: str = "tensorflow") -> subprocess.CompletedProcess:
    """`python ray_fit.py ARGS` as a Ray driver in host 0 (it must reach the head); the test fails on a timeout."""
    try:
        done = h0.run([sys.executable, WORKER, *args], timeout=RAY_TIMEOUT,
                      env=_ray_env(token, TFSCALE_TEST_RAY_ADDRESS=f"{h0.addr}:{PORT}", TFSCALE_TEST_RAY_BACKEND=backend),
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the Ray driver did not finish within {RAY_TIMEOUT} s") from e
    return done


def _weights(path: Path) -> tuple[list[np.ndarray], dict]:
    with np.load(path) as data:
        ws = [data[f"w{i}"] for i in range(sum(k[0] == "w" and k[1:].isdigit() for k in data.files))]
        return ws, {k: data[k].item() for k in data.files if not (k[0] == "w" and k[1:].isdigit())}


def test_two_nodes_train_together_and_ray_restarts_resume_from_tfscale_checkpoints(cluster, tmp_path):
    h0, h1, token, root = cluster
    (tmp_path / "single").mkdir()
    reference = subprocess.Popen([sys.executable, WORKER, "single", str(tmp_path / "single")], env=base_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    out, marker = tmp_path / "out", tmp_path / "killed-once"
    out.mkdir()
    try:
        started = time.monotonic()
        done = _driver(h0, token, "ray", str(out), str(tmp_path / "ckpt"), str(tmp_path / "ray_results"), str(marker))
        took = time.monotonic() - started
        ref_out, _ = reference.communicate(timeout=RAY_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(reference.pid, signal.SIGKILL)
        reference.wait()
    assert reference.returncode == 0, ref_out[-3000:]
    assert done.returncode == 0, done.stdout[-6000:]
    assert marker.exists(), "rank 1 never killed itself: the failure was not exercised"
    result = json.loads(done.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert result["resumed_from_epoch"] == 1 and result["strategy"] == "multi_worker", result  # Ray's Result.metrics

    single, _ = _weights(tmp_path / "single" / "rank-0.npz")
    nodes = set()
    for rank in (0, 1):
        ws, info = _weights(out / f"rank-{rank}.npz")
        assert info["num_workers"] == 2 and info["resumed_from_epoch"] == 1 and info["epochs_run"] == 2, info
        # tfscale's launcher-to-worker contract, as `tfscale launch` writes it: the second start of the group
        assert (info["tfscale_rank"], info["restart"]) == (str(rank), "1"), info
        nodes.add(info["node"])
        for a, b in zip(single, ws, strict=True):
            np.testing.assert_allclose(b, a, atol=1e-5, rtol=0)
    assert nodes == {h0.addr, h1.addr}, f"the workers ran on {nodes}, not one per node"
    print(f"Ray job with one restart: {took:.0f} s; max |w - w_single| = "
          f"{max(float(np.abs(a - b).max()) for a, b in zip(single, _weights(out / 'rank-1.npz')[0])):.2e}")


@pytest.fixture(scope="module")
def live_driver(cluster, tmp_path_factory):
    """One driver on the live cluster: Ray Data shards, then the mistakes (the two tests below read its output)."""
    h0, _, token, _ = cluster
    work = tmp_path_factory.mktemp("live")
    out = work / "out"
    out.mkdir()
    done = _driver(h0, token, "data+mistakes", str(out), str(work / "ray_results"))
    return done, out


def test_ray_data_shards_train_as_already_sharded_input(live_driver):
    done, out = live_driver
    assert "DATA done" in done.stdout, done.stdout[-6000:]
    (w0, info0), (w1, info1) = (_weights_and_ids(out / f"rank-{rank}.npz") for rank in (0, 1))
    ids0, ids1 = set(info0["ids"]), set(info1["ids"])
    assert ids0 and ids1 and not ids0 & ids1, "each worker must read its own rows"
    assert ids0 | ids1 == set(range(128)), f"rows lost: {sorted(set(range(128)) - ids0 - ids1)}"
    print("Ray Data shards:", len(ids0), len(ids1), "rows; steps", info0["steps"], info1["steps"], "optimizer iterations",
          info0["iterations"], info1["iterations"])
    assert info0["steps"] == info1["steps"] == max(len(ids0), len(ids1)) // 8, (info0, len(ids0))
    for a, b in zip(w0, w1, strict=True):  # one model: the workers' updates were all-reduced
        np.testing.assert_array_equal(a, b)
    assert info0["iterations"] == info0["steps"], info0  # one optimizer update per batch


def _weights_and_ids(path: Path) -> tuple[list[np.ndarray], dict]:
    with np.load(path) as data:
        ws = [data[f"w{i}"] for i in range(sum(k[0] == "w" and k[1:].isdigit() for k in data.files))]
        return ws, {"ids": data["ids"].tolist(), "steps": data["steps"].item(), "iterations": data["iterations"].item()}


def test_mistakes_on_a_live_cluster_are_tfscale_errors_at_once(live_driver):
    done, _ = live_driver
    assert done.returncode == 0 and "MISTAKES " in done.stdout, done.stdout[-6000:]
    found = json.loads(done.stdout.split("MISTAKES ", 1)[1].splitlines()[0])
    kind, message = found["too_many_workers"]
    assert kind == "ClusterError" and "can hold 2 worker(s)" in message and "num_workers=5" in message, message
    kind, message = found["error_in_train_fn"]
    assert kind == "ConfigError" and "the model's options are wrong" in message, message
    kind, message = found["other_error_in_train_fn"]
    assert kind == "ClusterError" and "ValueError: x has 5 columns, the model takes 6" in message, message
    assert "Where: Ray worker rank(s) 0" in message and "no restart allowed" in message, message
