"""`tfscale launch` for real: worker processes talking gRPC over 127.0.0.1, failures, restarts, signals."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from procs import REPO, THREAD_ENV, base_env
from tfscale.cluster.launch.group import GroupTimeout, WorkerFailure
from tfscale.cluster.launch.launcher import LaunchOptions, run
from tfscale.worker_env import PEER_LOST_EXIT

pytestmark = pytest.mark.slow
WORKERS = REPO / "tests" / "workers"
FIT, FLAKY = str(WORKERS / "launch_fit.py"), str(WORKERS / "launch_flaky.py")
SIGNALLED = str(WORKERS / "promise_signals.py")


def launcher(*args: str) -> subprocess.Popen:
    """`python -m tfscale launch ARGS` in its own session, with one thread pool per worker."""
    return subprocess.Popen([sys.executable, "-m", "tfscale", "launch", *args], env=base_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"launcher timed out:\n{out[-3000:]}\n{err[-3000:]}")


def weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"w{i}"] for i in range(sum(k[1:].isdigit() and k[0] == "w" for k in data.files))]


def assert_identical_weights(out: Path, n: int) -> None:
    first = weights(out / "rank-0.npz")
    with np.load(out / "rank-0.npz") as data:
        assert any(not np.allclose(data[f"init{i}"], w) for i, w in enumerate(first)), "no training happened"
    for rank in range(1, n):
        for a, b in zip(first, weights(out / f"rank-{rank}.npz")):
            np.testing.assert_array_equal(a, b)


def test_three_workers_with_two_replicas_each_fit_to_identical_weights_with_log_files(tmp_path):
    logs = tmp_path / "logs"
    proc = launcher("-n", "3", "--replicas-per-worker", "2", "--collective-timeout", "120", "--log-dir", str(logs),
                    "--", sys.executable, FIT, str(tmp_path), "3")
    out, err = finish(proc)
    assert proc.returncode == 0, err[-3000:]
    assert "[w" not in out  # the output went to the files
    for rank in range(3):
        text = (logs / f"worker-{rank}.log").read_text()
        assert "Scale(multi_worker: 6 replica(s) = 3 worker(s) x 2 CPU" in text, text[-2000:]
        # a good run ends with no ERROR from any worker (they leave together: tf_engine._leave_together)
        errors = [line for line in text.splitlines() if re.search(r"^E\d{4} |\bERROR\b|Traceback", line)]
        assert not errors, f"worker {rank}: {errors}"
    assert "; chief" in (logs / "worker-0.log").read_text()
    assert_identical_weights(tmp_path, 3)
    with np.load(tmp_path / "rank-2.npz") as data:
        assert int(data["num_replicas"]) == 6 and float(data["collective_timeout"]) == 120.0


def test_two_hosts_on_loopback_train_together(tmp_path):
    """--nnodes/--node-rank/--hosts, two launchers on this machine standing for two hosts."""
    from procs import free_ports

    ports = free_ports(2)
    hosts = f"127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
    runs = [launcher("-n", "1", "--nnodes", "2", "--node-rank", str(node), "--hosts", hosts, "--",
                     sys.executable, FIT, str(tmp_path), "3") for node in (0, 1)]
    results = [finish(proc) for proc in runs]
    for proc, (out, err) in zip(runs, results):
        assert proc.returncode == 0, err[-3000:]
    assert "[w1] Scale(multi_worker: 2 replica(s)" in results[1][0]
    assert_identical_weights(tmp_path, 2)


def _wait_for(paths: list[Path], proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        if proc.poll() is not None:
            raise AssertionError("launcher ended early:\n" + "\n".join(proc.communicate()))
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("workers never got there:\n" + "\n".join(proc.communicate()))
        time.sleep(0.2)


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def _left_behind(pids: list[int], grace: float = 30) -> list[int]:
    """Those of `pids` still running after `grace` seconds (the launcher's stderr filter, tfscale.quiet, ends
    when the last process writing to it has closed it: just after the workers, not at the same instant)."""
    deadline = time.monotonic() + grace
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


def test_chief_killed_mid_training_stops_everything(tmp_path):
    """The chief (it holds TensorFlow's coordination service) SIGKILLed mid-epoch; a worker killed mid-epoch
    and restarted: test_train_scale."""
    proc = launcher("-n", "2", "--", sys.executable, FIT, str(tmp_path), "100000", "--hold", "--spawn-child")
    markers = [tmp_path / f"training-{rank}.json" for rank in (0, 1)]
    _wait_for(markers, proc)
    victim = json.loads(markers[0].read_text())
    family = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert victim["pid"] in family and victim["child"] in family  # workers and their own children

    os.kill(victim["pid"], signal.SIGKILL)
    killed_at = time.monotonic()
    out, err = finish(proc, timeout=120)
    shutdown = time.monotonic() - killed_at

    assert proc.returncode != 0
    assert "worker w0 was killed by SIGKILL" in err and "[w0] " in err, err[-2000:]
    assert _left_behind(family) == [], "processes were left behind"
    print(f"chief killed: the launcher stopped the others in {shutdown:.1f} s")  # reported, not asserted


def test_a_peer_that_stops_answering_ends_the_run_within_the_collective_timeout_and_is_named(tmp_path):
    """Worker 1 frozen (SIGSTOP) mid-epoch: worker 0's next all-reduce fails after --collective-timeout, and
    the launcher exits non-zero naming both (a dead peer becomes an error, not a hang)."""
    proc = launcher("-n", "2", "--collective-timeout", "8", "--", sys.executable, FIT, str(tmp_path), "100000",
                    "--hold")
    markers = [tmp_path / f"training-{rank}.json" for rank in (0, 1)]
    _wait_for(markers, proc)
    victim = json.loads(markers[1].read_text())
    family = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    os.kill(victim["pid"], signal.SIGSTOP)
    stopped_at = time.monotonic()
    _, err = finish(proc, timeout=120)
    took = time.monotonic() - stopped_at
    # README: a worker whose peer is gone or silent exits with code 75, which its launcher passes on, unless
    # TensorFlow crashes first while aborting the collective (SIGSEGV, seen here under load; or SIGABRT)
    assert PEER_LOST_EXIT == 75 and proc.returncode in (75, 128 + signal.SIGSEGV, 128 + signal.SIGABRT), err[-3000:]
    said = {75: "exited with code 75", 128 + signal.SIGSEGV: "was killed by SIGSEGV",
            128 + signal.SIGABRT: "was killed by SIGABRT"}[proc.returncode]
    assert f"worker w0 {said}" in err and "w1 had been stopped (SIGSTOP or SIGTSTP)" in err, err[-3000:]
    assert _left_behind(family) == [], "processes were left behind"
    print(f"peer stopped: the launcher exited {took:.1f} s later (collective timeout 8 s)")


def test_sigterm_to_the_launcher_is_forwarded_to_every_worker(tmp_path):
    proc = launcher("-n", "2", "--", sys.executable, FLAKY, "wait", str(tmp_path))
    _wait_for([tmp_path / "ready-0", tmp_path / "ready-1"], proc)
    family = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc, timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert (tmp_path / "sigterm-0").exists() and (tmp_path / "sigterm-1").exists()
    assert _left_behind(family) == []


def test_sigint_to_the_launcher_is_forwarded_to_every_worker(tmp_path):
    proc = launcher("-n", "2", "--", sys.executable, SIGNALLED, str(tmp_path), "0")
    _wait_for([tmp_path / "ready-0", tmp_path / "ready-1"], proc)
    family = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(signal.SIGINT)
    _, err = finish(proc, timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, err[-2000:]
    assert "interrupted by SIGINT" in err, err[-2000:]
    assert sorted(p.name for p in tmp_path.glob("SIG*")) == ["SIGINT-0", "SIGINT-1"]  # each worker handled it
    assert _left_behind(family) == []


def test_a_stopped_worker_is_continued_after_a_forwarded_sigterm_and_has_the_grace_to_save(tmp_path):
    """Worker 1 stopped (SIGSTOP, as by a debugger or Ctrl-Z) when SIGTERM reaches the launcher: the launcher
    continues it (SIGCONT) with the SIGTERM, so it handles the signal within the 10 s forwarded signals get: a
    2 s "checkpoint" completes. Left stopped, it would run again only when the group is stopped (1 s, then
    SIGKILL), and its checkpoint would be lost."""
    proc = launcher("-n", "2", "--", sys.executable, SIGNALLED, str(tmp_path), "2")
    _wait_for([tmp_path / "ready-0", tmp_path / "ready-1"], proc)
    family = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    os.kill(int((tmp_path / "ready-1").read_text()), signal.SIGSTOP)
    proc.send_signal(signal.SIGTERM)
    _, err = finish(proc, timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert sorted(p.name for p in tmp_path.glob("SIG*")) == ["SIGTERM-0", "SIGTERM-1"], err[-2000:]
    assert _left_behind(family) == []


def test_max_restarts_restarts_the_group_after_one_failure(tmp_path):
    proc = launcher("-n", "2", "--max-restarts", "2", "--", sys.executable, FLAKY, "fail-once", str(tmp_path))
    out, err = finish(proc)
    assert proc.returncode == 0, err
    assert "[w1] failing on purpose" in out
    assert "worker w1 exited with code 3; restarting all 2 worker(s) (restart 1 of 2)" in err
    assert "[w0] rank=0 restart=1 world=2" in out and "[w1] ok rank=1" in out
    assert "restart=2" not in out  # one restart was enough


def test_a_failure_without_restarts_names_the_worker_and_its_last_lines(tmp_path):
    with pytest.raises(WorkerFailure) as caught:
        run([sys.executable, FLAKY, "fail", str(tmp_path)], LaunchOptions(workers=2, env=THREAD_ENV))
    failure = caught.value
    assert (failure.name, failure.returncode, failure.exit_code) == ("w1", 3, 3)
    assert failure.tail[-1] == "failing on purpose"
    assert "worker w1 exited with code 3" in str(failure) and "[w1] failing on purpose" in str(failure)


def test_timeout_stops_the_workers(tmp_path):
    """Workers that ignore SIGTERM, each with a child of its own: at --timeout all four processes are gone."""
    code = ("import os, signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "child = subprocess.Popen(['sleep', '600']); "
            "open(os.path.join(sys.argv[1], 'pids-' + os.environ['TFSCALE_RANK']), 'w')"
            ".write(f'{os.getpid()} {child.pid}'); "
            "time.sleep(600)")
    with pytest.raises(GroupTimeout, match="still running: w0, w1"):
        run([sys.executable, "-c", code, str(tmp_path)], LaunchOptions(workers=2, timeout=5))
    pids = [int(pid) for rank in (0, 1) for pid in (tmp_path / f"pids-{rank}").read_text().split()]
    assert len(set(pids)) == 4
    left = _left_behind(pids)
    for pid in left:  # not to leak them into the rest of the run when this fails
        os.kill(pid, signal.SIGKILL)
    assert left == [], "workers or their children outlived the timeout"


def test_the_exit_code_of_a_failing_command_through_the_cli(tmp_path):
    proc = launcher("-n", "2", "--", sys.executable, "-c", "import os, sys; sys.exit(int(os.environ['TFSCALE_RANK']) * 5)")
    out, err = finish(proc)
    assert proc.returncode == 5
    assert "worker w1 exited with code 5" in err


def test_each_worker_is_bound_to_its_share_of_the_cores():
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("binding two workers needs two cores")
    code = "import os; print('cpus', sorted(os.sched_getaffinity(0)), os.environ['GRPC_EXPERIMENTS'])"
    seen = {}
    for bind in (True, False):
        output = io.StringIO()
        run([sys.executable, "-c", code], LaunchOptions(workers=2, bind_cores=bind), output=output)
        seen[bind] = sorted(line for line in output.getvalue().splitlines() if " cpus " in line)
    share = len(cores) // 2
    assert seen[True] == [f"[w{r}] cpus {cores[r * share:(r + 1) * share]} -event_engine_client,-event_engine_listener"
                          for r in range(2)]
    assert all(f"cpus {cores} " in line for line in seen[False]) and len(seen[False]) == 2


def test_group_threads_run_side_by_side(tmp_path):
    """Two launches from two threads of one process (as a tuner would) do not mix their workers."""
    results, spans = {}, {}
    other = {"a": "b", "b": "a"}

    def one(name):
        started = time.monotonic()
        # after its restart, each worker waits (up to 90 s) for the same rank of the other launch: both groups
        # must be running at once, which fails if one launch waited for the other
        results[name] = run([sys.executable, FLAKY, "fail-once", str(tmp_path / name), str(tmp_path / other[name])],
                            LaunchOptions(workers=2, max_restarts=1))
        spans[name] = (started, time.monotonic())

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    threads = [threading.Thread(target=one, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert results == {"a": [0, 0], "b": [0, 0]}
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["failed", "met-0", "met-1"]  # not mixed
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["failed", "met-0", "met-1"]
    (a0, a1), (b0, b1) = spans["a"], spans["b"]
    assert a0 < b1 and b0 < a1  # the two launches overlapped in time
    print(f"launch a ran {a0 - a0:.1f}..{a1 - a0:.1f} s, launch b {b0 - a0:.1f}..{b1 - a0:.1f} s")


def test_a_launcher_killed_with_sigkill_takes_its_workers_with_it():
    code = "import time; print('up', flush=True); time.sleep(600)"
    proc = launcher("-n", "2", "--", sys.executable, "-c", code)
    started = 0
    for line in proc.stdout:
        started += "up" in line
        if started == 2:
            break
    children = psutil.Process(proc.pid).children(recursive=True)
    family = [c.pid for c in children]  # the two workers, and the launcher's stderr filter (tfscale.quiet)
    assert sum(code in c.cmdline() for c in children) == 2
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: the workers' parent-death signal does it
    proc.communicate(timeout=60)
    assert _left_behind(family) == []


def test_start_group_reaps_what_its_processes_leave_behind():
    """The low-level API: per-process variables, prefixed output, and no stray grandchild after success."""
    import io

    from tfscale.cluster.launch.launcher import ProcessSpec, start_group

    code = ("import os, subprocess; sleep = subprocess.Popen(['sleep', '600']); "
            "print('hello from', os.environ['WHO'], 'sleep', sleep.pid, flush=True)")
    output = io.StringIO()
    with start_group([ProcessSpec([sys.executable, "-c", code], {"WHO": who}, who) for who in ("a", "b")],
                     output=output) as group:
        assert group.wait(timeout=120) == [0, 0]
        assert group.alive() == []  # the two `sleep`s were in the workers' process groups
    text = output.getvalue()
    sleeps = [int(pid) for pid in re.findall(r"^\[[ab]\] hello from [ab] sleep (\d+)$", text, re.M)]
    assert len(sleeps) == 2 and "[a] hello from a" in text and "[b] hello from b" in text, text
    left = _left_behind(sleeps, grace=10)  # seen by the OS, not by the group's own bookkeeping
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the `sleep`s the workers started outlived them"
