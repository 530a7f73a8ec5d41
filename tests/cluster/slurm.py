"""A real Slurm cluster for tests: Debian's slurm-wlm and munge, private to one temporary folder.

    from require import skip_or_fail       # tests/require.py: a skip here, a failure in CI
    from tests.cluster import netns, slurm

    if slurm.skip_reason():
        skip_or_fail(slurm.skip_reason())
    with netns.hosts(2) as hs, slurm.cluster(hs) as cl:      # two nodes, one per host (namespace)
        done = cl.run(["srun", "-N", "2", "-n", "4", "hostname"], timeout=60)
    with slurm.cluster() as cl:                              # one node on 127.0.0.1, no namespace
        job = cl.sbatch(["script.sbatch"])

What a cluster is made of, all under one temporary folder (nothing under /etc/slurm, /etc/munge or /run/munge):

- munged with its own key, socket, pid, log and seed files; slurm.conf names its socket (AuthInfo=socket=...);
- slurm.conf (SLURM_CONF=<folder>/slurm.conf for every daemon and every client), an empty plugstack.conf, the
  controller's state folder, and per node (%n) its spool folder, pid and log file;
- slurmctld, in host 0 (on 127.0.0.1 for one node without hosts), and one slurmd per node (`slurmd -N hI`);
- with hosts, per node a hosts file naming each node (h0, h1, ...) with its namespace address (and the machine's
  name with that node's own address, which slurmd binds), bind-mounted onto
  /etc/hosts in a private mount namespace for every daemon and client: node names resolve as on a real cluster
  (TF_CONFIG names the nodes of SLURM_STEP_NODELIST), and nothing outside sees it.

A requeued job may start again once its step credentials have expired: 10 s here (cred_expire), Slurm's
default is 120 s. Daemons bind only their own addresses (CommunicationParameters=NoInAddrAny): with hosts, the namespaces'
addresses; without, 127.0.0.1 on ports chosen free. Clients (srun, sbatch, scancel, squeue, scontrol) run in
host 0 where there are hosts (the root namespace has no route to them), else here.

On exit, also on an exception: every job is cancelled, the daemons are stopped, every process that carries the
cluster's SLURM_CONF in its environment (slurmstepd, job tasks) is killed, and the folder is removed. The
packages are installed with apt-get when missing (as root; `skip_reason` says why not, where not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from procs import free_ports

from tests.cluster.netns import kill_group

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("srun", "sbatch", "scancel", "squeue", "scontrol", "sinfo")
PACKAGES = ("slurm-wlm", "munge")
_installed: str | None = None  # None: not tried yet; "": present; else why the install failed


def missing() -> list[str]:
    return [tool for tool in DAEMONS + CLIENTS if shutil.which(tool) is None]


def skip_reason() -> str | None:
    """Why a Slurm cluster cannot be started here (installing it first where possible), or None."""
    global _installed
    if os.geteuid() != 0:
        return "a test Slurm cluster needs root (SlurmUser=root; CI runs as root)"
    if not missing():
        return None
    if _installed is None:
        _installed = install()
    return _installed or None


def install() -> str:
    """apt-get installs slurm-wlm and munge; returns "" when done, else why not."""
    if shutil.which("apt-get") is None:
        return f"Slurm is not installed ({', '.join(missing())} missing) and there is no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", *PACKAGES]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:  # stale package lists: update them once
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or missing():
        return f"`apt-get install {' '.join(PACKAGES)}` failed: {(done.stderr or done.stdout)[-500:]}"
    return ""


@dataclasses.dataclass
class Cluster:
    """A running cluster: run its clients with `run`/`popen`, read its daemons' logs with `logs`."""

    folder: Path
    nodes: list[str]           # node names (h0, h1, ... with hosts; "localhost" without)
    addresses: list[str]       # each node's address
    env: dict[str, str]        # what every client and daemon needs (SLURM_CONF, the cluster's marker)
    hosts: list | None         # the netns hosts, or None
    _daemons: list[subprocess.Popen] = dataclasses.field(default_factory=list, repr=False)

    @property
    def conf(self) -> Path:
        return self.folder / "slurm.conf"

    def argv(self, cmd: Sequence[str], node: int = 0) -> list[str]:
        """`cmd` as it runs on `node` (its namespace and /etc/hosts; as is without hosts)."""
        cmd = [os.fspath(c) for c in cmd]
        if self.hosts is None:
            return cmd
        return self.hosts[node].argv(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                                      'mount --bind "$1" /etc/hosts && shift && exec "$@"', "sh",
                                      str(self.folder / f"hosts.{self.nodes[node]}"), *cmd])

    def popen(self, cmd: Sequence[str], env: dict[str, str] | None = None, node: int = 0,
              **kw) -> subprocess.Popen:
        """Starts a client (or any command) on `node`, in its own session, with the cluster's variables."""
        kw.setdefault("start_new_session", True)
        return subprocess.Popen(self.argv(cmd, node), env={**(env or os.environ), **self.env}, **kw)

    def run(self, cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float = 60, check: bool = True,
            node: int = 0) -> subprocess.CompletedProcess:
        """Runs a client to its end (output captured as text); killed, then raises, after `timeout` seconds."""
        proc = self.popen(cmd, env, node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            out, err = proc.communicate()
            raise AssertionError(f"{' '.join(cmd)} timed out after {timeout} s:\n{out[-3000:]}\n{err[-3000:]}\n"
                                 f"{self.logs()}") from None
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-3000:]}\n{err[-3000:]}\n"
                                 f"{self.logs()}")
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)

    def sbatch(self, args: Sequence[str], env: dict[str, str] | None = None) -> int:
        """Submits a batch job; returns its id."""
        done = self.run(["sbatch", "--parsable", *args], env=env, timeout=30)
        return int(done.stdout.strip().split(";")[0])

    def job_state(self, job: int) -> str:
        """The job's state ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", ...)."""
        done = self.run(["scontrol", "-o", "show", "job", str(job)], timeout=30, check=False)
        for field in done.stdout.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
        return "UNKNOWN"

    def wait_job(self, job: int, states: Sequence[str], timeout: float) -> str:
        """Waits until the job is in one of `states`; returns it (AssertionError with the logs on timeout)."""
        deadline = time.monotonic() + timeout
        state = self.job_state(job)
        while state not in states:
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} still {state} after {timeout} s (waiting for {states})\n"
                                     f"{self.logs()}")
            time.sleep(0.3)
            state = self.job_state(job)
        return state

    def logs(self) -> str:
        """The end of each daemon's log (for failure messages)."""
        parts = []
        for path in sorted(self.folder.rglob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.relative_to(self.folder)}\n{text[-2000:]}")
        return "\n".join(parts)


