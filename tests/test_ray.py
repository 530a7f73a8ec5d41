"""`tfscale.ray.fit` on a real Ray cluster of two nodes, each in its own network namespace (tests/cluster/netns.py).

The head runs in host 0 (`ray start --head`), the second node in host 1 (`ray start --address=...`), each with
1 CPU, no dashboard, its own --temp-dir and token authentication (a token made for the test); the drivers run
in host 0 too. Each worker is one node's CPU, so 2 workers run one per node.

- A restart: rank 1 SIGKILLs itself mid-epoch, after a step checkpoint (`checkpoint_every_steps`); Ray's
  `FailureConfig(max_failures=1)` restarts the worker group, `tfscale.fit` resumes at the exact next global batch
  and the final weights equal an uninterrupted one-process run within 1e-5. The same job checks what reaches the
  workers (`env=`, no TF_USE_LEGACY_KERAS) and that neither the driver nor Ray's train controller loads TensorFlow;
  its driver then asks for more workers than the cluster holds with `wait_for_resources=True`: Ray waits.
- Elastic: `num_workers=(1, 2)`; the node of one worker is removed mid-epoch; Ray restarts the group on the one
  node left, which resumes at the exact global batch to the same weights. Node 1 is started again after.
- Ray Data shards read as already-sharded input, and user mistakes on the live cluster (workers/ray_fit.py).
- examples/ray/train.py, without `--address`: Ray starts a local cluster for the run and stops it after.
- JAX (`backend="jax"`, last): the restart run on the JAX engine without TensorFlow (workers/ray_jax.py), one
  worker per node, to an uninterrupted one-process JAX run's weights.
The cluster is removed with the namespaces (every process in them killed), not with `ray stop`, which kills
every Ray process of the machine.
"""

