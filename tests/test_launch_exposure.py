"""A local launch exposes nothing beyond the machine with `--private-network`, and says what it exposes without.

The two TensorFlow tests run `tfscale launch -n 2` inside namespace host 0 (tests/cluster/netns.py) and knock on
the workers' ports from host 1: without --private-network the connection is accepted (today's exposure, which
the launch's one warning line names), with it nothing outside the workers' own namespace reaches them (host 1,
nor host 0 itself) while the two workers still build one cluster and run a collective together. The others
start no TensorFlow: the warning is one line per launch (not per worker or restart) and absent under --hosts,
the workers of a private launch see only loopback (also where only a user namespace is allowed), and a system
that allows no namespace is a ConfigError before anything starts.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

import procs
from require import skip_or_fail
from tests.cluster import netns

# Builds the multi-worker strategy (its gRPC server listens from then on), says READY with its port, waits
# for the file argv[1], then runs one collective over both workers and prints its sum and the replicas.
WORKER = """
import json, os, sys, time
import tfscale as ts
scale = ts.Scale("multi_worker")
import tensorflow as tf
config = json.loads(os.environ["TF_CONFIG"])
print("READY", config["cluster"]["worker"][config["task"]["index"]].rsplit(":", 1)[1], flush=True)
deadline = time.monotonic() + 300
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.1)
total = scale.strategy.reduce(tf.distribute.ReduceOp.SUM, scale.strategy.run(lambda: tf.constant(1.0)), axis=None)
print(f"OK replicas={scale.num_replicas} sum={float(total):g}", flush=True)
"""
# Connects to argv[1] at each port of argv[2:]; prints "PORT open" or "PORT <the error>".
KNOCK = """
import socket, sys
for port in sys.argv[2:]:
    try:
        socket.create_connection((sys.argv[1], int(port)), timeout=10).close()
        print(port, "open")
    except OSError as e:
        print(port, type(e).__name__)
"""
WARNING = re.compile(r"listens? on every network interface of this machine \(ports? ([\d, ]+)\).*--private-network "
                     r"keeps them on this machine")
DEADLINE = 300  # seconds for a launch of 2 TensorFlow workers on a busy 2-core machine (never asserted on)


class Launch:
    """`python -m tfscale launch ARGS` started in `host` (or here), its output lines collected as they come."""

    def __init__(self, args: list[str], host: netns.Host | None = None, prefix: tuple[str, ...] = ()):
        argv = [*prefix, sys.executable, "-m", "tfscale", "launch", *args]
        kw = dict(env=procs.base_env(), cwd=str(procs.REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                  text=True)
        self.proc = host.popen(argv, **kw) if host else subprocess.Popen(argv, start_new_session=True, **kw)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, found, what: str, deadline: float = DEADLINE):
        """The first truthy `found()`, polled until `deadline` seconds pass (then the test fails, with output)."""
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            value = found()
            if value:
                return value
            assert self.proc.poll() is None or self._reader.is_alive(), f"launch ended before {what}:\n{self.text}"
            time.sleep(0.3)
        raise AssertionError(f"no {what} within {deadline} s:\n{self.text[-4000:]}")

    def finish(self, timeout: float = DEADLINE) -> str:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"the launcher did not exit within {timeout} s:\n{self.text[-4000:]}")
        self._reader.join(timeout=10)
        return self.text


def warned_ports(text: str) -> list[list[int]]:
    """The ports named by each exposure warning line of a launch's output."""
    return [[int(p) for p in m.group(1).split(", ")] for m in map(WARNING.search, text.splitlines()) if m]


def ready_ports(launch: Launch) -> list[int] | None:
    """Both workers' ports once both said READY, else None."""
    ports = [int(line.split()[-1]) for line in launch.lines if re.match(r"\[w\d\] READY \d+$", line)]
    return sorted(ports) if len(ports) == 2 else None


def listening(host: netns.Host, ports: list[int]) -> dict[int, str]:
    """{port: local address} of the TCP sockets listening on `ports` in `host`'s network (`ss -ltn`)."""
    found = {}
    for line in host.run(["ss", "-Hltn"], timeout=30).stdout.splitlines():
        address, _, port = line.split()[3].rpartition(":")
        if port.isdigit() and int(port) in ports:
            found[int(port)] = address
    return found


def knock(host: netns.Host, address: str, ports: list[int]) -> dict[int, str]:
    """{port: "open" or the connection's error} for a TCP connection from `host` to `address`."""
    done = host.run([sys.executable, "-c", KNOCK, address, *map(str, ports)], timeout=60)
    assert done.returncode == 0, done.stderr
    return {int(port): result for port, result in (line.split() for line in done.stdout.splitlines())}


def worked_together(text: str) -> None:
    for rank in (0, 1):
        assert f"[w{rank}] OK replicas=2 sum=2" in text, text[-4000:]


@pytest.fixture
def hosts():
    if reason := netns.skip_reason():
        skip_or_fail(reason)
    with netns.hosts(2) as made:
        yield made


def _needs_root_and(*tools: str) -> None:
    if os.geteuid() != 0:
        skip_or_fail("the namespace variants of this test run as root (CI runs as root)")
    for tool in tools:
        if shutil.which(tool) is None:
            skip_or_fail(f"`{tool}` is not installed (apt-get install util-linux)")


