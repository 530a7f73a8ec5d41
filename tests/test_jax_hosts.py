"""`tfscale launch --backend jax --nnodes 2` on two real hosts (network namespaces, tests/cluster/netns.py): JAX
training across hosts equals one process, and a worker killed on host 1, host 1's link going down, a restart
across hosts and mistakes in the cluster's addresses end as they do on the TensorFlow engine
(tests/test_cluster_hosts.py).

Two kinds of hosts:

- hosts that share this machine's hostname, which resolves to a loopback address: JAX's CPU collectives (gloo)
  would announce 127.0.0.1 there ("Connection refused" in the first collective), so these runs pass only
  because tfscale gives gloo each worker's own address from the launcher's plan (`tfscale.compat.jax`, 4.);
- hosts with hostnames of their own (``hostnames=True``), as real machines: --hosts names them, and in the
  2 x 1 and restart jobs each launcher finds its node rank from its hostname (no --node-rank).

One JAX start-up per worker per job, 1 thread each; the failure times are printed against their bounds, not
asserted (tests never assert on time): the deadlines given to `finish` are generous, yet far below --timeout.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import procs
from require import skip_or_fail
from tests.cluster import netns
from tests.cluster.launches import errors, finish, max_diff, weights
from tfscale.cluster.launch.peers import PROBE_SECONDS

pytestmark = pytest.mark.slow

WORKERS = procs.REPO / "tests" / "workers"
TRAIN, RESUME, HOLD = (str(WORKERS / name) for name in ("jax_train.py", "train_resume.py", "jax_hold.py"))
PORT = 7300
ATOL = 1e-5
COLLECTIVE_TIMEOUT = 8  # seconds: JAX's heartbeat timeout, after which a silent peer is an error on the others
STOP_SECONDS = 1  # the launcher's stop of the other workers: SIGTERM, 1 s, SIGKILL
# a failure's bound: the heartbeat timeout, the launcher's probe of the other hosts (PROBE_SECONDS), the stop
BOUND = f"the collective timeout + the probe + the stop, {COLLECTIVE_TIMEOUT} + {PROBE_SECONDS:g} + {STOP_SECONDS} s"
LAYOUT = {".*conv2d/kernel": [None, None, None, "model"], ".*dense/kernel": [None, "model"]}


def launch(host: netns.Host, hosts: str, *args: str, node_rank: bool = True) -> subprocess.Popen:
    """`python -m tfscale launch --backend jax --nnodes N [--node-rank R] --hosts HOSTS ARGS` on `host`."""
    rank = ["--node-rank", str(host.index)] if node_rank else []
    return host.popen([sys.executable, "-m", "tfscale", "launch", "--backend", "jax", "--nnodes",
                       str(len(hosts.split(","))), *rank, "--hosts", hosts, *args],
                      env=procs.base_env(hide=procs.hiding("jax")), cwd=str(procs.REPO), stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT, text=True)


def addresses(hs, names: bool = False, port: int = PORT) -> str:
    return ",".join(f"{h.hostname if names else h.addr}:{port}" for h in hs)


@pytest.fixture(scope="module", autouse=True)
def _hosts_can_be_made():
    if reason := netns.skip_reason():
        skip_or_fail(reason)
    with procs.unhidden("jax"):
        yield


def _train_on_two_hosts(folder, name: str, options: dict, *args: str, names: bool = False) -> list[dict]:
    """jax_train.py launched on 2 hosts (sharing this machine's hostname, or with `names` of their own, which
    --hosts then gives and from which each launcher finds its node rank); each rank's results."""
    out = str(folder / f"{name}.npz")
    with netns.hosts(2, hostnames=names) as hs:
        runs = [launch(h, addresses(hs, names=names), *args, "--timeout", "280", "--", sys.executable, TRAIN, out,
                       json.dumps(options), node_rank=not names) for h in hs]
        outputs = [finish(p, 300) for p in runs]
    for p, output in zip(runs, outputs, strict=True):
        assert p.returncode == 0, output[-4000:]
    ranks = sorted(int(m) for m in re.findall(rf"{name}\.(\d+)\.npz", " ".join(os.listdir(folder))))
    return [weights(folder / f"{name}.{rank}.npz") for rank in ranks]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every equality arm, side by side: one process (jax_train.py on one device; train_resume.py), 2 named hosts x
    1 process and 2 hosts x 2 processes on data_parallel, and model_parallel with the model axis inside each
    host; name -> a list of each process's results."""
    folder = tmp_path_factory.mktemp("trained")

    def one(name, argv):
        procs.run_one(argv, env={"KERAS_BACKEND": "jax"}, timeout=300)
        return name, [weights(folder / f"{name}.npz")]

    model_parallel = {"strategy": "model_parallel", "mesh": [2, 2], "layout": LAYOUT}
    jobs = [lambda: one("train", [TRAIN, str(folder / "train.npz"), json.dumps({"strategy": "one_device"})]),
            lambda: one("resume", [RESUME, str(folder / "resume.npz"), str(folder / "ckpt"), "-"]),
            lambda: ("2x1", _train_on_two_hosts(folder, "2x1", {"strategy": "auto"}, "-n", "1", names=True)),
            lambda: ("2x2", _train_on_two_hosts(folder, "2x2", {"strategy": "auto"}, "-n", "2")),
            lambda: ("mp", _train_on_two_hosts(folder, "mp", model_parallel, "-n", "1"))]
    with ThreadPoolExecutor(len(jobs)) as pool:
        return dict(pool.map(lambda job: job(), jobs))


