"""The launcher: start N workers of a command or a Python function, and handle their failures.

Three levels, each built on the one below:

- ``tfscale.launch(fn, n=2, args=(...))`` (`launch`): calls a function on N
  workers from a notebook or a script; returns each worker's return value,
  or raises the first worker's exception (noted with its rank).
- `run(argv, LaunchOptions(...))`: what ``tfscale launch`` does. Plans the
  cluster (`tfscale.cluster.plan`), reserves its ports
  (`tfscale.cluster.ports`), starts the workers as a `Group`, forwards
  SIGINT/SIGTERM to them, enforces ``timeout`` and restarts the whole group up
  to ``max_restarts`` times.
- `start_group(specs) -> Group` (`tfscale.cluster.group`): N processes, each
  with its own environment variables, output streamed with a ``[name]``
  prefix or to a file, and one failure policy: when one exits non-zero or is
  killed, the others are stopped and `WorkerFailure` names it with its last
  lines; no process is left behind (process groups). Reuse it to run other
  kinds of workers (e.g. tuning trials):

      from tfscale.cluster.launcher import ProcessSpec, start_group
      specs = [ProcessSpec([sys.executable, "trial.py"], env={"TRIAL": str(i)}, name=f"t{i}") for i in range(4)]
      with start_group(specs) as group:
          group.wait(timeout=600)          # raises WorkerFailure / GroupTimeout

TensorFlow's gRPC servers have no authentication. A local launch names
127.0.0.1 in TF_CONFIG; note that TensorFlow 2.21 still listens on every
interface, so keep untrusted networks out with a firewall. With named hosts
the launcher warns.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence

from tfscale.cluster import plan as plan_lib
from tfscale.cluster.group import (Group, GroupInterrupted, GroupTimeout, ProcessSpec, WorkerFailure,
                                   describe_exit, forwarded_signals, start_group)
from tfscale.cluster.plan import LaunchOptions, Plan
from tfscale.cluster.ports import PortReservation
from tfscale.errors import ClusterError, ConfigError

log = logging.getLogger("tfscale")

__all__ = ["Group", "GroupInterrupted", "GroupTimeout", "LaunchOptions", "Plan", "ProcessSpec", "WorkerFailure",
           "dry_run", "launch", "run", "start_group"]

# Set in the workers of `launch`, so a script that calls tfscale.launch unguarded does not recurse.
_FUNCTION_WORKER_ENV = "TFSCALE_FUNCTION_WORKER"


def _reserve(options: LaunchOptions, environ) -> tuple[Plan, PortReservation | None]:
    """The plan, with this host's ports reserved for as long as the launch lasts."""
    if options.hosts or options.hosts_file:
        plan = plan_lib.build(options, environ)
        return plan, PortReservation.exact(plan.local_ports)
    if plan_lib.slurm_task(environ) is not None:
        return plan_lib.build(options, environ), None
    reservation = PortReservation.free(options.workers or 1)
    try:
        return plan_lib.build(options, environ, free_ports=reservation.ports), reservation
    except BaseException:
        reservation.close()
        raise


def specs_for(plan: Plan, argv: Sequence[str], options: LaunchOptions, attempt: int = 0) -> list[ProcessSpec]:
    """One `ProcessSpec` per local worker of `plan`, for restart number `attempt`."""
    specs = []
    for rank, env in zip(plan.ranks, plan.env):
        log_path = os.path.join(options.log_dir, f"worker-{rank}.log") if options.log_dir else None
        cpus = tuple(int(c) for c in env["TFSCALE_CPUS"].split(",")) if env.get("TFSCALE_CPUS") else None
        specs.append(ProcessSpec(list(argv), {**env, "TFSCALE_RESTART": str(attempt)}, f"w{rank}", log_path,
                                 cpus=cpus))
    return specs


def run(argv: Sequence[str], options: LaunchOptions | None = None, *, output=None) -> list[int]:
    """Runs `argv` on this host's workers until all exit 0, restarting the group on failure if asked.

    Args:
        argv: the command each worker runs, e.g. ["python", "train.py", "--epochs", "3"].
        options: how many workers, where, timeouts, restarts (default: one local worker).
        output: where the workers' prefixed output goes (default: sys.stdout).

    Returns:
        The workers' exit codes (all 0).

    Raises:
        WorkerFailure: a worker failed and no restart was left.
        GroupTimeout: ``options.timeout`` passed.
        GroupInterrupted: SIGINT/SIGTERM reached the launcher (forwarded to the workers).
        ConfigError / ClusterError: the options do not fit the environment.
    """
    options = options or LaunchOptions()
    if not argv:
        raise ConfigError("no command to launch", where="tfscale launch",
                          fix="put the command after `--`, e.g. tfscale launch -n 2 -- python train.py")
    plan, reservation = _reserve(options, os.environ)
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    log.info("launching %d of %d worker(s) on this host (%s): %s", len(plan.ranks), plan.world_size,
             plan.manager, shlex.join(argv))
    try:
        for attempt in range(options.max_restarts + 1):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return _attempt(specs_for(plan, argv, options, attempt), remaining, output)
            except WorkerFailure as failure:
                if attempt == options.max_restarts:
                    raise
                log.warning("worker %s %s; restarting all %d worker(s) (restart %d of %d)", failure.name,
                            describe_exit(failure.returncode), len(plan.ranks), attempt + 1, options.max_restarts)
        raise AssertionError("unreachable")
    finally:
        if reservation is not None:
            reservation.close()