@pytest.mark.slow
def test_a_local_launch_is_reachable_from_another_host_at_the_ports_its_one_warning_names(hosts, tmp_path):
    h0, h1 = hosts
    go = tmp_path / "go"
    launch = Launch(["-n", "2", "--timeout", str(DEADLINE), "--", sys.executable, "-c", WORKER, str(go)], h0)
    named = launch.wait_for(lambda: warned_ports(launch.text), "exposure warning")
    assert len(named) == 1, launch.text
    ports = sorted(named[0])
    assert launch.wait_for(lambda: ready_ports(launch), "READY from both workers") == ports
    seen = launch.wait_for(lambda: (found := listening(h0, ports)) and len(found) == 2 and found, "listening ports")
    assert all(address in ("*", "[::]", "0.0.0.0") for address in seen.values()), seen
    reached = knock(h1, h0.addr, ports)
    go.touch()
    text = launch.finish()
    assert launch.proc.returncode == 0, text[-4000:]
    assert reached == {port: "open" for port in ports}, reached
    worked_together(text)
    assert len(warned_ports(text)) == 1, text
    print(f"\nwithout --private-network: host 0 listens on {seen}; from host 1: {reached}")


@pytest.mark.slow
def test_with_private_network_no_other_host_reaches_the_workers_which_still_train_together(hosts, tmp_path):
    h0, h1 = hosts
    go = tmp_path / "go"
    launch = Launch(["-n", "2", "--private-network", "--timeout", str(DEADLINE), "--", sys.executable, "-c",
                     WORKER, str(go)], h0)
    ports = launch.wait_for(lambda: ready_ports(launch), "READY from both workers")
    seen = listening(h0, ports)
    from_h1 = knock(h1, h0.addr, ports)
    from_h0 = {address: knock(h0, address, ports) for address in (h0.addr, "127.0.0.1")}
    go.touch()
    text = launch.finish()
    assert launch.proc.returncode == 0, text[-4000:]
    worked_together(text)
    assert not warned_ports(text), text
    assert seen == {}, f"host 0's own network shows the workers' ports listening: {seen}"
    assert "open" not in from_h1.values(), from_h1
    for address, reached in from_h0.items():
        assert "open" not in reached.values(), f"host 0 outside the workers' namespace reached {address}: {reached}"
    print(f"\nwith --private-network: host 0 listens on none of {ports}; from host 1: {from_h1}; "
          f"from host 0: {from_h0}")


# Each worker prints its own port; worker 0 fails on the first start, so the group restarts once.
PORT_THEN_FAIL_ONCE = """
import json, os, sys
config = json.loads(os.environ["TF_CONFIG"])
print("PORT", config["cluster"]["worker"][config["task"]["index"]].rsplit(":", 1)[1])
sys.exit(1 if os.environ["TFSCALE_RESTART"] == "0" and config["task"]["index"] == 0 else 0)
"""


def test_the_warning_is_one_line_per_launch_naming_every_worker_port_not_one_per_worker_or_restart():
    launch = Launch(["-n", "2", "--max-restarts", "1", "--timeout", "120", "--", sys.executable, "-c",
                     PORT_THEN_FAIL_ONCE])
    text = launch.finish(180)
    assert launch.proc.returncode == 0, text
    assert "restart 1 of 1" in text, text
    ports = sorted({int(line.split()[-1]) for line in text.splitlines() if re.match(r"\[w\d\] PORT \d+$", line)})
    assert len(ports) == 2, text
    assert [sorted(named) for named in warned_ports(text)] == [ports], text  # one line, every port (any order)


def test_a_hosts_launch_has_no_local_warning_and_refuses_private_network():
    hosts = f"127.0.0.1:{procs.free_ports(1)[0]}"
    launch = Launch(["--nnodes", "1", "--node-rank", "0", "--hosts", hosts, "--", sys.executable, "-c",
                     "print('STARTED')"])
    text = launch.finish(120)
    assert launch.proc.returncode == 0 and "[w0] STARTED" in text, text
    assert not warned_ports(text) and "private-network" not in text, text
    refused = Launch(["--nnodes", "1", "--node-rank", "0", "--hosts", hosts, "--private-network", "--",
                      sys.executable, "-c", "print('STARTED')"])
    text = refused.finish(120)
    assert refused.proc.returncode == 2, text
    assert "--private-network with the hosts launcher" in text and "STARTED" not in text, text


SEE_NETWORK = "import os, socket; print('NET', socket.if_nameindex(), 'UID', os.getuid())"


@pytest.mark.parametrize("how", ["root", "user-namespace"])
def test_private_network_workers_see_only_loopback(how):
    """root: a network namespace; user-namespace: as root without CAP_SYS_ADMIN (most containers), where only
    an unprivileged user namespace can hold one: the workers keep their user id."""
    _needs_root_and("setpriv")
    prefix = ("setpriv", "--bounding-set=-sys_admin") if how == "user-namespace" else ()
    launch = Launch(["-n", "2", "--private-network", "--timeout", "120", "--", sys.executable, "-c", SEE_NETWORK],
                    prefix=prefix)
    text = launch.finish(180)
    assert launch.proc.returncode == 0, text
    for rank in (0, 1):
        assert f"[w{rank}] NET [(1, 'lo')] UID 0" in text, text
    assert not warned_ports(text), text


def test_private_network_where_the_system_allows_no_namespace_is_a_config_error_before_any_worker_starts():
    """Inside a user namespace that maps no user (`unshare --user`): neither a network namespace (no
    CAP_SYS_ADMIN there) nor a nested user namespace (an unmapped user) can be made, as for a user on a system
    without user namespaces."""
    _needs_root_and("unshare")
    launch = Launch(["-n", "1", "--private-network", "--", sys.executable, "-c", "print('STARTED')"],
                    prefix=("unshare", "--user"))
    text = launch.finish(120)
    assert launch.proc.returncode == 2, text
    assert "--private-network: this system lets this user make no network namespace" in text, text
    assert "user namespaces" in text and "STARTED" not in text, text
    print(f"\n{text}")