@pytest.mark.parametrize("arm, processes", [("2x1", 2), ("2x2", 4)])
def test_two_hosts_on_data_parallel_train_like_one_process(trained, arm, processes):
    """2 hosts x 1 process (hosts with names of their own), and 2 hosts x 2 processes (hosts sharing this
    machine's hostname): every process ends with the one-process weights."""
    results = trained[arm]
    assert len(results) == processes and {int(r["num_replicas"]) for r in results} == {processes}
    assert {int(r["steps"]) for r in results} == {20}
    diffs = [max_diff(r, trained["train"][0]) for r in results]
    assert max(diffs) < ATOL, diffs
    print(f"2 hosts ({arm}, data_parallel) vs one process: largest weight difference {max(diffs):.1e}")


def test_model_axis_inside_each_host_and_data_across_hosts_trains_like_one_process(trained):
    """model_parallel on a (data=2, model=2) mesh: 2 hosts x 1 process x 2 host devices; the kernels are split
    over the model axis, which lies inside each host, and each host trains half of every batch."""
    results = trained["mp"]
    assert len(results) == 2 and {int(r["num_replicas"]) for r in results} == {2}
    for result in results:
        shardings = json.loads(str(result["shardings"]))
        assert shardings["sequential/dense/kernel"] == "(None, 'model')", shardings
    diffs = [max_diff(r, trained["train"][0]) for r in results]
    assert max(diffs) < ATOL, diffs
    print(f"2 hosts x (1 process x 2 devices), model axis inside a host: largest weight difference {max(diffs):.1e}")


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def probe(host: netns.Host, address: str) -> str:
    """What the launcher's probe (`tfscale.cluster.launch.peers.probe`) finds at `address`, from `host`."""
    code = f"from tfscale.cluster.launch.peers import probe; print(probe({address!r}))"
    return host.run([sys.executable, "-c", code], env=procs.base_env(), cwd=str(procs.REPO), timeout=60).stdout.strip()


def _start_holding(tmp_path, hs):
    """2 named hosts x 1 JAX worker of jax_hold.py, once both train; returns the launchers."""
    runs = [launch(h, addresses(hs, names=True), "-n", "1", "--collective-timeout", str(COLLECTIVE_TIMEOUT),
                   "--timeout", "240", "--", sys.executable, HOLD, str(tmp_path)) for h in hs]
    markers = [tmp_path / f"training-{rank}.json" for rank in (0, 1)]
    deadline = time.monotonic() + 200
    while not all(m.exists() for m in markers):
        if any(p.poll() is not None for p in runs) or time.monotonic() > deadline:
            for p in runs:
                p.kill()
            raise AssertionError("the workers never trained:\n" + "\n".join(p.communicate()[0][-3000:] for p in runs))
        time.sleep(0.2)
    return runs


