"""The launcher interface: one `Launcher` per way of starting workers, chosen once from the options and environment.

A `Launcher` does two things:

- ``plan(options, environ) -> (LaunchPlan, PortReservation | None)``: the cluster
  and the variables of each worker it starts on this host (`plan.build`),
  with this host's ports held until the launch ends where it picks them;
- ``start(argv, options, plan, output=None, may_exec=False) -> list[int]``:
  starts them and returns their exit codes (all 0), or raises
  `WorkerFailure`, `GroupTimeout`, `GroupInterrupted`. With ``may_exec``
  (the command line), a launcher of one worker may replace this process with
  it instead (Slurm task, Kubernetes pod); the manifest launcher only prints
  what Kubernetes will start.

Restarts have exactly one owner per run, named by the class attribute
``restarts``:

- ``"tfscale"`` (`LocalLauncher`, `HostsLauncher`, `ElasticHostsLauncher`):
  ``--max-restarts R`` restarts the whole group on this host up to R times
  (elastic, ``--nnodes MIN:MAX``: each restart is a round in which the hosts
  that remain agree on who goes on, `tfscale.cluster.launch.rendezvous`);
- ``"manager"``: the cluster manager restarts (Slurm: ``sbatch --requeue`` /
  ``srun --kill-on-bad-exit``; Kubernetes: the Job's ``backoffLimit``; Ray:
  ``FailureConfig(max_failures=...)``). `check_restarts` refuses
  ``--max-restarts`` there with a ConfigError, except where the launcher
  hands the count to the manager itself (`ManifestLauncher` writes it as the
  Job's ``backoffLimit``; the pods' own launchers then restart nothing).

A launcher whose workers all run on this host declares ``isolable``: only
there may ``--private-network`` put the group in a network namespace of
its own (`tfscale.cluster.launch.privatenet`); without it the local
launcher warns once per launch which ports are open to the network.
`choose` refuses ``--private-network`` for every other launcher.

To add an engine (e.g. Ray): subclass `Launcher`, set ``name`` and
``restarts``, implement ``applies`` (is this the environment it serves?),
``plan`` and ``start``, and add the class to `LAUNCHERS` before the ones it
must win over. `choose` returns the first whose ``applies`` is true.

Standard library only (never TensorFlow, Keras or JAX).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from tfscale import worker_env
from tfscale.cluster.launch import hosts as hosts_lib
from tfscale.cluster.launch import plan as plan_lib
from tfscale.cluster.launch import privatenet
from tfscale.cluster.launch.group import (GroupTimeout, ProcessSpec, WorkerFailure, describe_exit, forwarded_signals,
                                          start_group)
from tfscale.cluster.launch.peers import Peers, check_names
from tfscale.cluster.launch.plan import LaunchOptions, LaunchPlan
from tfscale.cluster.launch.ports import PortReservation
from tfscale.cluster.launch.rendezvous import Regroup, Rendezvous, check_launcher_ports
from tfscale.errors import ClusterError, ConfigError
from tfscale.vocabulary import RESTART_OWNERS, RestartOwner

log = logging.getLogger("tfscale")

# restarts: tfscale's --max-restarts restarts the group, or the cluster manager does (--max-restarts refused)
TFSCALE, MANAGER = RESTART_OWNERS
# Seconds a Slurm task's worker gets after SIGTERM (scancel, requeue, preemption) before the launcher stops it
# (1 s more, then SIGKILL): scancel ends every worker within ~3 s, well before Slurm's KillWait (30 s by default).
SLURM_SIGNAL_GRACE = 2.0


class Launcher(abc.ABC):
    """One way of starting workers (see the module's docstring).

    Attributes:
        name: what `choose` picked, shown in logs and `--dry-run` ("local", "hosts", "slurm", ...).
        restarts: who restarts a failed run: "tfscale" (--max-restarts) or "manager" (never both).
        manager_restarts: for "manager": how the manager is told to restart (said in the refusal's fix).
        isolable: every worker runs on this host, so the group may run in a private network
            (``--private-network``, `privatenet`); elsewhere the workers must reach other machines.
    """

    name: ClassVar[str]
    restarts: ClassVar[RestartOwner]
    manager_restarts: ClassVar[str] = ""
    isolable: ClassVar[bool] = False

    @classmethod
    @abc.abstractmethod
    def applies(cls, options: LaunchOptions, environ: Mapping[str, str]) -> bool:
        """True when this launcher serves `options` in `environ`."""

    def check_restarts(self, options: LaunchOptions) -> None:
        """Refuses ``--max-restarts`` where the manager owns restarts.

        Raises:
            ConfigError: what, where, and how the manager restarts instead.
        """
        if self.restarts == MANAGER and options.max_restarts:
            raise ConfigError(f"--max-restarts {options.max_restarts}: under {self.name} the cluster manager "
                              "restarts failed workers, and one run has one owner of restarts",
                              where="--max-restarts", fix=f"drop --max-restarts; {self.manager_restarts}")

    @abc.abstractmethod
    def plan(self, options: LaunchOptions, environ: Mapping[str, str]) -> tuple[LaunchPlan, PortReservation | None]:
        """The plan, and the reservation holding this host's ports (None where none is held)."""

    @abc.abstractmethod
    def start(self, argv: Sequence[str], options: LaunchOptions, plan: LaunchPlan, *, output=None,
              may_exec: bool = False) -> list[int]:
        """Starts the plan's workers and waits for them (see the module's docstring)."""


class LocalLauncher(Launcher):
    """Workers on this host, on free loopback ports; tfscale supervises and restarts them.

    Their servers listen on every interface (`ports`): `start` says so in one warning line per launch, or,
    with ``private_network`` (``--private-network``), runs the group in a network namespace with only
    loopback (`privatenet.PrivateNetwork`, shared by every restart).
    """

    name = "local"
    restarts = TFSCALE
    isolable = True

    def __init__(self, *, private_network: bool = False):
        self.private_network = private_network

    @classmethod
    def applies(cls, options, environ) -> bool:
        return True

    def plan(self, options, environ):
        reservation = PortReservation.free(options.workers or 1)
        try:
            return plan_lib.build(options, environ, free_ports=reservation.ports), reservation
        except BaseException:
            reservation.close()
            raise

    def start(self, argv, options, plan, *, output=None, may_exec=False) -> list[int]:
        if not self.private_network:
            privatenet.warn_exposed(plan.local_ports, plan_lib.backend_of(options, os.environ))
            return supervise(plan, argv, options, output=output, max_restarts=options.max_restarts)
        with privatenet.PrivateNetwork.create() as network:
            return supervise(plan, argv, options, output=output, max_restarts=options.max_restarts,
                             namespaces=network.namespaces)


class HostsLauncher(LocalLauncher):
    """This host's workers of a cluster of named hosts (``--hosts``), on the ports the hosts list gives."""

    name = "hosts"
    isolable = False

    @classmethod
    def applies(cls, options, environ) -> bool:
        return bool(options.hosts or options.hosts_file)

    def plan(self, options, environ):
        plan = plan_lib.build(options, environ)
        return plan, PortReservation.exact(plan.local_ports)

    def start(self, argv, options, plan, *, output=None, may_exec=False) -> list[int]:
        """As `LocalLauncher`, once every host name resolves; a failure or a timeout then names this host and
        the other hosts' workers that do not answer (`peers.Peers`)."""
        peers = Peers(plan)
        check_names(peers.names())
        return supervise(plan, argv, options, output=output, max_restarts=options.max_restarts, peers=peers)


class ElasticHostsLauncher(HostsLauncher):
    """``--hosts`` with ``--nnodes MIN:MAX``: starts with every named host; after a host is lost, the launchers of
    the hosts that remain agree on who goes on (`rendezvous`) and restart their workers as a smaller cluster, as
    long as at least MIN remain. Each new membership is a restart (``--max-restarts``)."""

    name = "elastic"

    @classmethod
    def applies(cls, options, environ) -> bool:
        return bool(options.hosts or options.hosts_file) and options.min_nodes is not None

    def plan(self, options, environ):
        check_launcher_ports(hosts_lib.parse_hosts(options.hosts, options.hosts_file), options.workers or 1)
        return super().plan(options, environ)

    def start(self, argv, options, plan, *, output=None, may_exec=False) -> list[int]:
        """As `HostsLauncher`, with this host's launcher port open for the agreement until the launch ends."""
        peers = Peers(plan)
        check_names(peers.names())
        nodes = hosts_lib.parse_hosts(options.hosts, options.hosts_file)
        with Rendezvous(nodes, plan.node_rank, options.min_nodes) as rendezvous:
            return supervise(plan, argv, options, output=output, max_restarts=options.max_restarts, peers=peers,
                             rendezvous=rendezvous)


class SlurmLauncher(Launcher):
    """One worker per Slurm task (under ``srun``), supervised by the task's launcher. Slurm owns restarts.

    Never exec'd: scancel, ``scontrol requeue`` and preemption send SIGTERM to every process of the step,
    and a TensorFlow multi-worker process does not die on SIGTERM (its preemption notifier catches it), so an
    exec'd worker lived until Slurm's KillWait (30 s by default) ran out. The launcher gives it
    `SLURM_SIGNAL_GRACE` seconds, then stops it (SIGTERM, 1 s, SIGKILL). Slurm signals every process of the
    step itself (scancel, requeue, ``--signal=USR1@T``), the worker too: the launcher only notes it, and lives
    through SIGUSR1 (`forwarded_signals` with ``resend=False``).
    """

    name = "slurm"
    restarts = MANAGER
    manager_restarts = "let Slurm restart the job (`sbatch --requeue`) and resume from checkpoints"

    @classmethod
    def applies(cls, options, environ) -> bool:
        return plan_lib.slurm_task(environ) is not None

    def plan(self, options, environ):
        self.check_restarts(options)
        return plan_lib.build(options, environ), None

    def start(self, argv, options, plan, *, output=None, may_exec=False) -> list[int]:
        return supervise(plan, argv, options, output=output, max_restarts=0, signal_grace=SLURM_SIGNAL_GRACE,
                         resend_signals=False)


class KubernetesLauncher(SlurmLauncher):
    """One worker per pod of tfscale's Indexed Job (``tfscale launch -- CMD`` as the pod's command):
    TF_CONFIG and TFSCALE_RANK... from JOB_COMPLETION_INDEX, then the command replaces the launcher.
    The Job owns restarts (its ``backoffLimit``)."""

    name = "kubernetes"
    manager_restarts = "set the Job's backoffLimit (`tfscale launch --print-manifest --max-restarts R` writes it)"

    @classmethod
    def applies(cls, options, environ) -> bool:
        return plan_lib.kubernetes_task(environ) is not None

    def start(self, argv, options, plan, *, output=None, may_exec=False) -> list[int]:
        if not may_exec or options.timeout or options.log_dir:
            return supervise(plan, argv, options, output=output, max_restarts=0)
        exec_worker(plan, argv)
        raise AssertionError("unreachable")


class ManifestLauncher(Launcher):
    """``--print-manifest``: prints a headless Service and an Indexed Job; Kubernetes starts the pods.

    ``--max-restarts R`` becomes the Job's ``backoffLimit`` (R x workers: Kubernetes owns restarts); the launcher
    in each pod restarts nothing. `plan` gives pod 0's plan as the pod will see it.
    """

    name = "manifest"
    restarts = MANAGER

    def __init__(self, *, job_name: str = "tfscale", image: str = "IMAGE_WITH_TFSCALE", port: int | None = None):
        self.job_name, self.image, self.port = job_name, image, port or worker_env.DEFAULT_PORT

    @classmethod
    def applies(cls, options, environ) -> bool:
        return False  # asked for explicitly (`choose(..., manifest=...)`)

    def check_restarts(self, options) -> None:
        pass  # handed to Kubernetes as backoffLimit

    def documents(self, argv: Sequence[str], options: LaunchOptions) -> list[dict]:
        from tfscale.cluster.launch import indexed_job

        return indexed_job.documents(argv, workers=options.workers or 1, name=self.job_name, image=self.image,
                                     port=self.port, replicas_per_worker=options.replicas_per_worker,
                                     collective_timeout=options.collective_timeout,
                                     max_restarts=options.max_restarts, backend=options.backend)

    def plan(self, options, environ):
        docs = self.documents(["true"], options)
        container = docs[1]["spec"]["template"]["spec"]["containers"][0]
        pod = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        pod.update({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "0"})
        return plan_lib.build(dataclasses.replace(options, max_restarts=0, workers=None), pod), None

    def start(self, argv, options, plan, *, output=None, may_exec=False) -> list[int]:
        from tfscale.cluster.launch import indexed_job

        text = indexed_job.render(argv, workers=options.workers or 1, name=self.job_name, image=self.image,
                                  port=self.port, replicas_per_worker=options.replicas_per_worker,
                                  collective_timeout=options.collective_timeout, max_restarts=options.max_restarts,
                                  backend=options.backend)
        print(text, end="", file=output or sys.stdout)
        return []


# Tried in order; the first whose `applies` is true is used (LocalLauncher always applies).
LAUNCHERS: list[type[Launcher]] = [ElasticHostsLauncher, HostsLauncher, SlurmLauncher, KubernetesLauncher,
                                   LocalLauncher]


def choose(options: LaunchOptions, environ: Mapping[str, str], *, manifest: ManifestLauncher | None = None,
           private_network: bool = False) -> Launcher:
    """The launcher for `options` in `environ` (`manifest`: print a Kubernetes manifest instead).

    `private_network` (``--private-network``): its workers in a network namespace with only loopback
    (`privatenet`).

    Raises:
        ConfigError: `private_network` for a launcher that is not ``isolable`` (its workers must reach other
            machines).
    """
    if manifest is not None:
        _check_isolable(manifest, private_network)
        return manifest
    for cls in LAUNCHERS:
        if cls.applies(options, environ):
            _check_isolable(cls, private_network)
            return cls(private_network=True) if private_network else cls()
    raise AssertionError("LocalLauncher always applies")


def _check_isolable(launcher: Launcher | type[Launcher], private_network: bool) -> None:
    if private_network and not launcher.isolable:
        raise ConfigError(f"{privatenet.FLAG} with the {launcher.name} launcher: its workers must reach other "
                          "machines, and a private network keeps them on this one", where=privatenet.FLAG,
                          fix="drop --private-network and let only the cluster's hosts reach the workers' ports "
                              "(a firewall, a private network between the hosts); --private-network is for a "
                              "launch on this machine only (no --hosts, outside srun and Kubernetes pods)")


# --------------------------------------------------------------------------- supervision and exec


def specs_for(plan: LaunchPlan, argv: Sequence[str], options: LaunchOptions, attempt: int = 0) -> list[ProcessSpec]:
    """One `ProcessSpec` per local worker of `plan`, for restart number `attempt`."""
    specs = []
    for rank, env in zip(plan.ranks, plan.env):
        log_path = os.path.join(options.log_dir, f"worker-{rank}.log") if options.log_dir else None
        cpus = worker_env.WorkerEnv.from_environ(env).cpus
        specs.append(ProcessSpec(list(argv), {**env, **worker_env.WorkerEnv(restart=attempt).to_environ()},
                                 f"w{rank}", log_path, cpus=cpus))
    return specs


def supervise(plan: LaunchPlan, argv: Sequence[str], options: LaunchOptions, *, output=None,
              max_restarts: int = 0, signal_grace: float | None = None, peers: Peers | None = None,
              resend_signals: bool = True, rendezvous: Rendezvous | None = None,
              namespaces: tuple[int, ...] = ()) -> list[int]:
    """Runs the plan's workers until all exit 0, restarting the whole group up to `max_restarts` times.

    `signal_grace`: seconds the workers get after a SIGINT/SIGTERM to the launcher (default `start_group`'s).
    `resend_signals`: False where the manager signals the workers itself (`forwarded_signals`' ``resend``).
    `peers`: the other hosts of a multi-host plan, named in failures and timeouts (`Peers.explain`).
    `rendezvous`: an elastic launch (``--nnodes MIN:MAX``): each restart is a round in which the hosts that
    remain agree on who goes on (`Rendezvous.regroup`); this host's workers stop when another host starts one.
    `namespaces`: what every worker of every attempt enters before it runs (`ProcessSpec.namespaces`).
    """
    deadline = None if options.timeout is None else time.monotonic() + options.timeout
    check = rendezvous.check if rendezvous is not None else None
    with compilation_cache(plan, max_restarts) as cache_env:
        attempt = 0
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            specs = [dataclasses.replace(spec, env={**spec.env, **cache_env}, namespaces=namespaces)
                     for spec in specs_for(plan, argv, options, attempt)]
            try:
                return _attempt(specs, remaining, output, signal_grace, resend_signals, check, total=options.timeout)
            except GroupTimeout as timeout:
                if peers is None:
                    raise
                raise peers.explain_timeout(timeout) from None
            except WorkerFailure as failure:
                if peers is not None:
                    failure = peers.explain(failure)
                if attempt >= max_restarts:
                    raise failure from None
                log.warning("worker %s %s%s; restarting all %d worker(s) (restart %d of %d)", failure.label,
                            describe_exit(failure.returncode), failure.peers_note, len(plan.ranks), attempt + 1,
                            max_restarts)
            except Regroup as news:  # only from `check`: another host started a round
                if attempt >= max_restarts:
                    raise ClusterError(f"{news.what}, and this host has no restart left", where="--max-restarts",
                                       fix="raise --max-restarts (each round of an elastic launch is a restart)"
                                       ) from None
                log.warning("%s: stopping this host's %d worker(s) to join it", news.what, len(plan.ranks))
            attempt += 1
            if rendezvous is not None:
                attempt, plan = rendezvous.regroup(attempt, options, max_restarts)
                peers = Peers(plan)


# JAX's own variables (jax.config reads JAX_* names at import): its persistent compilation cache
JAX_CACHE_DIR = "JAX_COMPILATION_CACHE_DIR"
JAX_CACHE_MIN_SECONDS = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


@contextlib.contextmanager
def compilation_cache(plan: LaunchPlan, max_restarts: int):
    """The variables that give restarted JAX workers the programs their last start compiled.

    A restart starts new processes, which compile every XLA program again: a tiny model's train step,
    initializers and collectives take ~0.9 s of CPU a worker here, a large model minutes. Where tfscale
    restarts JAX workers (``--max-restarts``), they share a persistent compilation cache in a temporary
    folder of this launch (JAX writes it from process 0; programs of any compile time are kept), removed
    when the launch ends. Nothing is set for TensorFlow workers, without restarts, or where the user set
    JAX_COMPILATION_CACHE_DIR (theirs is used as it is).
    """
    env = plan.env[0] if plan.env else {}
    if not max_restarts or env.get("KERAS_BACKEND") != "jax" or JAX_CACHE_DIR in os.environ or JAX_CACHE_DIR in env:
        yield {}
        return
    folder = tempfile.mkdtemp(prefix="tfscale-jax-cache-")
    try:
        yield {JAX_CACHE_DIR: folder, JAX_CACHE_MIN_SECONDS: os.environ.get(JAX_CACHE_MIN_SECONDS, "0")}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _attempt(specs: list[ProcessSpec], timeout: float | None, output, signal_grace: float | None = None,
             resend_signals: bool = True, check: Callable[[], None] | None = None,
             total: float | None = None) -> list[int]:
    """One run of the group. Each worker gets a temporary folder of its own (TMPDIR), removed when the
    group ends: a worker killed by SIGKILL leaves nothing behind (TensorFlow's autograph writes files there).
    `check`: polled while the workers run; `total`: the --timeout that `timeout` remains of (`Group.wait`)."""
    scratch = tempfile.mkdtemp(prefix="tfscale-workers-")
    try:
        specs = [dataclasses.replace(spec, env={**spec.env, "TMPDIR": _folder(scratch, spec.name)}) for spec in specs]
        for spec in specs:
            if spec.log_path:
                os.makedirs(os.path.dirname(os.path.abspath(spec.log_path)), exist_ok=True)
                with open(spec.log_path, "a") as f:
                    f.write(f"==== tfscale launch: worker {spec.name}, restart "
                            f"{spec.env[worker_env.RESTART]} ====\n")
        grace = {} if signal_grace is None else {"signal_grace": signal_grace}
        group = start_group(specs, output=output, **grace)
        with group, forwarded_signals(group, resend=resend_signals):
            return group.wait(timeout=timeout, check=check, total=total)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _folder(parent: str, name: str) -> str:
    path = os.path.join(parent, name)
    os.mkdir(path)
    return path


def exec_worker(plan: LaunchPlan, argv: Sequence[str]) -> None:
    """Replaces this process with the plan's one worker (a Slurm task, a Kubernetes pod); never returns."""
    from tfscale import quiet

    quiet.enable()  # the command replaces this process: TensorFlow's start-up lines go through the filter
    env = {**os.environ, **plan.env[0], **worker_env.WorkerEnv(restart=0).to_environ()}
    log.info("%s task %d of %d: exec %s", plan.manager, plan.ranks[0], plan.world_size, shlex.join(argv))
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], list(argv), env)
    except OSError as e:
        raise ClusterError(f"cannot run {argv[0]!r}: {e.strerror}", where="the command after `--`",
                           fix="check that it is installed and on PATH") from None
