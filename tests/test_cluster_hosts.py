"""`tfscale launch --nnodes 2` on two real hosts (network namespaces on one private /24, tests/cluster/netns.py):
training across hosts equals one process, the address the workers listen on, mistakes in --hosts, and what
happens when a worker on the other host dies, its link goes down, or the hosts share no disk.

One TensorFlow start-up per worker per job, 1 thread each: the jobs combine what the issue allows (2 hosts x 1
worker is also the restart case; the unreachable host and the port in use on the other host are one job).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import procs
from require import skip_or_fail
from tests.cluster import netns
from tests.cluster.launches import errors, finish, max_diff, weights

pytestmark = pytest.mark.slow

WORKERS = procs.REPO / "tests" / "workers"
RESUME, FIT = str(WORKERS / "train_resume.py"), str(WORKERS / "launch_fit.py")
PORT = 7100  # each host has its own ports: the same number on every host
ATOL = 1e-5


def launch(host: netns.Host, hosts: str, *args: str, node_rank: int | None = None) -> subprocess.Popen:
    """`python -m tfscale launch ... --hosts HOSTS ARGS` on `host`, output (stdout and stderr) captured."""
    nnodes = len(hosts.split(","))
    rank = host.index if node_rank is None else node_rank
    return host.popen([sys.executable, "-m", "tfscale", "launch", "--nnodes", str(nnodes), "--node-rank", str(rank),
                       "--hosts", hosts, *args], env=procs.base_env(), cwd=str(procs.REPO),
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def hosts_of(hs, port: int = PORT) -> str:
    return ",".join(f"{h.addr}:{port}" for h in hs)


@pytest.fixture(scope="module", autouse=True)
def _hosts_can_be_made():
    if reason := netns.skip_reason():
        skip_or_fail(reason)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """train_resume.py in one process (no TF_CONFIG): the weights every multi-host run must end with."""
    folder = tmp_path_factory.mktemp("reference")
    procs.run_one([RESUME, str(folder / "ref.npz"), str(folder / "ckpt"), "-"], timeout=300)
    return weights(folder / "ref.npz")


def _listening(host: netns.Host, ports: list[int]) -> dict[int, tuple[str, str]]:
    """{port: (local address, process)} of the TCP sockets listening on `ports` in `host` (`ss -ltnp`)."""
    found = {}
    for line in host.run(["ss", "-Hltnp"], timeout=30).stdout.splitlines():
        fields = line.split()
        address, _, port = fields[3].rpartition(":")
        if port.isdigit() and int(port) in ports:
            found[int(port)] = (address, fields[-1])
    return found


def test_two_hosts_by_two_workers_train_like_one_process_and_listen_on_every_interface(tmp_path, reference):
    """2 hosts x 2 workers: every worker ends with the one-process weights; each worker's gRPC server listens
    on all interfaces of its host (README, "Multi-host launch"), on its host's port + its local rank."""
    with netns.hosts(2) as hs:
        runs = [launch(h, hosts_of(hs), "-n", "2", "--timeout", "240", "--", sys.executable, RESUME,
                       str(tmp_path / "out.npz"), str(tmp_path / "ckpt"), "-") for h in hs]
        seen: dict[int, dict] = {0: {}, 1: {}}
        deadline = time.monotonic() + 240
        while any(len(seen[h.index]) < 2 for h in hs) and all(p.poll() is None for p in runs):
            for h in hs:
                seen[h.index].update(_listening(h, [PORT, PORT + 1]))
            assert time.monotonic() < deadline, seen
            time.sleep(0.3)
        outputs = [finish(p, 240) for p in runs]
    for p, out in zip(runs, outputs):
        assert p.returncode == 0, out[-4000:]
    for node in (0, 1):
        assert sorted(seen[node]) == [PORT, PORT + 1], f"host {node}: {seen[node]}"
        for port, (address, process) in seen[node].items():
            assert address in ("*", "[::]", "0.0.0.0"), f"host {node} port {port} listens on {address}"
            assert "python" in process, process
    diffs = [max_diff(weights(tmp_path / f"out.{rank}.npz"), reference) for rank in range(4)]
    assert max(diffs) < ATOL, diffs
    print(f"2 hosts x 2 workers vs one process: largest weight difference {max(diffs):.1e}; listening: {seen}")


