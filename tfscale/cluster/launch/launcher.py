"""The launcher: start N workers of a command or a Python function, and handle their failures.

Three levels, each built on the one below:

- ``tfscale.launch(fn, n=2, args=(...))`` (`launch`): calls a function on N
  workers from a notebook or a script; returns each worker's return value,
  or raises the first worker's exception (noted with its rank).
- `run(argv, LaunchOptions(...))`: what ``tfscale launch`` does. Picks the
  `Launcher` for the environment (`tfscale.cluster.launch.backends`: local,
  ``--hosts``, Slurm task, Kubernetes pod), which plans the cluster
  (`tfscale.cluster.launch.plan`), reserves its ports
  (`tfscale.cluster.launch.ports`), starts the workers as a `Group`, forwards
  SIGINT/SIGTERM to them, enforces ``timeout`` and restarts the whole group up
  to ``max_restarts`` times where tfscale owns restarts; with ``--nnodes
  MIN:MAX`` each restart first agrees with the other hosts' launchers on the
  hosts that go on (`tfscale.cluster.launch.rendezvous`).
- `start_group(specs) -> Group` (`tfscale.cluster.launch.group`): N processes, each
  with its own environment variables, output streamed with a ``[name]``
  prefix or to a file, and one failure policy: when one exits non-zero or is
  killed, the others are stopped and `WorkerFailure` names it with its last
  lines; no process is left behind (process groups). Reuse it to run other
  kinds of workers (e.g. tuning trials):

      from tfscale.cluster.launch.launcher import ProcessSpec, start_group
      specs = [ProcessSpec([sys.executable, "trial.py"], env={"TRIAL": str(i)}, name=f"t{i}") for i in range(4)]
      with start_group(specs) as group:
          group.wait(timeout=600)          # raises WorkerFailure / GroupTimeout

TensorFlow's gRPC servers have no authentication. A local launch names
127.0.0.1 in TF_CONFIG, but TensorFlow 2.21 still listens on every
interface: the launch warns once naming the ports, unless
``private_network=True`` (``--private-network``) runs the workers in a
network namespace with only loopback (`tfscale.cluster.launch.privatenet`,
which says why that is not the default). With named hosts the launcher
warns about those beyond loopback.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Sequence

from tfscale import worker_env
from tfscale.cluster.launch import backends
from tfscale.cluster.launch.backends import specs_for
from tfscale.cluster.launch.group import (Group, GroupInterrupted, GroupTimeout, ProcessSpec, WorkerFailure,
                                          start_group)
from tfscale.cluster.launch.plan import LaunchOptions, LaunchPlan
from tfscale.errors import ClusterError, ConfigError

log = logging.getLogger("tfscale")

__all__ = ["Group", "GroupInterrupted", "GroupTimeout", "LaunchOptions", "LaunchPlan", "ProcessSpec", "WorkerFailure",
           "dry_run", "launch", "run", "specs_for", "start_group"]

# Set in the workers of `launch`, so a script that calls tfscale.launch unguarded does not recurse.
_FUNCTION_WORKER_ENV = worker_env.FUNCTION_WORKER


def run(argv: Sequence[str], options: LaunchOptions | None = None, *, output=None, may_exec: bool = False,
        private_network: bool = False) -> list[int]:
    """Runs `argv` on this host's workers until all exit 0, restarting the group on failure if asked.

    The `Launcher` (`backends.choose`: --hosts, Slurm task, Kubernetes pod, else local) plans and
    starts the workers; with `may_exec` (the command line), in a pod the command replaces this
    process (never returns); a Slurm task's one worker is supervised (`backends.SlurmLauncher`).

    Args:
        argv: the command each worker runs, e.g. ["python", "train.py", "--epochs", "3"].
        options: how many workers, where, timeouts, restarts (default: one local worker).
        output: where the workers' prefixed output goes (default: sys.stdout).
        private_network: run a local launch's workers in a network namespace with only loopback
            (`privatenet`); False: they listen on every interface, and the launch warns once.

    Returns:
        The workers' exit codes (all 0).

    Raises:
        WorkerFailure: a worker failed and no restart was left.
        GroupTimeout: ``options.timeout`` passed.
        GroupInterrupted: SIGINT/SIGTERM reached the launcher (forwarded to the workers).
        ConfigError / ClusterError: the options do not fit the environment (e.g. --max-restarts where
            the cluster manager owns restarts; `private_network` with --hosts, or where the system allows
            no network namespace).
    """
    options = options or LaunchOptions()
    if not argv:
        raise ConfigError("no command to launch", where="tfscale launch",
                          fix="put the command after `--`, e.g. tfscale launch -n 2 -- python train.py")
    chosen = backends.choose(options, os.environ, private_network=private_network)
    plan, reservation = chosen.plan(options, os.environ)
    log.info("launching %d of %d worker(s) on this host (%s): %s", len(plan.ranks), plan.world_size,
             plan.manager, shlex.join(argv))
    try:
        return chosen.start(argv, options, plan, output=output, may_exec=may_exec)
    finally:
        if reservation is not None:
            reservation.close()


def dry_run(argv: Sequence[str], options: LaunchOptions | None = None, *, private_network: bool = False) -> LaunchPlan:
    """The plan `run` would follow, without starting anything (local ports are examples, not reserved)."""
    options = options or LaunchOptions()
    plan, reservation = backends.choose(options, os.environ, private_network=private_network).plan(options,
                                                                                                   os.environ)
    if reservation is not None:
        reservation.close()
    return plan


# --------------------------------------------------------------------------- Python functions


def launch(fn, n: int = 2, args: tuple = (), kwargs: dict | None = None, *, replicas_per_worker: int | None = None,
           timeout: float | None = None, collective_timeout: float | None = None, max_restarts: int = 0,
           log_dir: str | None = None, threads: int | None = None, bind_cores: bool = True,
           env: dict[str, str] | None = None, backend: str | None = None, private_network: bool = False) -> list:
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
        private_network: the workers in a network namespace with only loopback, unreachable from other
            machines (`run`); they then reach nothing beyond this machine either.

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
    from tfscale.cluster.launch import notebook

    if os.environ.get(_FUNCTION_WORKER_ENV):
        raise ConfigError("tfscale.launch was called inside one of its own workers", where="tfscale.launch",
                          fix='in a script, call it under `if __name__ == "__main__":`')
    folder = tempfile.mkdtemp(prefix="tfscale-launch-")
    try:
        notebook.write_payload(folder, fn, args, kwargs or {})
        package_root = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 3))  # holds tfscale/
        python_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        options = LaunchOptions(workers=n, replicas_per_worker=replicas_per_worker, timeout=timeout,
                                collective_timeout=collective_timeout, max_restarts=max_restarts, log_dir=log_dir,
                                threads=threads, bind_cores=bind_cores, backend=backend,
                                env={**(env or {}), _FUNCTION_WORKER_ENV: "1", "PYTHONPATH": python_path})
        try:
            run(notebook.worker_command(folder), options, private_network=private_network)
        except WorkerFailure as failure:
            _raise_worker_error(folder, n, failure)
        return notebook.read_results(folder, n)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _raise_worker_error(folder: str, n: int, failure: WorkerFailure):
    from tfscale.cluster.launch import notebook

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
