"""Elastic `tfscale launch --nnodes MIN:MAX`: the membership rule, launchers agreeing over their launcher ports on
127.0.0.1, and 3 real hosts (network namespaces, tests/cluster/netns.py) of which one loses its link for good
mid-epoch 2: the 2 that remain go on from the last checkpoint and end with the weights of one uninterrupted
process; the lost host's launcher stops with a ClusterError.

The checkpoints live in an S3 bucket served by moto's S3 server (an EMULATOR of S3: no cloud is reachable here)
running inside host 0; the hosts share no disk (private scratch folders).
"""

import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import procs
from require import skip_or_fail
from s3 import s3_server_argv
from tests.cluster import netns
from tfscale.cluster.launch.hosts import Host
from tfscale.cluster.launch.plan import LaunchOptions, parse_nnodes
from tfscale.cluster.launch.rendezvous import Rendezvous, check_launcher_ports, membership
from tfscale.errors import ClusterError, ConfigError

WORKER = str(procs.REPO / "tests" / "workers" / "preempt_resume.py")
PORT = 7100       # each host's first worker port (its launcher port: 7099)
S3_PORT = 9000    # moto's S3 server, inside host 0
BUCKET = "elastic"
# preempt_resume.py's pacing (every worker sleeps after each step; the weights do not change), so that the link
# goes down mid-epoch 2 however long the check for the step-12 checkpoint takes
STEP_SLEEP = "0.3"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


# --------------------------------------------------------------------------- the rule and the options (fast)


def test_membership_keeps_the_members_that_answered_in_host_list_order_or_names_the_lost_hosts_and_min():
    hosts = ["h0:7100", "h1:7100", "h2:7100"]
    assert membership(2, hosts, {"h2:7100", "h0:7100", "h1:7100"}) == hosts
    assert membership(2, hosts, {"h1:7100", "h0:7100"}) == ["h0:7100", "h1:7100"]
    assert membership(2, hosts, {"h2:7100", "h0:7100", "elsewhere:1"}) == ["h0:7100", "h2:7100"]
    assert membership(1, ["h1:7100"], {"h1:7100"}) == ["h1:7100"]
    with pytest.raises(ClusterError) as below:
        membership(2, hosts, {"h2:7100"})  # the host that lost its link sees only itself
    text = str(below.value)
    assert "1 of 3 host(s) remain (h2:7100)" in text and "lost: h0:7100, h1:7100" in text, text
    assert "MIN = 2" in text, text
    with pytest.raises(ClusterError, match=r"0 of 2 host\(s\) remain \(none\).*lost: h0:7100, h1:7100"):
        membership(1, hosts[:2], set())


def test_nnodes_takes_n_or_min_max_and_an_elastic_launch_is_checked_with_the_flag_named():
    assert parse_nnodes("3") == (None, 3) and parse_nnodes("2:3") == (2, 3) and parse_nnodes(None) == (None, None)
    for bad in ("2:3:4", "two", "2:", ":3", "-1:2"):
        with pytest.raises(ConfigError, match="--nnodes"):
            parse_nnodes(bad)
    hosts = "a:7100,b:7100,c:7100"
    LaunchOptions(nnodes=3, min_nodes=2, hosts=hosts, max_restarts=1)
    with pytest.raises(ConfigError, match="MIN is more than MAX"):
        LaunchOptions(nnodes=2, min_nodes=3, hosts=hosts, max_restarts=1)
    with pytest.raises(ConfigError, match="MAX is missing"):
        LaunchOptions(min_nodes=2, hosts=hosts, max_restarts=1)
    with pytest.raises(ConfigError, match="--nnodes"):
        LaunchOptions(nnodes=3, min_nodes=0, hosts=hosts, max_restarts=1)
    with pytest.raises(ConfigError, match="--max-restarts"):
        LaunchOptions(nnodes=3, min_nodes=2, hosts=hosts)
    with pytest.raises(ConfigError, match="--hosts"):
        LaunchOptions(nnodes=3, min_nodes=2, max_restarts=1)
    with pytest.raises(ConfigError, match="launcher port 7101 .* is a worker port of another entry"):
        check_launcher_ports([Host("a", 7100), Host("a", 7102)], workers=2)
    check_launcher_ports([Host("a", 7100), Host("a", 7200)], workers=2)


def test_dry_run_of_an_elastic_launch_plans_every_named_host(capsys, monkeypatch):
    from tfscale.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["launch", "--dry-run", "--nnodes", "2:3", "--node-rank", "2", "--max-restarts", "1",
                 "--hosts", "10.0.0.1:7100,10.0.0.2:7100,10.0.0.3:7100", "--", "python", "t.py"]) == 0
    out = capsys.readouterr().out
    assert "1 of 3 worker(s) on this host (node 2 of 3 host(s))" in out, out
    assert "TFSCALE_RANK=2" in out and "10.0.0.3:7100" in out, out
    assert main(["launch", "--dry-run", "--nnodes", "2:4", "--node-rank", "0", "--max-restarts", "1",
                 "--hosts", "10.0.0.1:7100,10.0.0.2:7100,10.0.0.3:7100", "--", "python", "t.py"]) == 2
    assert "--nnodes 2:4 but 3 host(s) are named" in capsys.readouterr().err