def test_a_worker_killed_on_host_1_restarts_both_hosts_which_resume_like_an_uninterrupted_run(tmp_path, reference):
    """2 hosts x 1 worker, --max-restarts 1 on both: worker 1 (host 1) is SIGKILLed mid-epoch 2; both hosts'
    launchers restart their workers, which resume from the chief's last checkpoint and end with the weights
    of one uninterrupted process."""
    with netns.hosts(2) as hs:
        started = time.monotonic()
        runs = [launch(h, hosts_of(hs), "-n", "1", "--max-restarts", "1", "--timeout", "300", "--",
                       sys.executable, RESUME, str(tmp_path / "out.npz"), str(tmp_path / "ckpt"), "-",
                       str(tmp_path / "killed")) for h in hs]
        outputs = [finish(p, 300) for p in runs]
        took = time.monotonic() - started
    for p, out in zip(runs, outputs):
        assert p.returncode == 0, out[-4000:]
    assert (tmp_path / "killed").exists(), outputs[1][-3000:]  # worker 1 really died
    assert re.search(rf"worker w1 \(node 1, {re.escape(hs[1].addr)}\) was killed by SIGKILL; restarting all 1 "
                     r"worker\(s\) \(restart 1 of 1\)", outputs[1]), outputs[1][-3000:]
    assert "restarting all 1 worker(s) (restart 1 of 1)" in outputs[0], outputs[0][-3000:]
    results = [weights(tmp_path / f"out.{rank}.npz") for rank in (0, 1)]
    for result in results:
        assert (int(result["resumed_from_epoch"]), int(result["epochs_run"])) == (1, 2)
    diffs = [max_diff(r, reference) for r in results]
    assert max(diffs) < ATOL, diffs
    print(f"killed on host 1, both hosts restarted and resumed in {took:.0f} s; "
          f"largest weight difference to one process {max(diffs):.1e}")


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (the same pids in every namespace: there is no PID namespace)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def _start_holding(tmp_path, hs, *args):
    """2 hosts x 1 worker of launch_fit.py --hold, once both train; returns (launchers, worker 1's pid)."""
    runs = [launch(h, hosts_of(hs), "-n", "1", "--timeout", "240", *args, "--", sys.executable, FIT,
                   str(tmp_path), "100000", "--hold") for h in hs]
    markers = [tmp_path / f"training-{rank}.json" for rank in (0, 1)]
    deadline = time.monotonic() + 200
    while not all(m.exists() for m in markers):
        if any(p.poll() is not None for p in runs) or time.monotonic() > deadline:
            for p in runs:
                p.kill()
            raise AssertionError("the workers never trained:\n" + "\n".join(p.communicate()[0][-3000:] for p in runs))
        time.sleep(0.2)
    return runs, json.loads(markers[1].read_text())["pid"]


def test_a_worker_killed_on_host_1_stops_both_launchers_which_name_it(tmp_path):
    with netns.hosts(2) as hs:
        runs, victim = _start_holding(tmp_path, hs)
        os.kill(victim, signal.SIGKILL)  # the workers' pids are the same in every namespace (no PID namespace)
        killed = time.monotonic()
        outputs, took = [], []
        for p in runs:  # a generous deadline (--timeout is 240 s): the time itself is printed, not asserted
            outputs.append(finish(p, 120))
            took.append(time.monotonic() - killed)
        survivor, gone = json.loads((tmp_path / "training-0.json").read_text())["pid"], time.monotonic() + 30
        while _running(survivor) and time.monotonic() < gone:
            time.sleep(0.1)
        assert not _running(survivor), "worker w0 outlived both launchers by 30 s"
    for p, out in zip(runs, outputs, strict=True):
        assert p.returncode != 0, out[-3000:]
    h1 = hs[1].addr
    assert re.search(rf"worker w1 \(node 1, {re.escape(h1)}\) was killed by SIGKILL", outputs[1]), outputs[1][-3000:]
    assert f"w1 on {h1}" in outputs[0] and "stopped answering" in outputs[0], outputs[0][-3000:]
    print(f"worker killed on host 1: launchers exited after {took[0]:.1f} s (host 0) and {took[1]:.1f} s (host 1)")
    print(errors(outputs[0]), errors(outputs[1]), sep="\n")