import ast
import contextlib
import importlib.util
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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
RESUME = str(REPO / "tests" / "workers" / "ray_resume.py")
EXAMPLE = str(REPO / "examples" / "ray" / "train.py")
RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6379
RAY_TIMEOUT = 240  # seconds for one Ray job on a loaded 2-core machine (a bound, not an expectation)
RTOL = 1e-5  # final weights against the uninterrupted run: relative to each tensor's largest value


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
    assert 'pip install -e ".[ray]"' in done.stdout


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
    "elastic_reversed": (lambda fit: fit(lambda: None, num_workers=(3, 2)), "num_workers=(3, 2) is not a range"),
    "elastic_from_zero": (lambda fit: fit(lambda: None, num_workers=(0, 2)), "num_workers=(0, 2) is not a range"),
    "elastic_three": (lambda fit: fit(lambda: None, num_workers=(1, 2, 3)), "num_workers=(1, 2, 3) is not a range"),
    "elastic_fraction": (lambda fit: fit(lambda: None, num_workers=(1, 2.5)), "num_workers=(1, 2.5) is not a range"),
    "workers_text": (lambda fit: fit(lambda: None, num_workers="2-4"), "num_workers='2-4' must be a whole number"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_mistakes_in_the_arguments_are_config_errors_before_ray_starts(mistake):
    import tfscale as ts

    call, message = MISTAKES[mistake]

    with pytest.raises(ts.ConfigError) as caught:
        call(ts.ray.fit)
    assert message in str(caught.value) and caught.value.fix


def test_num_workers_takes_a_range_for_ray_elastic_scaling():
    from tfscale.ray import RayOptions

    elastic = RayOptions(num_workers=[1, 3])
    assert (elastic.num_workers, elastic.elastic, elastic.min_workers, elastic.max_workers) == ((1, 3), True, 1, 3)
    fixed = RayOptions(num_workers=(2, 2))  # a range of one: a fixed group, as Ray's int
    assert (fixed.num_workers, fixed.elastic, fixed.min_workers, fixed.max_workers) == (2, False, 2, 2)


def test_each_ray_worker_gets_its_place_in_the_tfscale_worker_contract():
    from tfscale.ray.backend import places

    envs = places(["10.0.0.2:5001", "10.0.0.1:5002", "10.0.0.2:5003", "[fd00::1]:5004"], restart=2)
    assert [(e.rank, e.local_rank, e.local_world_size, e.node_rank) for e in envs] == [
        (0, 0, 2, 0), (1, 0, 1, 1), (2, 1, 2, 0), (3, 0, 1, 2)]
    assert envs[1].to_environ() == {"TFSCALE_RANK": "1", "TFSCALE_WORLD_SIZE": "4", "TFSCALE_LOCAL_RANK": "0",
                                    "TFSCALE_LOCAL_WORLD_SIZE": "1", "TFSCALE_NODE_RANK": "1", "TFSCALE_RESTART": "2",
                                    "TFSCALE_ADDRESS": "10.0.0.1:5002"}


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


def _start_node(h0, host, token: str, root: str, *, head: bool = False) -> None:
    """`ray start` in `host`: the head (in h0), or a node joining it; 1 CPU, its own temp dir under `root`."""
    where = ["--head", "--port", str(PORT), "--include-dashboard=false"] if head else ["--address", f"{h0.addr}:{PORT}"]
    done = host.run([RAY, "start", *where, "--node-ip-address", host.addr, "--temp-dir", f"{root}/n{host.index}",
                     "--num-cpus", "1", "--disable-usage-stats"], env=_ray_env(token), timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def cluster():
    """A 2-node Ray cluster (hosts 0 and 1; host 2 for a node that joins later), stopped and removed at the end
    whatever happens."""
    reason = netns.skip_reason()
    if reason:
        skip_or_fail(reason)  # a failure in CI
    assert importlib.util.find_spec("ray") is not None, 'Ray is missing: pip install -e ".[test]" (it holds ray)'
    root = tempfile.mkdtemp(prefix="tfsray-", dir="/tmp")  # short: Ray's socket paths live under it
    token = secrets.token_hex(32)
    try:
        with netns.hosts(3) as (h0, h1, h2):
            _start_node(h0, h0, token, root, head=True)
            _start_node(h0, h1, token, root)
            yield h0, h1, token, root, h2
        # Leaving `hosts` kills every process in the namespaces: the whole cluster. Not `ray stop`: it kills
        # every Ray process of the machine by name (psutil), other clusters included, whatever namespace.
    finally:
        _kill_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)


def _driver(h0, token: str, *args: str, script: str = WORKER, backend: str = "tensorflow",
            **env: str) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` as a Ray driver in host 0 (it must reach the head); the test fails on a timeout."""
    try:
        done = h0.run([sys.executable, script, *args], timeout=RAY_TIMEOUT,
                      env=_ray_env(token, TFSCALE_TEST_RAY_ADDRESS=f"{h0.addr}:{PORT}",
                                   TFSCALE_TEST_RAY_BACKEND=backend, TFSCALE_TEST_RAY_HEAD=h0.addr, **env),
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"the Ray driver did not finish within {RAY_TIMEOUT} s") from e
    return done


def _weights(path: Path) -> tuple[list[np.ndarray], dict]:
    with np.load(path) as data:
        ws = [data[f"w{i}"] for i in range(sum(k[0] == "w" and k[1:].isdigit() for k in data.files))]
        return ws, {k: data[k].item() for k in data.files if not (k[0] == "w" and k[1:].isdigit())}


def _printed(output: str, tag: str) -> dict:
    assert f"{tag} " in output, output[-6000:]
    return json.loads(output.split(f"{tag} ", 1)[1].splitlines()[0])


def _largest_difference(reference: list[np.ndarray], weights: list[np.ndarray]) -> float:
    """max over tensors of max|w - w_ref| / max|w_ref|; asserts each is within RTOL."""
    assert len(reference) == len(weights) == 4, (len(reference), len(weights))  # two Dense layers: kernel, bias
    worst = 0.0
    for ref, got in zip(reference, weights, strict=True):
        assert ref.shape == got.shape and not np.array_equal(ref, 0 * ref)
        difference = float(np.abs(got - ref).max() / np.abs(ref).max())
        assert difference <= RTOL, f"weights differ by {difference:.2e} of the tensor's largest value (> {RTOL})"
        worst = max(worst, difference)
    return worst


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run's weights (one process, no Ray), computed while the first Ray job runs."""
    out = tmp_path_factory.mktemp("single")
    proc = subprocess.Popen([sys.executable, RESUME, "single", str(out)], env=base_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    found = []

    def weights() -> list[np.ndarray]:
        if not found:
            text, _ = proc.communicate(timeout=RAY_TIMEOUT)
            assert proc.returncode == 0, text[-3000:]
            found.append(_weights(out / "rank-0.npz")[0])
        return found[0]

    try:
        yield weights
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def restarted_run(cluster, reference, tmp_path_factory):
    """One driver: 2 workers with step checkpoints, rank 1 SIGKILLed once mid-epoch, `max_failures=1` (the two
    tests below read its output)."""
    h0, _, token, _, _ = cluster
    work = tmp_path_factory.mktemp("restart")
    out = work / "out"
    out.mkdir()
    started = time.monotonic()
    done = _driver(h0, token, "ray", str(out), str(work / "ckpt"), str(work / "ray_results"), "kill", "2",
                   script=RESUME)
    print(f"Ray job with one restart: {time.monotonic() - started:.0f} s")
    return done, out


def test_a_killed_worker_s_group_is_restarted_and_resumes_at_the_exact_global_batch(cluster, reference,
                                                                                     restarted_run):
    h0, h1, _, _, _ = cluster
    done, out = restarted_run
    assert "RESULT " in done.stdout, done.stdout[-6000:]
    fault = json.loads((out / "fault.json").read_text())  # rank 1 did kill itself
    result = _printed(done.stdout, "RESULT")  # Ray's Result.metrics: rank 0's
    assert (result["resumed_from_epoch"], result["resumed_from_step"]) == (1, 4), result
    assert result["strategy"] == "multi_worker" and result["num_workers"] == 2, result
    assert fault["checkpoint_step"] == 1 * 8 + 4, fault  # the checkpoint it resumed from: global step 12
    nodes, worst = set(), 0.0
    for rank in (0, 1):
        ws, info = _weights(out / f"rank-{rank}.npz")
        assert info["num_workers"] == 2 and (info["resumed_from_epoch"], info["resumed_from_step"]) == (1, 4), info
        assert info["epochs_run"] == 2, info  # the rest of epoch 2, then epoch 3
        # tfscale's launcher-to-worker contract, as `tfscale launch` writes it: the second start of the group
        assert (info["tfscale_rank"], info["world_size"], info["restart"]) == (str(rank), "2", "1"), info
        nodes.add(info["node"])
        worst = max(worst, _largest_difference(reference(), ws))
    assert nodes == {h0.addr, h1.addr}, f"the workers ran on {nodes}, not one per node"
    first = [json.loads((out / f"start-0-{rank}.json").read_text()) for rank in (0, 1)]
    assert {(s["num_workers"], s["contract"]["restart"]) for s in first} == {(2, "0")}, first
    print(f"restart: fault after global step {fault['global_step']}, resumed at step {fault['checkpoint_step']} "
          f"(epoch 2, step 4): {fault['global_step'] - fault['checkpoint_step']} steps lost; "
          f"largest weight difference {worst:.2e} of a tensor's largest value")


def test_env_reaches_the_workers_and_tensorflow_loads_only_there_without_legacy_keras(restarted_run):
    done, out = restarted_run
    driver = _printed(done.stdout, "DRIVER")
    assert driver["tensorflow"] is False, "the driver imported TensorFlow"
    _, chief = _weights(out / "rank-0.npz")
    # Ray's controller unpickles what the workers raise: rank 0's TensorFlow error (its peer gone) reached it as
    # text (tfscale.ray.WorkerFailure), not as TensorFlow's exception, which would load TensorFlow there.
    assert chief["controller_tf"] == "False", chief
    for rank in (0, 1):
        _, info = _weights(out / f"rank-{rank}.npz")
        assert info["env_mark"] == driver["env_mark"], info  # ts.ray.fit(env=...) set it in the worker
        assert info["legacy_keras"] == "" and info["tf_keras_version"].startswith("3."), info  # tf.keras: Keras 3


def _read_until(lines: queue.Queue, prefix: str | None) -> str:
    """The lines up to the first that starts with `prefix`, or to the end (None in the queue)."""
    text = ""
    while (line := lines.get(timeout=RAY_TIMEOUT)) is not None:
        text += line
        if prefix is not None and line.startswith(prefix):
            break
    return text


def test_wait_for_resources_lets_ray_wait_for_a_node_to_join_then_trains(cluster, tmp_path):
    """3 workers on a cluster that holds 2, with wait_for_resources=True: no ClusterError; Ray's placement group
    waits; a third node joins (host 2) and the run trains on the 3. The node leaves again after."""
    h0, h1, token, root, h2 = cluster
    driver = h0.popen([sys.executable, RESUME, "wait", str(tmp_path / "ray_results")],
                      env=_ray_env(token, TFSCALE_TEST_RAY_ADDRESS=f"{h0.addr}:{PORT}"), stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()  # the driver's output, read in a thread (None: its end)
    threading.Thread(target=lambda: [*map(lines.put, driver.stdout), lines.put(None)], daemon=True).start()
    try:
        output = _read_until(lines, "WAITING ")  # Ray waits, or the driver ended
        waiting = _printed(output, "WAITING")
        _start_node(h0, h2, token, root)
        driver.wait(timeout=RAY_TIMEOUT)
        output += _read_until(lines, None)
    finally:
        netns.kill_group(driver)
        _remove_node(h2)
    waited = _printed(output, "WAIT")
    assert waiting["want"] == 3 and waiting["pending"] == "PENDING", waiting  # Ray's 3-worker group waited
    assert waited["error"] is None and driver.returncode == 0, waited  # no ClusterError (see the mistakes test)
    assert waited["metrics"]["node"] in (h0.addr, h1.addr, h2.addr), waited  # the 3 workers' run ended


def _remove_node(host) -> int:
    """Takes `host`'s Ray node away, as a VM that goes: its raylet stopped with SIGTERM (it tells the GCS, which
    marks the node dead at once, and stops its workers), then every process left in the namespace SIGKILLed;
    returns how many processes the node had."""
    pids = host.pids()
    raylets = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).name() == "raylet":
                raylets.append(psutil.Process(pid))
                raylets[-1].terminate()
    psutil.wait_procs(raylets, timeout=30)
    for pid in host.pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def test_an_elastic_group_restarts_on_the_nodes_left_and_resumes_at_the_exact_global_batch(cluster, reference,
                                                                                           tmp_path):
    """`num_workers=(1, 2)`: 2 workers, one per node; the node of the one not on the head vanishes mid-epoch; Ray
    restarts the group with the 1 worker the cluster now holds, at the same global batch (16).

    Elastic scaling counts the workers it may start from Ray's AutoscalingCoordinator, where every Ray Train run
    (and Ray Data) files a resource request: one left by a run that did not end cleanly (its driver killed) holds
    the nodes for up to 180 s, and this group would not start. Hence every run before this one ends cleanly, and
    this test runs before the Ray Data job."""
    h0, h1, token, root, _ = cluster
    out = tmp_path / "out"
    out.mkdir()
    fault = out / "fault.json"
    # Ray first retries the group's old size on the nodes it last counted (its AutoscalingCoordinator refreshes
    # them every 20 s): that try ends after RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (default 60 s).
    argv = [sys.executable, RESUME, "ray", str(out), str(tmp_path / "ckpt"), str(tmp_path / "ray_results"), "node",
            "1-2"]
    log = tmp_path / "driver.log"
    with open(log, "w") as sink:
        env = _ray_env(token, TFSCALE_TEST_RAY_ADDRESS=f"{h0.addr}:{PORT}", TFSCALE_TEST_RAY_HEAD=h0.addr,
                       RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="20")
        driver = h0.popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        while not fault.exists() and driver.poll() is None and time.monotonic() - started < RAY_TIMEOUT:
            time.sleep(0.2)
        assert fault.exists(), "the worker on node 1 never reached the fault:\n" + log.read_text()[-6000:]
        at_fault = time.monotonic() - started
        removed = _remove_node(h1)
        driver.wait(timeout=RAY_TIMEOUT)
        ended = time.monotonic() - started
    finally:
        netns.kill_group(driver)
        _start_node(h0, h1, token, root)  # node 1 back for the tests after this one
    took = time.monotonic() - started
    output = log.read_text()
    assert driver.returncode == 0, output[-6000:]
    result = _printed(output, "RESULT")
    assert result["num_workers"] == 1 and (result["resumed_from_epoch"], result["resumed_from_step"]) == (1, 4), result
    first = [json.loads((out / f"start-0-{rank}.json").read_text()) for rank in (0, 1)]
    assert {s["node"] for s in first} == {h0.addr, h1.addr} and {s["num_workers"] for s in first} == {2}, first
    assert json.loads(fault.read_text())["node"] == h1.addr
    ws, info = _weights(out / "rank-0.npz")
    assert (info["num_workers"], info["world_size"], info["node"]) == (1, "1", h0.addr), info
    assert int(info["restart"]) >= 1 and info["strategy"] == "default", info  # a new, smaller group
    worst = _largest_difference(reference(), ws)
    print(f"elastic: 2 workers -> 1 after node 1 ({removed} processes) was removed after global step 14; resumed at "
          f"step 12 (2 steps lost); largest weight difference {worst:.2e}; fault at {at_fault:.0f} s, driver done at "
          f"{ended:.0f} s, node 1 back at {took:.0f} s")


def test_a_node_drained_for_preemption_saves_at_an_agreed_step_and_resumes_there_on_the_nodes_left(
        cluster, reference, tmp_path):
    """Ray's preemption notice: node 1 is drained for preemption (`ray drain-node`, what Ray's autoscaler does when
    a spot node is reclaimed) mid-epoch; Ray Train tells every worker, tfscale saves at one agreed step (a
    "preemption" checkpoint after the fault's step, beyond the last step checkpoint) and ends the group with 143;
    Ray restarts it with the 1 worker the node left holds, which resumes at that exact step: no step lost, the
    weights of the uninterrupted run."""
    from tfscale.scale.checkpoint_store import CheckpointStore

    h0, h1, token, root, _ = cluster
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    out.mkdir()
    fault = out / "fault.json"
    argv = [sys.executable, RESUME, "ray", str(out), str(ckpt), str(tmp_path / "ray_results"), "drain", "1-2"]
    # node 1 was removed and started again by the elastic test before this one: an elastic group counts the nodes
    # Ray's AutoscalingCoordinator last listed (it refreshes them every 20 s), so a group started at once got 1
    # worker (seen in CI: no worker on node 1, no fault)
    time.sleep(25)
    log = tmp_path / "driver.log"
    with open(log, "w") as sink:
        env = _ray_env(token, TFSCALE_TEST_RAY_ADDRESS=f"{h0.addr}:{PORT}", TFSCALE_TEST_RAY_HEAD=h0.addr,
                       RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="20")
        driver = h0.popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
    started = time.monotonic()
    try:
        while not fault.exists() and driver.poll() is None and time.monotonic() - started < RAY_TIMEOUT:
            time.sleep(0.2)
        assert fault.exists(), "the worker on node 1 never reached the fault:\n" + log.read_text()[-6000:]
        node_id = json.loads(fault.read_text())["node_id"]
        drain = h0.run([RAY, "drain-node", "--address", f"{h0.addr}:{PORT}", "--node-id", node_id, "--reason",
                        "DRAIN_NODE_REASON_PREEMPTION", "--reason-message", "spot reclaimed (test)",
                        "--deadline-remaining-seconds", "120"], env=_ray_env(token), timeout=60)
        assert drain.returncode == 0, drain.stdout + drain.stderr
        driver.wait(timeout=RAY_TIMEOUT)
    finally:
        netns.kill_group(driver)
        _remove_node(h1)
        _start_node(h0, h1, token, root)  # node 1 back (undrained) for the tests after this one
    output = log.read_text()
    assert driver.returncode == 0, output[-6000:]
    saved = [i for i in CheckpointStore(str(ckpt)).list() if i.reason == "preemption"]
    assert len(saved) == 1 and saved[0].global_step > json.loads(fault.read_text())["global_step"], saved
    assert saved[0].num_workers == 2, saved[0]
    result = _printed(output, "RESULT")
    assert result["num_workers"] == 1, result
    assert (result["resumed_from_epoch"], result["resumed_from_step"]) == (saved[0].epoch, saved[0].step), result
    ws, info = _weights(out / "rank-0.npz")
    assert info["node"] == h0.addr and int(info["restart"]) >= 1, info
    worst = _largest_difference(reference(), ws)
    print(f"drained for preemption after global step {json.loads(fault.read_text())['global_step']}: saved "
          f"{saved[0].name} (global step {saved[0].global_step}) on 2 workers, resumed there on 1: 0 steps lost; "
          f"largest weight difference {worst:.2e}")


@pytest.fixture(scope="module")
def live_driver(cluster, tmp_path_factory):
    """One driver on the live cluster: Ray Data shards, then the mistakes (the two tests below read its output)."""
    h0, _, token, _, _ = cluster
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
    assert len(w0) == 2, len(w0)  # Dense(2): kernel and bias
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


def test_the_ray_example_runs_on_a_local_cluster_that_ts_ray_fit_starts_and_stops(tmp_path):
    """examples/ray/train.py without --address and with no Ray cluster known (RAY_ADDRESS unset, Ray's temp dir
    empty): `ts.ray.fit` starts a local cluster for the run and stops it after; the namespace ends empty. One
    worker, one epoch: the cluster tests above train on several workers."""
    reason = netns.skip_reason()
    if reason:
        skip_or_fail(reason)
    ray_tmp = tempfile.mkdtemp(prefix="tfsrayx-", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in _ray_env(secrets.token_hex(32), RAY_TMPDIR=ray_tmp).items() if k != "RAY_ADDRESS"}
    try:
        with netns.hosts(1) as (host,):
            done = host.run([sys.executable, EXAMPLE, "--workers", "1", "--epochs", "1", "--checkpoint-dir",
                             str(tmp_path / "ckpt"), "--storage", str(tmp_path / "ray_results")], env=env,
                            timeout=RAY_TIMEOUT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            left, deadline = host.pids(), time.monotonic() + 60
            while left and time.monotonic() < deadline:  # Ray's processes exit just after the driver
                time.sleep(0.2)
                left = host.pids()
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-6000:]
    assert "Started a local Ray instance" in done.stdout, done.stdout[-6000:]
    result = ast.literal_eval(done.stdout.split("result: ", 1)[1].splitlines()[0])
    assert result["workers"] == 1 and result["strategy"] == "default", result
    assert left == [], f"processes of the local Ray cluster left running: {left}"


RAY_JAX = str(REPO / "tests" / "workers" / "ray_jax.py")


def test_a_killed_jax_worker_s_group_is_restarted_and_resumes_at_the_exact_global_batch(cluster, tmp_path):
    """`backend="jax"`: the restart test's run (ray_resume.py) on the JAX engine, one worker per node: rank 1
    SIGKILLs itself after global step 14, `max_failures=1` restarts the group, which resumes at the step-12
    checkpoint, and both workers end with the uninterrupted one-process run's weights on JAX (within 1e-5; Keras'
    initializers draw other numbers on TensorFlow), computed while the Ray job runs."""
    h0, h1, token, _, _ = cluster
    out, single = tmp_path / "out", tmp_path / "single"
    out.mkdir()
    single.mkdir()
    one = subprocess.Popen([sys.executable, RESUME, "single", str(single)], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True,
                           env=base_env(hide=("sklearn", "matplotlib", "IPython", "tensorflow"), KERAS_BACKEND="jax"))
    try:
        started = time.monotonic()
        done = _driver(h0, token, str(out), str(tmp_path / "ckpt"), str(tmp_path / "ray_results"), script=RAY_JAX,
                       backend="jax")
        took = time.monotonic() - started
        text, _ = one.communicate(timeout=RAY_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(one.pid, signal.SIGKILL)
        one.wait()
    assert one.returncode == 0, text[-3000:]
    reference = _weights(single / "rank-0.npz")[0]
    assert done.returncode == 0 and "RESULT " in done.stdout, done.stdout[-6000:]
    result = _printed(done.stdout, "RESULT")
    assert (result["resumed_from_epoch"], result["resumed_from_step"]) == (1, 4), result
    assert result["strategy"] == "data_parallel" and result["num_workers"] == 2, result  # the JAX engine's
    fault = json.loads((out / "fault.json").read_text())
    assert fault["checkpoint_step"] == 12 and fault["global_step"] == 14, fault
    nodes, worst = set(), 0.0
    for rank in (0, 1):
        ws, info = _weights(out / f"rank-{rank}.npz")
        assert info["tf_keras_version"] == "", info  # the workers ran without TensorFlow (ray_jax.py hides it)
        assert (info["resumed_from_epoch"], info["resumed_from_step"], info["epochs_run"]) == (1, 4, 2), info
        assert (info["tfscale_rank"], info["world_size"], info["restart"]) == (str(rank), "2", "1"), info
        nodes.add(info["node"])
        worst = max(worst, _largest_difference(reference, ws))
    assert nodes == {h0.addr, h1.addr}, f"the workers ran on {nodes}, not one per node"
    print(f"JAX on Ray: rank 1 killed after global step 14, resumed at step 12; largest weight difference "
          f"{worst:.2e}; driver done in {took:.0f} s")