# --------------------------------------------------------------------------- the agreement on 127.0.0.1


def _agree_all(rendezvous: list[Rendezvous], round_: int) -> list:
    """`agree(round_)` on each, at once (threads); each result is (round, [ports]) or the exception raised."""
    results: list = [None] * len(rendezvous)

    def agree(i):
        try:
            got, hosts = rendezvous[i].agree(round_)
            results[i] = (got, [h.port for h in hosts])
        except ClusterError as e:
            results[i] = e

    threads = [threading.Thread(target=agree, args=(i,)) for i in range(len(rendezvous))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_launchers_agree_on_the_hosts_whose_launcher_answers_and_the_lost_one_is_left_out():
    """3 launchers' rendezvous on 127.0.0.1 (ports 1 apart from their worker ports): all 3 agree on all 3; with
    one closed (its launcher gone), the 2 others agree on those 2 in the next round, in host-list order; below
    MIN, a lone launcher raises the ClusterError naming the lost hosts."""
    ports = procs.free_ports(3)
    nodes = [Host("127.0.0.1", p + 1) for p in ports]  # launcher port = worker port - 1 = the free port
    fast = {"settle": 0.2, "ask_timeout": 1.0, "agree_timeout": 10.0}
    hosts = [Rendezvous(nodes, i, 2, **fast) for i in range(3)]
    try:
        assert _agree_all(hosts, 1) == [(1, [n.port for n in nodes])] * 3
        hosts[2].close()
        survivors = _agree_all(hosts[:2], 2)
        assert survivors == [(2, [nodes[0].port, nodes[1].port])] * 2, survivors
        hosts[1].close()
        hosts[0].agree_timeout = 2.0
        alone = _agree_all(hosts[:1], 3)[0]
        assert isinstance(alone, ClusterError) and "lost: 127.0.0.1:" in str(alone) and "MIN = 2" in str(alone)
    finally:
        for h in hosts:
            h.close()


def test_a_running_launcher_is_told_of_a_new_round_by_an_ask():
    ports = procs.free_ports(2)
    nodes = [Host("127.0.0.1", p + 1) for p in ports]
    fast = {"settle": 0.2, "ask_timeout": 1.0, "agree_timeout": 10.0}
    with Rendezvous(nodes, 0, 1, **fast) as a, Rendezvous(nodes, 1, 1, **fast) as b:
        b.check()  # nothing announced: its workers go on
        joined = []
        t = threading.Thread(target=lambda: joined.append(a.agree(1)))
        t.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                b.check()
            except ClusterError as news:  # Regroup: b's launcher stops its workers and joins round 1
                assert "node 0 (127.0.0.1:" in str(news) and "round 1" in str(news), news
                break
            assert time.monotonic() < deadline, "b never heard of round 1"
            time.sleep(0.05)
        assert b.agree(1)[0] == 1
        t.join(timeout=15)
        assert joined and joined[0][0] == 1 and len(joined[0][1]) == 2


# --------------------------------------------------------------------------- 3 hosts, one lost for good

MAKE_BUCKET = """
import sys, time
import boto3, botocore.exceptions
client = boto3.client("s3", endpoint_url=sys.argv[1])
deadline = time.monotonic() + 120
while True:
    try:
        client.create_bucket(Bucket=sys.argv[2])
        break
    except botocore.exceptions.EndpointConnectionError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
"""

# Waits (inside a host: the root namespace cannot reach the hosts' /24) until a committed checkpoint of at least
# the given global step is in the bucket; prints the newest one's name and step.
WAIT_FOR_STEP = """
import sys, time
from tfscale.scale.checkpoint_store import CheckpointStore
store, at_least, deadline = CheckpointStore(sys.argv[1]), int(sys.argv[2]), time.monotonic() + 300
while time.monotonic() < deadline:
    try:
        found = [c for c in store.list() if c.global_step >= at_least]
    except FileNotFoundError:  # a manifest listed, then pruned (keep K) before it was read: list again
        found = []
    if found:
        print(found[0].name, found[0].global_step, flush=True)
        sys.exit(0)
    time.sleep(0.1)
sys.exit(f"no checkpoint of global step {at_least} or more within 300 s")
"""


class Launcher:
    """`tfscale launch --nnodes 2:3 ...` on one host, its output lines read as they come, each with its time."""

    def __init__(self, host: netns.Host, hosts: str, env: dict, out: str, checkpoint_dir: str):
        self.proc = host.popen([sys.executable, "-m", "tfscale", "launch", "--nnodes", "2:3", "--node-rank",
                                str(host.index), "--hosts", hosts, "-n", "1", "--max-restarts", "2",
                                "--collective-timeout", "20", "--timeout", "900", "--", sys.executable, WORKER, out,
                                checkpoint_dir],
                               env=env, cwd=str(procs.REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        self.lines: list[tuple[float, str]] = []
        self.ended: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
        self.proc.wait()
        self.ended = time.monotonic()

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def when(self, pattern: str) -> tuple[float, str]:
        """The first line matching `pattern`, and its time."""
        return next(((t, line) for t, line in self.lines if re.search(pattern, line)), (float("nan"), ""))

    def finish(self, timeout: float) -> str:
        self._reader.join(timeout)
        if self._reader.is_alive():
            netns.kill_group(self.proc)
            self._reader.join(10)
            raise AssertionError(f"the launcher did not exit within {timeout} s:\n{self.output[-4000:]}")
        return self.output


def _weights(path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[k] for k in sorted((k for k in data.files if re.fullmatch(r"w\d+", k)), key=lambda k: int(k[1:]))]


@pytest.mark.slow
def test_three_hosts_lose_one_for_good_mid_epoch_2_and_the_two_left_finish_like_one_process(tmp_path):
    if reason := netns.skip_reason():
        skip_or_fail(reason)
    procs.run_one([WORKER, str(tmp_path / "ref.npz"), str(tmp_path / "ref_ckpt")], env={"EVERY_STEPS": "2"},
                  timeout=300)
    reference = _weights(tmp_path / "ref.npz")
    with netns.hosts(3, private_scratch=True) as hs:
        h0, h1, h2 = hs
        endpoint = f"http://{h0.addr}:{S3_PORT}"
        env = procs.base_env(AWS_ENDPOINT_URL=endpoint, EVERY_STEPS="2", STEP_SLEEP=STEP_SLEEP, **S3_KEYS)
        h0.popen(s3_server_argv(h0.addr, S3_PORT), env={k: v for k, v in env.items() if not k.startswith("AWS_")},
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        made = h1.run([sys.executable, "-c", MAKE_BUCKET, endpoint, BUCKET], env=env, timeout=180)
        assert made.returncode == 0, made.stderr[-3000:]
        url, out = f"s3://{BUCKET}/run", f"{h0.scratch}/out.npz"  # the same path on each host, private to each
        hosts = ",".join(f"{h.addr}:{PORT}" for h in hs)
        started = time.monotonic()
        runs = [Launcher(h, hosts, env, out, url) for h in hs]
        seen = h1.run([sys.executable, "-c", WAIT_FOR_STEP, url, "12"], env=env, timeout=600)
        assert seen.returncode == 0, seen.stderr[-3000:]
        h2.link_down()  # for good
        down = time.monotonic()
        outputs = [run.finish(900) for run in runs]
        final = _weights(f"{h0.scratch_source}/out.npz")  # rank 0's, in host 0's private folder
        with np.load(f"{h0.scratch_source}/out.npz") as result:
            resumed, workers = tuple(int(v) for v in result["resumed"]), int(result["workers"])
    for run in runs[:2]:
        assert run.proc.returncode == 0, run.output[-5000:]
    print(f"host 2's link down {down - started:.1f} s after the start, newest checkpoint then: {seen.stdout.strip()}")
    for node, run in enumerate(runs[:2]):
        agreed = re.search(r"membership round (\d+) agreed in ([\d.]+) s: going on with 2 of 3 host\(s\) "
                           rf"\({re.escape(h0.addr)}:{PORT}, {re.escape(h1.addr)}:{PORT}\); lost: node 2 "
                           rf"\({re.escape(h2.addr)}:{PORT}\); this host is now node {node}", run.output)
        assert agreed, run.output[-5000:]
        failed, why = run.when(r"restarting all 1 worker|stopping this host's 1 worker\(s\) to join it")
        print(f"host {node}: workers stopped {failed - down:.1f} s after the link went down ({why[:160]}...); round "
              f"{agreed.group(1)} agreed {run.when('membership round')[0] - down:.1f} s after it (the agreement took "
              f"{agreed.group(2)} s); finished {run.ended - down:.1f} s after it")
    assert workers == 2, workers
    global_step = resumed[0] * 10 + resumed[1]  # 10 steps an epoch
    assert 12 <= global_step < 30, resumed  # from the bucket's newest checkpoint, after the link went down
    print(f"the 2 hosts left resumed at {resumed[0]}:{resumed[1]} (global step {global_step}) on {workers} workers")
    lost = outputs[2]
    assert runs[2].proc.returncode != 0, lost[-5000:]
    assert re.search(r"tfscale launch: 1 of 3 host\(s\) remain .*lost: .*MIN = 2", lost), lost[-5000:]
    print(f"host 2 exited {runs[2].proc.returncode} {runs[2].ended - down:.1f} s after its link went down:",
          *[line for line in lost.splitlines() if line.startswith("tfscale launch:")])
    for a, b in zip(final, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(final, reference))
    print(f"rank 0's final weights vs one uninterrupted process: largest difference {diff:.1e}")
