"""`tfscale tune --workers N`: a chief oracle and N tuner workers on this machine, one search.

Every process runs the same ``tfscale tune run.toml`` command; the launcher's
`start_group` gives each its keras-tuner role (KERASTUNER_TUNER_ID = chief,
tuner0, tuner1, ...; KERASTUNER_ORACLE_IP = 127.0.0.1; KERASTUNER_ORACLE_PORT
= a reserved free port). Unlike `tfscale launch`, a tuner that dies does not
stop the others: it is reported, its trial goes to the next tuner that asks,
and the search goes on. The search fails only when the chief fails or every
tuner has died.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import IO

from tfscale.cluster.launch.group import (GroupInterrupted, GroupTimeout, ProcessSpec, WorkerFailure, describe_exit,
                                          forwarded_signals, start_group)
from tfscale.cluster.launch.plan import thread_env
from tfscale.cluster.launch.ports import PortReservation
from tfscale.errors import ClusterError, ConfigError
from tfscale.tuning.control import CONTROL_ENV, announce_dead
from tfscale.tuning.results import TuneResult
from tfscale.tuning.run import load_run

log = logging.getLogger("tfscale")

POLL_SECONDS = 0.1
LINGER_SECONDS = 15.0  # after the chief is done, for tuners still starting up to leave on their own


@dataclasses.dataclass(frozen=True)
class DeadTuner:
    """A tuner worker that died during the search: its name, exit code and last lines."""

    name: str
    returncode: int
    tail: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.name} {describe_exit(self.returncode)}"


def run_workers(path: str, overrides: list[str], workers: int, *, verbose: bool = False,
                output: IO[str] | None = None, timeout: float | None = None) -> tuple[TuneResult, list[DeadTuner]]:
    """Runs the search of run file `path` with a chief oracle and `workers` tuner processes.

    Returns:
        The chief's results, and the tuners that died (the search went on without them).

    Raises:
        ConfigError: the run file is wrong (checked once, here, before any process starts).
        WorkerFailure: the chief failed; GroupTimeout: `timeout` passed;
        ClusterError: every tuner died.
    """
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}", where="--workers",
                          fix="give the number of tuner processes, e.g. --workers 2")
    spec = load_run(path, overrides)
    overrides = list(overrides)
    if spec.tune.overwrite:  # once, here: N processes deleting the project would race
        shutil.rmtree(spec.project_dir, ignore_errors=True)
        overrides.append("tune.overwrite=false")
    control = tempfile.mkdtemp(prefix="tfscale-tune-")
    argv = [sys.executable, "-m", "tfscale", *(["-v"] if verbose else []), "tune", path]
    for item in overrides:
        argv += ["--set", item]
    try:
        with PortReservation.free(1) as ports:
            env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(ports.ports[0]),
                   CONTROL_ENV: control, **_threads(workers)}
            specs = [ProcessSpec(argv, {**env, "KERASTUNER_TUNER_ID": "chief"}, "chief")]
            specs += [ProcessSpec(argv, {**env, "KERASTUNER_TUNER_ID": f"tuner{i}"}, f"tuner{i}")
                      for i in range(workers)]
            log.info("tune: chief oracle on 127.0.0.1:%d and %d tuner(s)", ports.ports[0], workers)
            with start_group(specs, output=output) as group, forwarded_signals(group):
                dead = _supervise(group, control, timeout)
    finally:
        shutil.rmtree(control, ignore_errors=True)
    return TuneResult.load(spec.project_dir), dead


def _threads(workers: int) -> dict[str, str]:
    """Each tuner's share of the cores, unless thread settings are already in the environment."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return {k: v for k, v in thread_env(max(1, cores // workers)).items() if k not in os.environ}


def _supervise(group, control: str, timeout: float | None) -> list[DeadTuner]:
    """Watches the group until the chief is done; a dying tuner is announced to the chief, not fatal."""
    deadline = None if timeout is None else time.monotonic() + timeout
    dead: list[DeadTuner] = []
    tuners = range(1, len(group.procs))
    while True:
        if group.signalled:  # Ctrl-C: forwarded to every process; the search continues on the next run
            group.stop()
            raise GroupInterrupted(group.signalled)
        codes = group.poll()
        for i in tuners:
            if codes[i] not in (None, 0) and group.name(i) not in {d.name for d in dead}:
                dead.append(DeadTuner(group.name(i), codes[i], tuple(group.tail(i))))
                announce_dead(control, group.name(i))
                log.warning("%s; the search goes on with the other tuners", dead[-1].describe())
        if codes[0] is not None:
            if codes[0] != 0:
                group.stop()
                raise WorkerFailure("chief", 0, codes[0], group.tail(0))
            _linger(group)
            return dead
        if len(dead) == len(tuners):
            group.stop()
            raise ClusterError(f"every tuner died ({'; '.join(d.describe() for d in dead)})",
                               where=f"{dead[-1].name}: " + " | ".join(dead[-1].tail[-3:]),
                               fix="read the tuners' output above; rerun the same command to continue the search")
        if deadline is not None and time.monotonic() > deadline:
            group.stop()
            raise GroupTimeout(f"the search did not finish within {timeout:g} s", where="--timeout",
                               fix="raise --timeout; rerun the same command to continue the search")
        time.sleep(POLL_SECONDS)


def _linger(group) -> None:
    """Gives tuners that are still running (a tuner slow to start) time to hear that the search is over."""
    deadline = time.monotonic() + LINGER_SECONDS
    while any(code is None for code in group.poll()) and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
    late = [group.name(i) for i, code in enumerate(group.poll()) if code is None]
    if late:
        log.info("tune: the search is over; stopping %s", ", ".join(late))
    group.stop()
