"""A group of worker processes that live and die together.

`start_group` starts one process per `ProcessSpec`, each in its own process
group (so its children go with it, and a Ctrl-C at the terminal reaches only
the starter, which forwards it), streams each one's output line by line
with a ``[name]`` prefix (or into its own log file), and keeps its last lines.
`Group.wait` returns when every process has exited 0; when one exits non-zero
or is killed, it stops the others (SIGTERM, then SIGKILL after `grace`
seconds) and raises `WorkerFailure`, naming the worker and showing its last lines.

The grace is short (1 s) because a multi-worker process does not die on
SIGTERM: TensorFlow's and JAX's preemption notifiers catch it (to let a
preemption handler save a checkpoint), and with a dead peer there is nothing
left to save (tfscale's checkpoints are written to a temporary file and
renamed, and partial files are removed at the next start). Every second of
it is spent on each restart (scripts/soak.py: 3 s of a cycle's 8.9 s). A signal forwarded from
the starter (`forwarded_signals`) gets `signal_grace` (10 s) instead, for
that checkpoint; a second signal kills at once.

On Linux each process also gets SIGKILL if the thread that started it dies
(PR_SET_PDEATHSIG), so a launcher killed with SIGKILL leaves no workers behind:
start groups from a thread that outlives them (the main thread is best).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from tfscale import quiet
from tfscale.worker_env import PREEMPTED_EXIT
from tfscale.errors import ClusterError

log = logging.getLogger("tfscale")

POLL_SECONDS = 0.05


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """One process of a group.

    Attributes:
        argv: the command and its arguments.
        env: variables added to (overriding) the starter's environment.
        name: a short name for output prefixes and errors, e.g. "w0".
        log_path: write the output to this file instead of the group's output stream.
        cwd: working directory (default: the starter's).
        cpus: bind the process (and the threads it starts) to these cores; None: no binding.
        namespaces: open descriptors of namespaces (``/proc/PID/ns/*``) the process enters before it runs, in
            order (a user namespace before the network namespace it owns): `privatenet.PrivateNetwork`.
    """

    argv: Sequence[str]
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    name: str = ""
    log_path: str | None = None
    cwd: str | None = None
    cpus: tuple[int, ...] | None = None
    namespaces: tuple[int, ...] = ()


class WorkerFailure(ClusterError):
    """A process of a group exited non-zero or was killed; the others were stopped.

    Attributes:
        name: the failed process's name; index: its place in the group;
        returncode: its exit code (negative: the signal that killed it);
        tail: its last lines of output.
    """

    def __init__(self, name: str, index: int, returncode: int, tail: list[str], *, log_path: str | None = None,
                 stopped: Sequence[str] = (), host: str = "", unanswered: Sequence[str] = ()):
        self.name, self.index, self.returncode, self.tail = name, index, returncode, list(tail)
        self.log_path = log_path
        self.stopped = list(stopped)  # workers found stopped (SIGSTOP): peers that stopped answering
        self.host = host  # this worker's host, in a multi-host launch ("node 1, 10.0.0.2")
        self.unanswered = list(unanswered)  # other hosts' workers that no longer answer (`peers.Peers.explain`)
        killed = returncode == -signal.SIGKILL
        frozen = ""
        if self.stopped:
            frozen = (f"; worker(s) {', '.join(self.stopped)} had been stopped (SIGSTOP or SIGTSTP) and no longer "
                      f"answered {name}'s collectives")
        if self.stopped:
            fix = f"find what stopped {', '.join(self.stopped)} (a debugger, `kill -STOP`, Ctrl-Z), then launch again"
        elif self.unanswered:
            fix = ("see the launcher output on the host(s) named (a worker that died there says why), and check "
                   "that the hosts still reach each other")
        elif killed:
            fix = "a worker killed by SIGKILL was often out of memory (see `dmesg`)"
        elif returncode == PREEMPTED_EXIT:
            fix = ("nothing to correct: it saved a checkpoint on a preemption signal and stopped; start the job again "
                   "(or give --max-restarts) and it resumes at that step")
        else:
            fix = "correct the error shown in its last lines, then launch again"
        super().__init__(f"worker {self.label} {describe_exit(returncode)}{frozen}{self.peers_note}; the other "
                         "workers were stopped", where=f"worker {self.label}" + (f", log {log_path}" if log_path else ""),
                         fix=fix)

    @property
    def label(self) -> str:
        """The worker's name, with its host in a multi-host launch: "w1 (node 1, 10.0.0.2)"."""
        return f"{self.name} ({self.host})" if self.host else self.name

    @property
    def peers_note(self) -> str:
        """"; peer(s) that stopped answering: ..." when other hosts' workers no longer answer, else ""."""
        return f"; peer(s) that stopped answering: {', '.join(self.unanswered)}" if self.unanswered else ""

    def _render(self) -> str:
        shown = "\n".join(f"  [{self.name}] {line}" for line in self.tail) or "  (no output)"
        return f"{super()._render()}\nIts last lines:\n{shown}"

    @property
    def exit_code(self) -> int:
        """An exit code for the launcher: the worker's own, or 128 + the signal that killed it."""
        return self.returncode if self.returncode > 0 else 128 - self.returncode


class GroupTimeout(ClusterError):
    """The group did not finish in time; every process was stopped."""

    exit_code = 124  # as timeout(1)


class GroupInterrupted(ClusterError):
    """SIGINT/SIGTERM reached the starter; it was forwarded to every process, which were then stopped."""

    def __init__(self, sig: int):
        self.signal = sig
        super().__init__(f"interrupted by {signal.Signals(sig).name}; the workers were stopped",
                         where="the launcher")

    @property
    def exit_code(self) -> int:
        return 128 + self.signal


def _is_stopped(pid: int) -> bool:
    """The process is stopped by a signal (state T in /proc; False where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    if returncode == PREEMPTED_EXIT:
        return f"exited with code {returncode} (preempted: it saved a checkpoint and stopped, to be restarted)"
    return f"exited with code {returncode}"


def _child_setup(cpus: tuple[int, ...] | None = None, namespaces: tuple[int, ...] = ()):
    """Runs in each child before exec: its own process group, SIGKILL when its parent thread dies (Linux),
    its cores when `cpus` is given, and the `namespaces` it enters (``setns``; the descriptors are still open
    here: subprocess closes them after this runs).

    A process group, not a session: the child stays in the starter's session and
    so in its scheduling autogroup, where N workers share the CPU as one job.
    """
    libc = None
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            libc = None
    prctl = getattr(libc, "prctl", None)
    setns = getattr(libc, "setns", None)
    if namespaces and setns is None:
        raise ClusterError("this system has no setns(): workers cannot enter a namespace",
                           where="--private-network", fix="drop --private-network")
    pr_set_pdeathsig = 1

    def setup():
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(pr_set_pdeathsig, signal.SIGKILL)
        if cpus:
            os.sched_setaffinity(0, cpus)
        for fd in namespaces:
            if setns(fd, 0) != 0:
                raise OSError(ctypes.get_errno(), "setns")

    return setup


class _Pump(threading.Thread):
    """Copies one process's output, line by line, to a stream (prefixed) or a file; keeps the tail.

    Lines TensorFlow prints on every healthy start (`tfscale.quiet.is_noise`) are dropped, from the
    output and from the tail a failure shows.
    """

    def __init__(self, source: IO[bytes], name: str, sink: IO[str], lock: threading.Lock, tail: int,
                 prefix: bool):
        super().__init__(daemon=True, name=f"tfscale-output-{name}")
        self.source, self.sink, self.lock = source, sink, lock
        self.prefix = f"[{name}] " if prefix else ""
        self.tail: collections.deque[str] = collections.deque(maxlen=tail)
        self.quiet = not quiet.verbose()  # TFSCALE_VERBOSE=1 (tfscale -v) shows every line

    def run(self):
        for raw in iter(self.source.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            if self.quiet and quiet.is_noise(line):  # TensorFlow's start-up lines: not the run's output
                continue
            self.tail.append(line.rstrip("\r"))
            with self.lock:
                try:
                    self.sink.write(f"{self.prefix}{line}\n")
                    self.sink.flush()
                except (OSError, ValueError):  # the sink was closed: keep draining the pipe
                    pass
        self.source.close()


class Group:
    """Processes started together by `start_group`; stop them with `stop` or by leaving a `with` block."""

    def __init__(self, specs: Sequence[ProcessSpec], *, output: IO[str] | None = None, tail_lines: int = 20,
                 grace: float = 1.0, signal_grace: float = 10.0):
        self.specs = list(specs)
        self.grace, self.signal_grace = grace, signal_grace
        self._lock = threading.Lock()
        self._output = output
        self._files: list[IO[str]] = []
        self.procs: list[subprocess.Popen] = []
        self._pumps: list[_Pump] = []
        self.signalled: int | None = None
        self._exit_order: list[int] = []
        try:
            for i, spec in enumerate(self.specs):
                self._start(spec, i, tail_lines)
        except BaseException:
            self.stop()
            raise

    def _start(self, spec: ProcessSpec, index: int, tail_lines: int) -> None:
        name = spec.name or f"p{index}"
        env = {**os.environ, **spec.env}
        try:
            proc = subprocess.Popen(list(spec.argv), env=env, cwd=spec.cwd, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    preexec_fn=_child_setup(spec.cpus, spec.namespaces))
        except OSError as e:
            raise ClusterError(f"cannot start worker {name}: {e.strerror}", where=" ".join(spec.argv[:3]),
                               fix="check the command after `--` (is it installed and on PATH?)") from None
        except subprocess.SubprocessError as e:  # raised in `_child_setup`: setns refused
            raise ClusterError(f"cannot start worker {name}: it could not enter its namespaces ({e})",
                               where="--private-network", fix="drop --private-network") from None
        self.procs.append(proc)
        if spec.log_path:
            os.makedirs(os.path.dirname(os.path.abspath(spec.log_path)), exist_ok=True)
            sink = open(spec.log_path, "a", encoding="utf-8")
            self._files.append(sink)
        else:
            sink = self._output or sys.stdout
        pump = _Pump(proc.stdout, name, sink, self._lock, tail_lines, prefix=not spec.log_path)
        pump.start()
        self._pumps.append(pump)

    # ------------------------------------------------------------------ state

    def name(self, index: int) -> str:
        return self.specs[index].name or f"p{index}"

    def poll(self) -> list[int | None]:
        """Each process's exit code, or None while it runs."""
        codes = [p.poll() for p in self.procs]
        self._exit_order.extend(i for i, c in enumerate(codes) if c is not None and i not in self._exit_order)
        return codes

    def tail(self, index: int) -> list[str]:
        """The last lines process `index` wrote (complete once it has exited)."""
        self._pumps[index].join(timeout=2.0)
        return list(self._pumps[index].tail)

    def alive(self) -> list[int]:
        """PIDs of every process still alive in the group's process groups (workers and their children)."""
        pgids = {p.pid for p in self.procs}
        found = []
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[2]) in pgids and fields[0] != "Z":
                    found.append(int(entry))
        return found

    # ------------------------------------------------------------------ waiting

    def wait(self, timeout: float | None = None, *, check: Callable[[], None] | None = None,
             total: float | None = None) -> list[int]:
        """Waits until every process has exited 0, and returns their exit codes.

        `check` is called at each poll while the processes run; an exception it raises stops every
        process and propagates (an elastic launcher's `rendezvous.Rendezvous.check`: another host
        started a new membership). `total`: the whole time limit of which `timeout` is what remains
        (``--timeout``, across restarts), named in the GroupTimeout; default `timeout`.

        Raises:
            WorkerFailure: a process exited non-zero or was killed (the first one
                seen); the others were stopped first.
            GroupTimeout: `timeout` seconds passed; every process was stopped.
            GroupInterrupted: a signal was forwarded (`forwarded_signals`); the
                processes had `signal_grace` seconds to exit on their own, then were stopped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            codes = self.poll()
            if self.signalled is not None:
                self._wait_exit(self.signal_grace)
                self.stop()
                raise GroupInterrupted(self.signalled)
            failed = [i for i in self._exit_order if codes[i] != 0]  # in the order they were seen to exit
            if failed:
                first = failed[0]
                stopped = [self.name(i) for i, c in enumerate(codes) if c is None and _is_stopped(self.procs[i].pid)]
                self.stop()
                raise WorkerFailure(self.name(first), first, codes[first], self.tail(first),
                                    log_path=self.specs[first].log_path, stopped=stopped)
            if all(c == 0 for c in codes):
                self.stop()  # reaps children the workers left behind
                return codes
            if check is not None:
                try:
                    check()
                except BaseException:
                    self.stop()
                    raise
            if deadline is not None and time.monotonic() > deadline:
                running = [self.name(i) for i, c in enumerate(codes) if c is None]
                self.stop()
                raise GroupTimeout(f"the workers did not finish within {timeout if total is None else total:g} s; "
                                   f"still running: {', '.join(running)}", where="--timeout",
                                   fix="raise --timeout, or look for a worker waiting on a dead peer")
            time.sleep(POLL_SECONDS)

    def _wait_exit(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while any(p.poll() is None for p in self.procs) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)

    # ------------------------------------------------------------------ stopping

    def send_signal(self, sig: int) -> None:
        """Sends `sig` to every process group still running."""
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)

    def stop(self, grace: float | None = None) -> None:
        """Stops every process: SIGTERM, then SIGKILL after `grace` seconds; reaps all; closes log files."""
        self.send_signal(signal.SIGTERM)
        self.send_signal(signal.SIGCONT)  # a stopped process handles its SIGTERM only once it runs again
        self._wait_exit(self.grace if grace is None else grace)
        for proc in self.procs:  # the group too: children the worker left behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 5.0  # a SIGKILLed grandchild can take a moment to be gone
        while self.alive() and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        for pump in self._pumps:
            pump.join(timeout=2.0)
        for f in self._files:
            f.close()
        self._files = []

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_group(specs: Sequence[ProcessSpec], *, output: IO[str] | None = None, tail_lines: int = 20,
                grace: float = 1.0, signal_grace: float = 10.0) -> Group:
    """Starts one process per spec; see the module docstring for what the group guarantees.

    Args:
        specs: the processes, in rank order.
        output: where prefixed output goes (default: sys.stdout at the time of each write).
        tail_lines: lines of each process's output kept for error messages.
        grace: seconds between SIGTERM and SIGKILL when stopping.
        signal_grace: seconds the processes get to exit after a forwarded signal.

    Example:
        with start_group([ProcessSpec(["python", "train.py"], WorkerEnv(rank=r).to_environ(), f"w{r}")
                          for r in range(2)]) as group:
            group.wait(timeout=3600)
    """
    return Group(specs, output=output, tail_lines=tail_lines, grace=grace, signal_grace=signal_grace)


@contextlib.contextmanager
def forwarded_signals(group: Group, signals=(signal.SIGINT, signal.SIGTERM), passed=(signal.SIGUSR1,), *,
                      resend: bool = True):
    """Within the block, SIGINT/SIGTERM to this process go to the group (noted in `group.signalled`, which ends
    it), followed by SIGCONT so that a stopped process handles it within `signal_grace` too, and `passed`
    signals (SIGUSR1: "save a checkpoint, then exit", Slurm's ``--signal``) go to it and leave it running: the
    workers decide. A second SIGINT/SIGTERM kills the group at once.

    `resend=False` where the manager signals every process of the job itself (Slurm): the signals are caught
    and noted, not sent again, since a worker takes a copy for a second signal, on which tfscale's preemption
    handler gives up its checkpoint. Only the main thread can install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(sig, frame):
        if sig in passed:
            if resend:
                group.send_signal(sig)
            return
        if group.signalled is not None:
            group.send_signal(signal.SIGKILL)
            return
        group.signalled = sig
        if resend:
            group.send_signal(sig)
            group.send_signal(signal.SIGCONT)  # a stopped worker handles it now, within signal_grace

    previous = {sig: signal.signal(sig, forward) for sig in (*signals, *passed)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