def test_host_1_losing_its_link_mid_epoch_ends_host_0s_launch_within_the_collective_timeout(tmp_path):
    collective_timeout = 8
    with netns.hosts(2) as hs:
        runs, _ = _start_holding(tmp_path, hs, "--collective-timeout", str(collective_timeout))
        hs[1].link_down()
        down = time.monotonic()
        # the deadline is generous for a loaded machine, yet far below --timeout (240 s): only the collective
        # timeout can end the launch by then. The time itself is printed, not asserted.
        out = finish(runs[0], collective_timeout + 90)
        took = time.monotonic() - down
    assert runs[0].returncode != 0, out[-3000:]
    assert f"w1 on {hs[1].addr}" in out and "stopped answering" in out, out[-3000:]
    print(f"link down: host 0's launcher exited after {took:.1f} s (collective timeout {collective_timeout} s)")
    print(errors(out))


def test_mistakes_in_hosts_give_clear_errors_within_the_timeout(tmp_path):
    """A host name that does not resolve (at once, before any worker starts); then one 5-node job whose chief
    reports, at --timeout, each answer a worker port can give: a host that does not answer (an unused address of
    the /24), a port in use there by another program (so its worker never joined), a port that refuses (nothing
    listens: that node's launcher never started) and a worker's gRPC server that answers."""
    with netns.hosts(2) as (h0, h1):
        unused = h0.addr.rsplit(".", 1)[0] + ".250"
        hosts = f"{h0.addr}:{PORT},{h1.addr}:{PORT},{unused}:{PORT},{h1.addr}:{PORT + 10},{h1.addr}:{PORT + 20}"
        # node 4 is a worker's TensorFlow gRPC server, up before the job and until its end (a real worker of node 4
        # would give up waiting for the chief on a loaded machine); it starts first, overlapping the first case
        answering = h1.popen([sys.executable, "-c", "import tensorflow as tf; tf.distribute.Server({'worker': "
                              f"['{h1.addr}:{PORT + 20}']}}, job_name='worker', task_index=0).join()"],
                             env=procs.base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started = time.monotonic()
        # at once: the deadline (90 s, generous) is far below --timeout (600 s); the time is printed
        out = finish(launch(h0, f"{h0.addr}:{PORT},no-such-host.invalid:{PORT}", "--timeout", "600", "--",
                            sys.executable, "-c", "print('never')"), 90)
        print(f"unresolvable host: the launcher exited after {time.monotonic() - started:.1f} s")
        assert "no-such-host.invalid" in out and "does not resolve" in out and "never" not in out, out
        assert "Traceback" not in out
        print(errors(out))

        squatter = h1.popen([sys.executable, "-c", "import socket, time; s = socket.socket(); "
                             f"s.bind(('0.0.0.0', {PORT})); s.listen(); print('up', flush=True); time.sleep(600)"],
                            stdout=subprocess.PIPE, text=True)
        assert squatter.stdout.readline().strip() == "up"
        deadline = time.monotonic() + 200
        while PORT + 20 not in _listening(h1, [PORT + 20]):
            if answering.poll() is not None or time.monotonic() > deadline:
                netns.kill_group(answering)
                raise AssertionError(f"node 4's server never listened:\n{answering.communicate()[0][-3000:]}")
            time.sleep(0.2)
        timeout = 20
        started = time.monotonic()
        runs = [launch(h, hosts, "-n", "1", "--timeout", str(timeout), "--", sys.executable, FIT, str(tmp_path), "2")
                for h in (h0, h1)]
        outputs = [finish(p, timeout + 60) for p in runs]
        took = time.monotonic() - started
        assert answering.poll() is None, "node 4's server ended before node 0's --timeout"
    assert runs[1].returncode != 0 and f"port {PORT} on this host is not free" in outputs[1], outputs[1]
    assert runs[0].returncode == 124, outputs[0][-3000:]  # ended by --timeout (finish's deadline: timeout + 60)
    chief = outputs[0]
    assert f"did not finish within {timeout} s" in chief, chief[-3000:]
    assert re.search(rf"node 2 \({re.escape(unused)}:{PORT}\)[^.]*does not answer", chief), chief[-3000:]
    assert re.search(rf"node 1 \({re.escape(h1.addr)}:{PORT}\)[^.]*never joined", chief), chief[-3000:]
    assert re.search(rf"node 3 \({re.escape(h1.addr)}:{PORT + 10}\): w3's port refuses connections", chief), \
        chief[-3000:]
    assert re.search(rf"node 4 \({re.escape(h1.addr)}:{PORT + 20}\): w4 answers", chief), chief[-3000:]
    print(f"4 other nodes, each answering differently: host 0's launcher exited after {took:.1f} s")
    print(errors(chief), errors(outputs[1]), sep="\n")


def test_hosts_that_share_no_disk_refuse_a_local_checkpoint_dir_before_training(tmp_path):
    """checkpoint_dir on each host's private disk: every worker checks that it sees the marker the chief wrote
    there, and the run fails before its first step with a ClusterError asking for a shared folder."""
    with netns.hosts(2, private_scratch=True) as hs:
        checkpoint_dir = f"{hs[0].scratch}/ckpt"
        runs = [launch(h, hosts_of(hs), "-n", "1", "--timeout", "200", "--", sys.executable, RESUME,
                       str(tmp_path / "out.npz"), checkpoint_dir, "-") for h in hs]
        outputs = [finish(p, 200) for p in runs]
    for p, out in zip(runs, outputs):  # every worker raises it, the chief too
        assert p.returncode != 0, out[-3000:]
        assert "Epoch 1/" not in out and "rank " not in out, out[-3000:]  # no step was trained
        assert re.search(r"ClusterError: checkpoint_dir .* is not shared between the hosts: worker\(s\) 1 do not see",
                         out) and "NFS" in out, out[-3000:]
    assert not list(tmp_path.glob("out*.npz"))
    print("\n".join(errors(out) for out in outputs))


TIME_WAIT = """
import socket, time
from tfscale.cluster.launch.ports import PortReservation

def refused(port):
    try:
        PortReservation.exact([port]).close()
        return False
    except Exception:
        return True

# a worker's server as TensorFlow's (SO_REUSEADDR, SO_REUSEPORT) closes its side first: TIME_WAIT on 7100
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
server.bind(("0.0.0.0", 7100))
server.listen()
client = socket.create_connection(("127.0.0.1", 7100))
accepted, _ = server.accept()
accepted.close(); time.sleep(0.2); client.close(); server.close()
print("time_wait", refused(7100))
listener = socket.socket(); listener.bind(("0.0.0.0", 7102)); listener.listen()
print("listening", refused(7102))
held = PortReservation.exact([7104])
print("reserved", refused(7104))
"""


def test_a_port_in_time_wait_from_an_earlier_run_can_be_reserved_again_a_held_one_cannot():
    """A launch right after another on the same --hosts port (its connections in TIME_WAIT for a minute) starts;
    a port something listens on, or another launcher holds, is refused."""
    with netns.hosts(1) as (h0,):
        done = h0.run([sys.executable, "-c", TIME_WAIT], env=procs.base_env(), cwd=str(procs.REPO), timeout=60)
    assert done.stdout.split() == ["time_wait", "False", "listening", "True", "reserved", "True"], done