def _attempt(specs: list[ProcessSpec], timeout: float | None, output) -> list[int]:
    """One run of the group. Each worker gets a temporary folder of its own (TMPDIR), removed when the
    group ends: a worker killed by SIGKILL leaves nothing behind (TensorFlow's autograph writes files there)."""
    scratch = tempfile.mkdtemp(prefix="tfscale-workers-")
    try:
        specs = [dataclasses.replace(spec, env={**spec.env, "TMPDIR": _folder(scratch, spec.name)}) for spec in specs]
        for spec in specs:
            if spec.log_path:
                os.makedirs(os.path.dirname(os.path.abspath(spec.log_path)), exist_ok=True)
                with open(spec.log_path, "a") as f:
                    f.write(f"==== tfscale launch: worker {spec.name}, restart {spec.env['TFSCALE_RESTART']} ====\n")
        group = start_group(specs, output=output)
        with group, forwarded_signals(group):
            return group.wait(timeout=timeout)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _folder(parent: str, name: str) -> str:
    path = os.path.join(parent, name)
    os.mkdir(path)
    return path


def exec_worker(argv: Sequence[str], options: LaunchOptions | None = None) -> None:
    """Under srun: replaces this process with the command, with the Slurm-derived TF_CONFIG (never returns)."""
    plan = plan_lib.build(options or LaunchOptions(), os.environ)
    if plan.manager != "slurm":
        raise ConfigError("exec_worker is for Slurm tasks only", where="tfscale launch",
                          fix="use run() outside srun")
    env = {**os.environ, **plan.env[0], "TFSCALE_RESTART": "0"}
    log.info("Slurm task %d of %d: exec %s", plan.ranks[0], plan.world_size, shlex.join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], list(argv), env)
    except OSError as e:
        raise ClusterError(f"cannot run {argv[0]!r}: {e.strerror}", where="the command after `--`",
                           fix="check that it is installed and on PATH") from None


def dry_run(argv: Sequence[str], options: LaunchOptions | None = None) -> Plan:
    """The plan `run` would follow, without starting anything (local ports are examples, not reserved)."""
    options = options or LaunchOptions()
    if options.hosts or options.hosts_file or plan_lib.slurm_task(os.environ) is not None:
        return plan_lib.build(options, os.environ)
    with PortReservation.free(options.workers or 1) as ports:
        return plan_lib.build(options, os.environ, free_ports=ports.ports)


# --------------------------------------------------------------------------- Python functions


def launch(fn, n: int = 2, args: tuple = (), kwargs: dict | None = None, *, replicas_per_worker: int | None = None,
           timeout: float | None = None, collective_timeout: float | None = None, max_restarts: int = 0,
           log_dir: str | None = None, threads: int | None = None, bind_cores: bool = True,
           env: dict[str, str] | None = None, backend: str | None = None) -> list:
    """Calls ``fn(*args, **kwargs)`` on `n` local workers of one cluster; for notebooks and scripts.

    Each worker is a fresh Python process with its own TF_CONFIG (or, with
    ``backend="jax"``, the KERAS_DISTRIBUTION_* variables), so
    ``tfscale.Scale.auto()`` inside `fn` builds the multi-worker strategy.

    Args:
        fn: a function defined at the top level of a module, a script (call
            `launch` under ``if __name__ == "__main__":``) or a notebook cell
            (needs ``cloudpickle``).
        n: workers; args, kwargs: passed to `fn` (picklable).
        replicas_per_worker, timeout, collective_timeout, max_restarts, log_dir,
            threads, bind_cores, env, backend: as `LaunchOptions`.

    Returns:
        Each worker's return value, by rank.

    Raises:
        The first worker's exception, with a note naming its rank and its traceback;
        `WorkerFailure` when a worker died without one (e.g. killed); `GroupTimeout`.

    Example:
        def train(epochs):
            scale = tfscale.Scale.auto()
            ...
            return history.history["loss"][-1]
        losses = tfscale.launch(train, n=2, args=(3,))
    """
    from tfscale.cluster import notebook

    if os.environ.get(_FUNCTION_WORKER_ENV):
        raise ConfigError("tfscale.launch was called inside one of its own workers", where="tfscale.launch",
                          fix='in a script, call it under `if __name__ == "__main__":`')
    folder = tempfile.mkdtemp(prefix="tfscale-launch-")
    try:
        notebook.write_payload(folder, fn, args, kwargs or {})
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        options = LaunchOptions(workers=n, replicas_per_worker=replicas_per_worker, timeout=timeout,
                                collective_timeout=collective_timeout, max_restarts=max_restarts, log_dir=log_dir,
                                threads=threads, bind_cores=bind_cores, backend=backend,
                                env={**(env or {}), _FUNCTION_WORKER_ENV: "1", "PYTHONPATH": python_path})
        try:
            run(notebook.worker_command(folder), options)
        except WorkerFailure as failure:
            _raise_worker_error(folder, n, failure)
        return notebook.read_results(folder, n)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _raise_worker_error(folder: str, n: int, failure: WorkerFailure):
    from tfscale.cluster import notebook

    found = notebook.first_error(folder)
    if found is None:
        raise failure
    rank, exception, summary, text = found
    note = f"raised on worker {rank} of {n} (tfscale.launch); the worker's traceback:\n{text}"
    if exception is None:
        raise ClusterError(f"worker {rank} failed: {summary}", where=f"tfscale.launch, worker {rank}",
                           fix="see the worker's traceback above") from failure
    exception.add_note(note)
    exception.tfscale_rank = rank
    raise exception from None