def _kill_worker_1(folder) -> dict:
    """2 named hosts holding; worker 1's process SIGKILLed: both launchers' outputs and exit times."""
    with netns.hosts(2, hostnames=True) as hs:
        runs = _start_holding(folder, hs)
        running = probe(hs[0], f"{hs[1].hostname}:{PORT}")  # a JAX worker accepts at its own port while it runs
        os.kill(json.loads((folder / "training-1.json").read_text())["pid"], signal.SIGKILL)
        killed = time.monotonic()
        outputs, took = [], []
        for p in runs:  # generous (--timeout is 240 s): the time is printed, not asserted
            outputs.append(finish(p, COLLECTIVE_TIMEOUT + 90))
            took.append(time.monotonic() - killed)
        survivor, gone = json.loads((folder / "training-0.json").read_text())["pid"], time.monotonic() + 30
        while _running(survivor) and time.monotonic() < gone:
            time.sleep(0.1)
        survived = _running(survivor)
    return {"host": hs[1].hostname, "runs": runs, "outputs": outputs, "took": took, "running": running,
            "survived": survived}


def _pull_link_1(folder) -> dict:
    """2 named hosts holding; host 1's link down: host 0's launcher's output and exit time."""
    with netns.hosts(2, hostnames=True) as hs:
        runs = _start_holding(folder, hs)
        hs[1].link_down()
        down = time.monotonic()
        out = finish(runs[0], COLLECTIVE_TIMEOUT + 90)  # far below --timeout (240 s): only the heartbeat ends it
        took = time.monotonic() - down
    return {"host": hs[1].hostname, "run": runs[0], "output": out, "took": took}


def _restart_after_kill(folder) -> dict:
    """2 named hosts x 1 process of train_resume.py, --max-restarts 1 on both; worker 1 SIGKILLs itself once."""
    with netns.hosts(2, hostnames=True) as hs:
        runs = [launch(h, addresses(hs, names=True), "-n", "1", "--max-restarts", "1", "--collective-timeout",
                       str(COLLECTIVE_TIMEOUT), "--timeout", "300", "--", sys.executable, RESUME,
                       str(folder / "out.npz"), str(folder / "ckpt"), "-", str(folder / "killed"),
                       node_rank=False) for h in hs]
        outputs = [finish(p, 300) for p in runs]
        ended = time.time()
    killed = folder / "killed"
    return {"host": hs[1].hostname, "runs": runs, "outputs": outputs, "killed": killed.exists(),
            "after_kill": ended - killed.stat().st_mtime if killed.exists() else None,
            "results": [weights(path) for path in (folder / "out.0.npz", folder / "out.1.npz") if path.exists()]}


@pytest.fixture(scope="module")
def failures(tmp_path_factory):
    """The three failures mid-training, side by side (each job on hosts of its own)."""
    jobs = {"killed": _kill_worker_1, "link": _pull_link_1, "restart": _restart_after_kill}
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(job, tmp_path_factory.mktemp(name)) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def test_a_worker_killed_on_host_1_stops_both_launchers_which_name_it(failures):
    done = failures["killed"]
    runs, outputs, took, h1 = done["runs"], done["outputs"], done["took"], done["host"]
    assert not done["survived"], "worker w0 outlived both launchers by 30 s"
    for p, out in zip(runs, outputs, strict=True):
        assert p.returncode != 0, out[-3000:]
    assert done["running"] == "other", done["running"]  # `peers.probe`: it accepts, and is no gRPC server
    assert re.search(rf"worker w1 \(node 1, {h1}\) was killed by SIGKILL", outputs[1]), outputs[1][-3000:]
    assert re.search(rf"stopped answering: w1 on {h1}:{PORT} \(node 1: connection refused\)", outputs[0]), \
        outputs[0][-3000:]
    print(f"worker killed on host 1: launchers exited after {took[0]:.1f} s (host 0; bound: {BOUND}) and "
          f"{took[1]:.1f} s (host 1)")
    print(errors(outputs[0]), errors(outputs[1]), sep="\n")


def test_host_1_losing_its_link_mid_step_ends_host_0s_launch_within_the_collective_timeout(failures):
    done = failures["link"]
    out = done["output"]
    assert done["run"].returncode != 0, out[-3000:]
    assert re.search(rf"stopped answering: w1 on {done['host']}:{PORT} \(node 1: no answer within", out), out[-3000:]
    print(f"link down: host 0's launcher exited after {done['took']:.1f} s (bound: {BOUND})")
    print(errors(out))