RESERVED_PORTS = "31000-31099"  # what `srun --resv-ports` reserves ports from (SLURM_STEP_RESV_PORTS)


def _slurm_conf(folder: Path, nodes: list[str], addresses: list[str], ports: list[int], cpus: int) -> str:
    node_lines = "\n".join(f"NodeName={n} NodeAddr={a} CPUs={cpus} State=UNKNOWN" for n, a in zip(nodes, addresses))
    return f"""\
ClusterName=tfscale
SlurmctldHost={socket.gethostname()}({addresses[0]})
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge/munge.socket,cred_expire=10
CommunicationParameters=NoInAddrAny
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/%n/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/%n/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/%n/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig={folder}/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
MpiParams=ports={RESERVED_PORTS}
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
InactiveLimit=0
MinJobAge=600
{node_lines}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _start_munge(folder: Path, env: dict[str, str]) -> subprocess.Popen:
    munge = folder / "munge"
    munge.mkdir(mode=0o700)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    proc = subprocess.Popen(["munged", "--foreground", "--force", f"--socket={munge}/munge.socket",
                             f"--key-file={key}", f"--pid-file={munge}/munged.pid", f"--log-file={folder}/munged.log",
                             f"--seed-file={munge}/munged.seed"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not (munge / "munge.socket").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("munged did not start:\n" + _tail(folder / "munged.log"))
        time.sleep(0.05)
    return proc


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else f"({path} not written)"


def _wait_idle(cl: Cluster, timeout: float) -> None:
    """Until every node has registered with the controller and is idle."""
    deadline = time.monotonic() + timeout
    while True:
        done = cl.run(["sinfo", "-h", "-N", "-o", "%N %t"], timeout=30, check=False)
        states = dict(line.split() for line in done.stdout.splitlines() if len(line.split()) == 2)
        if all(states.get(n) == "idle" for n in cl.nodes):
            return
        for proc in cl._daemons:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[-1]} exited {proc.returncode} while the cluster started:\n{cl.logs()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the nodes are not idle after {timeout} s ({states}; {done.stderr.strip()}):\n"
                               f"{cl.logs()}")
        time.sleep(0.2)


@contextlib.contextmanager
def cluster(hosts: list | None = None, *, cpus: int = 2, start_timeout: float = 60) -> Iterator[Cluster]:
    """A running Slurm cluster: one node per host of `hosts` (netns.hosts), or one node on 127.0.0.1.

    Raises RuntimeError where it cannot run (call `skip_reason` first) or a daemon does not come up.
    """
    reason = skip_reason()
    if reason:
        raise RuntimeError(f"cannot start Slurm here: {reason}")
    folder = Path(tempfile.mkdtemp(prefix="tfscale-slurm-"))
    if hosts:
        nodes, addresses = [f"h{i}" for i in range(len(hosts))], [h.addr for h in hosts]
        ports = [6817, 6818]  # fresh namespaces: Slurm's own ports are free there
    else:
        nodes, addresses, ports = ["localhost"], ["127.0.0.1"], free_ports(2)
    env = {"SLURM_CONF": str(folder / "slurm.conf"), "TFSCALE_TEST_SLURM": str(folder)}
    cl = Cluster(folder, nodes, addresses, env, list(hosts) if hosts else None)
    try:
        (folder / "state").mkdir()
        for node in nodes:
            (folder / node / "spool").mkdir(parents=True)
        (folder / "plugstack.conf").write_text("")
        for node, address in zip(nodes, addresses):  # each host knows itself by the machine's name too
            (folder / f"hosts.{node}").write_text(f"127.0.0.1 localhost\n{address} {socket.gethostname()}\n" + "".join(
                f"{a} {n}\n" for n, a in zip(nodes, addresses)))
        cl.conf.write_text(_slurm_conf(folder, nodes, addresses, ports, cpus))
        daemon_env = {**os.environ, **env}
        cl._daemons.append(_start_munge(folder, daemon_env))
        cl._daemons.append(cl.popen(["slurmctld", "-D", "-c", "-i"], env=daemon_env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT))
        for i, node in enumerate(nodes):
            cl._daemons.append(cl.popen(["slurmd", "-D", "-c", "-N", node], env=daemon_env, node=i,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        _wait_idle(cl, start_timeout)
        yield cl
    finally:
        _stop(cl)


def _stop(cl: Cluster) -> None:
    if cl._daemons and cl._daemons[1:2] and cl._daemons[1].poll() is None:
        with contextlib.suppress(Exception):  # jobs first, so that slurmd ends their steps
            cl.run(["scancel", "--full", "--quiet", "--user=root"], timeout=15, check=False)
    for proc in reversed(cl._daemons):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in reversed(cl._daemons):
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        kill_group(proc)
    _kill_marked(cl.env["TFSCALE_TEST_SLURM"])
    shutil.rmtree(cl.folder, ignore_errors=True)


def marked(marker: str) -> list[int]:
    """Processes whose environment has TFSCALE_TEST_SLURM=marker: the daemons, slurmstepd, job tasks."""
    needle = f"TFSCALE_TEST_SLURM={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def _kill_marked(marker: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (pids := marked(marker)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
