"""Hosts for tests: network namespaces joined by a bridge, on a private /24 that exists only inside them.

    from require import skip_or_fail       # tests/require.py: a skip here, a failure in CI
    from tests.cluster import netns

    if netns.skip_reason():
        skip_or_fail(netns.skip_reason())
    with netns.hosts(2) as (h0, h1):
        server = h0.popen(["python", "-m", "http.server", "--bind", h0.addr, "8000"])
        h1.run(["curl", f"http://{h0.addr}:8000/"], timeout=30)
        h1.link_down()        # its cable pulled: nothing reaches it, nothing leaves it
    with netns.hosts(2, hostnames=True) as (h0, h1):
        h1.run(["getent", "hosts", h0.hostname])    # h0's own name (`hostname` on h0 says it) -> h0.addr

Layout of one call (NAME = "tfs<pid>c<counter>", unique per call, so concurrent pytest workers, and calls from
threads of one process, never clash):

- a "switch" namespace NAMEsw holding a bridge `br0`, so the bridge and the /24 have no address in the
  root namespace (nothing of it is reachable from, or routed through, this machine's own network);
- per host a namespace NAMEh<i> with `lo` up and `eth0` at 10.213.<X>.<i + 1>/24, the other end of its veth
  pair (`h<i>`) on the bridge; `link_down` sets that end down (a pulled cable);
- with ``private_scratch=True`` each host's commands run in a private mount namespace (`unshare --mount
  --propagation private`) where a folder of its own (/tmp/NAME-scratch.h<i>) is bind-mounted onto one common
  path (/tmp/NAME-scratch): the same path, different contents on each host (hosts that share no disk);
- with ``hostnames=True`` each host has a name of its own, as real machines have: its commands run in a UTS
  namespace of their own (`unshare --uts`) whose hostname is `Host.hostname` (NAMEh<i>, the namespace's name),
  and in a private mount namespace where /etc/hosts is this call's file /tmp/NAME-hosts, which names every
  host's address: on every host each name (its own too) resolves to that host's address. Without it the
  hosts share this machine's hostname, which resolves to what this machine's /etc/hosts says (a loopback
  address here), as on machines whose hostname resolves to 127.0.0.1 or 127.0.1.1.

Everything is removed on exit, also on an exception or KeyboardInterrupt: the process groups started with
`Host.popen`, then every process still in a host namespace, the namespaces (their veths go with them), the
scratch folders and the hosts file. Namespaces left by a process that was killed with SIGKILL are removed by the
next call.
Commands are entered with `nsenter --net=` (not `ip netns exec`, which remounts /sys).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence

PREFIX = "tfs"
_counter = itertools.count()
_NAME = re.compile(rf"^{PREFIX}(\d+)c(\d+)(sw|h\d+)$")


def skip_reason() -> str | None:
    """Why hosts cannot be made here (not root, no `ip`, `nsenter` or `unshare`), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    for tool in ("ip", "nsenter", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install iproute2 util-linux)"
    probe = f"{PREFIX}{os.getpid()}probe{next(_counter)}"  # one per call: calls may run side by side (threads)
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` fails here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


@dataclasses.dataclass
class Host:
    """One host: a network namespace with its own address (see the module docstring)."""

    index: int
    name: str          # the namespace's name
    addr: str          # its IPv4 address in the private /24
    switch: str        # the switch namespace, holding the other end of this host's link
    scratch: str | None = None       # the common path of its private folder (private_scratch), else None
    hostname: str | None = None      # its own hostname (hostnames=True), else None: this machine's
    hosts_file: str | None = None    # the file its /etc/hosts shows (hostnames=True)
    scratch_source: str | None = None  # where that folder really is (seen from the root namespace)
    _procs: list[subprocess.Popen] = dataclasses.field(default_factory=list, repr=False)

    @property
    def netns(self) -> str:
        return f"/run/netns/{self.name}"

    def argv(self, cmd: Sequence[str]) -> list[str]:
        """`cmd` run inside this host (its network; its private scratch folder and its own hostname when it has
        them)."""
        argv = ["nsenter", f"--net={self.netns}"]
        steps: list[str] = []
        args: list[str] = []
        if self.scratch:
            steps.append('mount --bind "$1" "$2" && shift 2')
            args += [self.scratch_source, self.scratch]
        if self.hostname:
            steps.append('hostname "$1" && mount --bind "$2" /etc/hosts && shift 2')
            args += [self.hostname, self.hosts_file]
        if steps:
            argv += ["unshare", "--mount", "--propagation", "private", *(["--uts"] if self.hostname else []),
                     "sh", "-c", " && ".join(steps + ['exec "$@"']), "sh", *args]
        return argv + [os.fspath(c) for c in cmd]

    def popen(self, cmd: Sequence[str], env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
        """Starts `cmd` in this host, in a process group of its own (killed when the hosts are removed)."""
        kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.argv(cmd), env=env, **kw)
        self._procs.append(proc)
        return proc

    def run(self, cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float = 60,
            **kw) -> subprocess.CompletedProcess:
        """Runs `cmd` in this host; output captured as text unless `stdout`/`stderr` say otherwise.

        Raises subprocess.TimeoutExpired after `timeout` seconds (its whole process group killed first).
        """
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        proc = self.popen(cmd, env=env, **kw)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def link_down(self) -> None:
        """Pulls this host's cable: its end on the bridge goes down, so nothing reaches it or leaves it."""
        _ip("-n", self.switch, "link", "set", f"h{self.index}", "down")

    def link_up(self, peers: Sequence[Host] = ()) -> None:
        """Plugs the cable back in, as a re-plugged cable comes back, and returns once it carries traffic.

        The kernel keeps the neighbour entries that failed while the link was down (state FAILED): the next
        connection to such an address fails at once with EHOSTUNREACH ("No route to host") until the entry is
        probed again. A re-plugged cable on a real machine gets a carrier event and gratuitous ARP from
        network managers; here the FAILED entries of this host, and this host's entries in `peers`, are flushed,
        and the call waits until both ends of the link report a carrier (LOWER_UP).
        """
        _ip("-n", self.switch, "link", "set", f"h{self.index}", "up")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ends = [_ip("-n", self.switch, "-o", "link", "show", f"h{self.index}", check=False).stdout,
                    _ip("-n", self.name, "-o", "link", "show", "eth0", check=False).stdout]
            if all("LOWER_UP" in end for end in ends):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"host {self.index}: its link did not come back up within 10 s")
        _ip("-n", self.name, "neigh", "flush", "dev", "eth0", check=False)
        for peer in peers:
            _ip("-n", peer.name, "neigh", "flush", "to", self.addr, check=False)

    def pids(self) -> list[int]:
        """Every process in this host's network namespace."""
        done = _ip("netns", "pids", self.name, check=False)
        return [int(p) for p in done.stdout.split() if p.isdigit()]


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILLs the process group of `proc` (started with its own session) and reaps it."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _subnet() -> int:
    """X of 10.213.X.0/24: any value works (each call's namespaces are isolated); varied for readability."""
    return 16 + (os.getpid() * 7 + next(_counter)) % 224


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale() -> None:
    """Namespaces of ours whose maker is gone (it was killed with SIGKILL), and their scratch folders."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    for line in listed:
        name = line.split(" ")[0]
        match = _NAME.match(name)
        if match and not _alive(int(match.group(1))):
            _remove_namespace(name)
            base = f"/tmp/{name[:-len(match.group(3))]}-scratch"
            for path in [base] + [f"{base}.h{i}" for i in range(64)]:
                shutil.rmtree(path, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"/tmp/{name[:-len(match.group(3))]}-hosts")


def _remove_namespace(name: str) -> None:
    done = _ip("netns", "pids", name, check=False)
    for pid in (int(p) for p in done.stdout.split() if p.isdigit()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _ip("netns", "pids", name, check=False).stdout.split() and time.monotonic() < deadline:
        time.sleep(0.05)
    _ip("netns", "del", name, check=False)


def _new_base() -> str:
    """A name no namespace has yet (pid + counter; checked, since this module may be imported twice)."""
    existing = set(_ip("netns", "list", check=False).stdout.split())
    while True:
        base = f"{PREFIX}{os.getpid()}c{next(_counter)}"
        if f"{base}sw" not in existing:
            return base


@contextlib.contextmanager
def hosts(n: int, private_scratch: bool = False, hostnames: bool = False) -> Iterator[list[Host]]:
    """`n` hosts on one bridge, removed on exit (processes in them killed). See the module docstring.

    Args:
        n: how many hosts.
        private_scratch: each host sees a folder of its own at one common path (`Host.scratch`).
        hostnames: each host has a hostname of its own that resolves, on every host, to its address.
    """
    reason = skip_reason()
    if reason:
        raise RuntimeError(f"cannot make hosts here: {reason}")
    _remove_stale()
    base = _new_base()
    switch = f"{base}sw"
    subnet = _subnet()
    made: list[str] = []
    members: list[Host] = []
    scratch = f"/tmp/{base}-scratch" if private_scratch else None
    hosts_file = f"/tmp/{base}-hosts" if hostnames else None
    try:
        _ip("netns", "add", switch)
        made.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        if scratch:
            os.makedirs(scratch)
        for i in range(n):
            name = f"{base}h{i}"
            _ip("netns", "add", name)
            made.append(name)
            _ip("-n", switch, "link", "add", f"h{i}", "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("-n", switch, "link", "set", f"h{i}", "master", "br0")
            _ip("-n", switch, "link", "set", f"h{i}", "up")
            addr = f"10.213.{subnet}.{i + 1}"
            _ip("-n", name, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")
            host = Host(i, name, addr, switch)
            if scratch:
                host.scratch, host.scratch_source = scratch, f"{scratch}.h{i}"
                os.makedirs(host.scratch_source)
            members.append(host)
        if hosts_file:
            _write_hosts_file(hosts_file, members)
        yield members
    finally:
        for host in members:
            for proc in host._procs:
                kill_group(proc)
        for name in reversed(made):
            _remove_namespace(name)
        if scratch:
            for path in [scratch] + [h.scratch_source for h in members if h.scratch_source]:
                shutil.rmtree(path, ignore_errors=True)
        if hosts_file:
            with contextlib.suppress(FileNotFoundError):
                os.remove(hosts_file)


def _write_hosts_file(path: str, members: list[Host]) -> None:
    """The /etc/hosts every host sees: localhost, then each host's name at its address (sets `Host.hostname`)."""
    lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    for host in members:
        host.hostname, host.hosts_file = host.name, path
        lines.append(f"{host.addr} {host.hostname}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def ours() -> list[str]:
    """The namespaces this process made that still exist (none once every `hosts` block has exited)."""
    mine = f"{PREFIX}{os.getpid()}c"
    return [line.split(" ")[0] for line in _ip("netns", "list", check=False).stdout.splitlines()
            if line.startswith(mine)]