def test_unreachable_hosts_and_a_wrong_coordinator_address_end_within_the_timeout_naming_the_host(tmp_path):
    """Two jobs side by side, every launch with --timeout 20: in one, host 1's link is down from the start (the hosts
    cannot reach each other); in the other, host 1 was given a wrong port for the coordinator (host 0's). Every
    launcher ends at its --timeout (exit 124) and names the other host and what answers there, or not."""
    timeout = 20
    with netns.hosts(2) as cut, netns.hosts(2) as wrong:
        cut[1].link_down()
        args = ("-n", "1", "--timeout", str(timeout), "--", sys.executable, HOLD, str(tmp_path))
        started = time.monotonic()
        runs = [launch(h, addresses(cut), *args) for h in cut]
        runs += [launch(wrong[0], addresses(wrong), *args),
                 launch(wrong[1], f"{wrong[0].addr}:{PORT + 50},{wrong[1].addr}:{PORT}", *args)]
        outputs = [finish(p, timeout + 60) for p in runs]
        took = time.monotonic() - started
    for p, out in zip(runs, outputs, strict=True):
        assert p.returncode == 124 and f"did not finish within {timeout} s" in out, out[-3000:]
        assert "Traceback" not in out.split("tfscale launch:")[-1]
    cut0, cut1, wrong0, wrong1 = outputs
    assert re.search(rf"node 1 \({re.escape(cut[1].addr)}:{PORT}\): w1 does not answer", cut0), cut0[-3000:]
    assert re.search(rf"node 0 \({re.escape(cut[0].addr)}:{PORT}\): the JAX coordinator \(w0\) does not answer",
                     cut1), cut1[-3000:]
    # w1 runs, or is still starting (4 JAX workers start at once): either way node 1 is named
    assert re.search(rf"node 1 \({re.escape(wrong[1].addr)}:{PORT}\): w1(?: runs|'s port refuses)", wrong0), \
        wrong0[-3000:]
    assert re.search(rf"node 0 \({re.escape(wrong[0].addr)}:{PORT + 50}\): nothing listens at the JAX "
                     r"coordinator's port", wrong1), wrong1[-3000:]
    print(f"unreachable hosts and a wrong coordinator address: the launchers ended after {took:.1f} s "
          f"(bound: --timeout + the probe + the stop, {timeout} + {PROBE_SECONDS:g} + {STOP_SECONDS} s)")
    print("\n".join(errors(out) for out in outputs))


def test_a_worker_killed_on_host_1_restarts_both_hosts_which_resume_like_an_uninterrupted_run(failures, trained):
    """2 named hosts x 1 process, --max-restarts 1 on both: worker 1 (host 1) SIGKILLs itself mid-epoch 2; both
    launchers restart their workers (host 0's once JAX's heartbeat timeout ends its worker), which resume from
    the chief's last checkpoint and end with the weights of one uninterrupted process."""
    done = failures["restart"]
    runs, outputs = done["runs"], done["outputs"]
    for p, out in zip(runs, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]
    assert done["killed"], outputs[1][-3000:]  # worker 1 really died
    assert re.search(rf"worker w1 \(node 1, {done['host']}\) was killed by SIGKILL; restarting all 1 worker\(s\) "
                     r"\(restart 1 of 1\)", outputs[1]), outputs[1][-3000:]
    assert "restarting all 1 worker(s) (restart 1 of 1)" in outputs[0], outputs[0][-3000:]
    results = done["results"]
    assert len(results) == 2
    for result in results:
        assert (int(result["resumed_from_epoch"]), int(result["epochs_run"])) == (1, 2)
    diffs = [max_diff(r, trained["resume"][0]) for r in results]
    assert max(diffs) < ATOL, diffs
    print(f"killed on host 1: both hosts restarted, resumed and finished {done['after_kill']:.0f} s after the kill "
          f"(bound: {BOUND}, then a restart and the 2 epochs left); largest weight difference to one process "
          f"{max(diffs):.1e}")
