"""What `tfscale launch` starts: the cluster, and each local worker's environment.

A `LaunchOptions` (the command line, or `tfscale.launch`'s arguments) and the
launcher's environment give a `LaunchPlan`: the cluster spec shared by every
worker, and for each worker started on this host the variables it gets:

=============================  =====================================================
TF_CONFIG                      the cluster and this worker's task ("worker", rank)
                               (``--backend tensorflow``, the default)
KERAS_BACKEND=jax and          what `keras.distribution.initialize` reads, which
KERAS_DISTRIBUTION_*           `Scale` passes to `jax.distributed.initialize`: every
                               worker's address (rank 0's is the coordinator), the
                               process count and this process's id (``--backend jax``)
TFSCALE_RANK / _WORLD_SIZE     this worker's place among all workers / their number
TFSCALE_LOCAL_RANK / _NODE_RANK  its place on this host / this host's place
TFSCALE_ADDRESS                its own "host:port" in the cluster (the JAX engine's CPU collectives
                               listen on that host, whatever the hostname resolves to)
TFSCALE_REPLICAS_PER_WORKER    ``--replicas-per-worker`` (read by `StrategyConfig`)
TFSCALE_COLLECTIVE_TIMEOUT     ``--collective-timeout`` (read by `StrategyConfig`)
TFSCALE_JOIN_TIMEOUT           ``--join-timeout`` (read by `StrategyConfig`)
TFSCALE_RESTART                how many times the group was restarted (set at start)
CUDA_VISIBLE_DEVICES           this worker's share of the host's GPUs
TF_NUM_INTRAOP_THREADS, ...    this worker's share of the host's cores
TFSCALE_CPUS                   the cores the worker is bound to (its share; not under Slurm)
GRPC_EXPERIMENTS               gRPC's older I/O stack instead of its event engine
TF_CPP_MIN_LOG_LEVEL           2: TensorFlow's C++ info lines off (`tfscale.quiet`; TFSCALE_VERBOSE=1 instead
                               when the launcher is verbose)
=============================  =====================================================

Binding each worker to its own cores and gRPC's older I/O stack are both
measured choices (benchmarks/bench_launch.py, 2 workers on 2 cores): each cut
the step time of synchronous training by ~7%, together ~9%, and binding
halved the spread between runs; a worker's threads then no longer migrate
onto the other worker's core, and gRPC's event engine spends more CPU per
collective.

Variables the user already set (threads, CUDA_VISIBLE_DEVICES under Slurm)
are left alone. No TensorFlow import happens here: a launcher starts fast.

Elastic launches (``--nnodes MIN:MAX``, `LaunchOptions.min_nodes`) start with
every named host; after a host is lost, `hosts_plan` plans the hosts that
remain (`rendezvous` agrees on them): ranks renumbered in host-list order,
TF_CONFIG rebuilt, each host on the ports it had (its launcher holds them).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping

from tfscale import quiet
from tfscale.cluster.launch import hosts as hosts_lib
from tfscale.cluster.detection import kubernetes, slurm, tf_config
from tfscale.cluster.launch.ports import WORKER_ENV
from tfscale.errors import ConfigError
from tfscale.vocabulary import BACKENDS, Backend, LaunchManager
from tfscale.worker_env import WorkerEnv

log = logging.getLogger("tfscale")

# gRPC's event engine off (client and listener): its polling threads cost each collective more CPU
GRPC_EXPERIMENTS = "-event_engine_client,-event_engine_listener"
# one worker per task/pod, placed by the manager: no GPU split, no core binding
MANAGED: tuple[LaunchManager, ...] = ("slurm", "kubernetes")


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """How to launch: the command line's options, field by field.

    Attributes:
        workers: worker processes on this host (``-n``); None: 1, or one per Slurm task under srun.
        replicas_per_worker: replicas in each worker (logical CPU devices, or GPUs); None: the strategy's default.
        log_dir: write each worker's output to ``<log_dir>/worker-<rank>.log`` instead of the terminal.
        timeout: seconds for the whole job, restarts included; None: no limit.
        collective_timeout: seconds before a collective with a dead peer fails; None: TensorFlow's default.
        join_timeout: seconds every worker may take to join the cluster; None: the strategy's 900 s.
        max_restarts: times the whole group is restarted after a worker fails.
        nnodes: hosts in the cluster (checked against ``hosts``); elastic: the most hosts (MAX of ``MIN:MAX``).
        min_nodes: elastic (``--nnodes MIN:MAX``): the fewest hosts the run goes on with after losing some
            (`rendezvous`); None: a fixed cluster, as ``--nnodes N``.
        node_rank: this host's index in ``hosts``; None: found from the host name.
        hosts: "host[:port],..." of every node (the port is the first of that node's workers).
        hosts_file: a file with one host[:port] per line, instead of ``hosts``.
        threads: intra-op threads per worker; None: this host's cores split among its workers.
        bind_cores: bind each local worker to its share of the cores (when they add up; not under Slurm).
        env: extra variables for every worker.
        backend: the Keras backend the workers train on: "tensorflow" (TF_CONFIG) or "jax"
            (KERAS_BACKEND=jax and the KERAS_DISTRIBUTION_* variables); None: KERAS_BACKEND
            of the launcher's environment, else "tensorflow".
    """

    workers: int | None = None
    replicas_per_worker: int | None = None
    log_dir: str | None = None
    timeout: float | None = None
    collective_timeout: float | None = None
    join_timeout: float | None = None
    max_restarts: int = 0
    nnodes: int | None = None
    min_nodes: int | None = None
    node_rank: int | None = None
    hosts: str | None = None
    hosts_file: str | None = None
    threads: int | None = None
    bind_cores: bool = True
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    backend: Backend | None = None

    def __post_init__(self):
        if self.backend is not None and self.backend not in BACKENDS:
            raise ConfigError(f"backend {self.backend!r} has no tfscale engine", where="--backend",
                              fix=f"use one of: {', '.join(BACKENDS)}")
        for key in ("workers", "replicas_per_worker", "nnodes", "min_nodes", "threads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be at least 1, got {value}", where=f"--{_flag(key)}",
                                  fix="give a whole number >= 1")
        for key in ("timeout", "collective_timeout", "join_timeout"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}", where=f"--{_flag(key)}",
                                  fix="give seconds > 0, or leave it out")
        if self.max_restarts < 0:
            raise ConfigError(f"max_restarts must be >= 0, got {self.max_restarts}", where="--max-restarts",
                              fix="give 0 (no restart) or more")
        if (self.nnodes or self.node_rank is not None) and not (self.hosts or self.hosts_file):
            raise ConfigError("--nnodes/--node-rank need the hosts of the cluster", where="tfscale launch",
                              fix="add --hosts host0:port,host1:port (or --hosts-file FILE)")
        if self.min_nodes is not None:
            self._check_elastic()

    def _check_elastic(self) -> None:
        if self.nnodes is None or self.min_nodes > self.nnodes:
            raise ConfigError(f"--nnodes {self.min_nodes}:{self.nnodes if self.nnodes is not None else ''}: MIN is "
                              "more than MAX, or MAX is missing", where="--nnodes",
                              fix="give MIN:MAX with 1 <= MIN <= MAX, e.g. --nnodes 2:3")
        if self.max_restarts < 1:
            raise ConfigError(f"--nnodes {self.min_nodes}:{self.nnodes} without restarts: going on with the hosts "
                              "that remain restarts their workers, and --max-restarts is 0", where="--max-restarts",
                              fix="add --max-restarts R (R >= 1; each new membership counts as a restart)")


def _flag(key: str) -> str:
    return {"workers": "n", "replicas_per_worker": "replicas-per-worker", "min_nodes": "nnodes"}.get(
        key, key.replace("_", "-"))


def parse_nnodes(text: str | None) -> tuple[int | None, int | None]:
    """``--nnodes``: "N" (a fixed cluster) -> (None, N); "MIN:MAX" (elastic, as torchrun's) -> (MIN, MAX).

    Raises:
        ConfigError: anything else, naming the flag.
    """
    if text is None:
        return None, None
    parts = text.strip().split(":")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"--nnodes {text!r} is neither N nor MIN:MAX", where="--nnodes",
                          fix="give the number of hosts (--nnodes 3), or the fewest and most for an elastic run "
                              "(--nnodes 2:3)")
    numbers = [int(p) for p in parts]
    return (None, numbers[0]) if len(numbers) == 1 else (numbers[0], numbers[1])


@dataclasses.dataclass(frozen=True)
class LaunchPlan:
    """The cluster and this host's workers.

    Attributes:
        manager: "local" (one host, 127.0.0.1), "hosts" (named hosts), "slurm" (a task of a job step)
            or "kubernetes" (a pod of tfscale's Indexed Job).
        cluster: job -> "host:port" list, identical on every worker.
        ranks: the global rank of each worker started on this host.
        world_size: workers in the whole cluster.
        node_rank: this host's index.
        local_ports: ports this host's workers listen on (reserved by the launcher).
        env: per local worker, the variables the launcher sets.
    """

    manager: LaunchManager
    cluster: dict[str, list[str]]
    ranks: list[int]
    world_size: int
    node_rank: int
    local_ports: list[int]
    env: list[dict[str, str]]


def slurm_task(environ: Mapping[str, str]):
    """(cluster_spec, task_index) when this process is one task of a Slurm job step, else None."""
    return slurm.cpu_cluster(environ, port_base=WorkerEnv.from_environ(environ).port)  # None: Slurm's reserved ports


def kubernetes_task(environ: Mapping[str, str]):
    """(cluster_spec, task_index) when this process runs in a pod of tfscale's Indexed Job, else None."""
    return kubernetes.pod_cluster(environ)


def build(options: LaunchOptions, environ: Mapping[str, str], *, free_ports: list[int] | None = None) -> LaunchPlan:
    """The plan for `options` in the launcher's environment.

    Args:
        options: what was asked for.
        environ: the launcher's environment (os.environ).
        free_ports: for a local launch, the reserved ports of its workers.

    Raises:
        ConfigError: options that contradict each other or the environment.
    """
    if options.hosts or options.hosts_file:
        return _multi_host(options, environ)
    task = slurm_task(environ)
    if task is not None:
        return _slurm(options, environ, *task)
    pod = kubernetes_task(environ)
    if pod is not None:
        return _kubernetes(options, environ, *pod)
    n = options.workers or 1
    if free_ports is None or len(free_ports) != n:
        raise ConfigError(f"a local launch of {n} worker(s) needs {n} reserved port(s)", where="plan.build",
                          fix="pass free_ports=PortReservation.free(n).ports")
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports]}
    return _finish("local", cluster, list(range(n)), 0, free_ports, options, environ)


def _multi_host(options: LaunchOptions, environ: Mapping[str, str]) -> LaunchPlan:
    nodes = hosts_lib.parse_hosts(options.hosts, options.hosts_file)
    if options.nnodes is not None and options.nnodes != len(nodes):
        if options.min_nodes is not None:
            raise ConfigError(f"--nnodes {options.min_nodes}:{options.nnodes} but {len(nodes)} host(s) are named",
                              where="--nnodes / --hosts",
                              fix="name every host that may take part (MAX of them): an elastic launch starts with "
                                  "all of them and goes on with those that remain")
        raise ConfigError(f"--nnodes {options.nnodes} but {len(nodes)} host(s) are named",
                          where="--nnodes / --hosts", fix="name one host per node, or drop --nnodes")
    node = hosts_lib.node_rank(nodes, options.node_rank)
    beyond = [h.name for h in nodes if not h.is_loopback]
    if beyond:
        servers = ("JAX's coordinator and collectives" if backend_of(options, environ) == "jax"
                   else "TensorFlow's gRPC")
        log.warning("workers will accept connections from other machines (%s), with no authentication (%s): run "
                    "only on a trusted network or behind a firewall", ", ".join(beyond), servers)
    return hosts_plan(options, environ, nodes, node)


def hosts_plan(options: LaunchOptions, environ: Mapping[str, str], nodes: list[hosts_lib.Host],
               node: int) -> LaunchPlan:
    """The plan of a cluster of `nodes` (hosts in rank order) for this host, `nodes[node]`: ``-n`` workers on each,
    on consecutive ports from the host's port; also each new membership of an elastic launch."""
    n = options.workers or 1
    cluster = {"worker": [address for host in nodes for address in host.addresses(n)]}
    ports = [nodes[node].port + i for i in range(n)]
    return _finish("hosts", cluster, [node * n + i for i in range(n)], node, ports, options, environ)


def _slurm(options: LaunchOptions, environ: Mapping[str, str], cluster, index: int) -> LaunchPlan:
    if options.workers not in (None, 1):
        raise ConfigError(f"-n {options.workers} under srun: each Slurm task is one worker",
                          where="-n / SLURM_* variables",
                          fix="drop -n and choose the number of workers with `srun --ntasks`, or launch outside srun")
    node = int(environ.get("SLURM_NODEID", 0))
    plan = _finish("slurm", dict(cluster), [index], node, [], options, environ)
    env = plan.env[0]
    host = cluster["worker"][index].rsplit(":", 1)[0]  # this task's node: its workers are its tasks in the step
    env.update(WorkerEnv(local_rank=int(environ.get("SLURM_LOCALID", "0")),
                         local_world_size=sum(a.rsplit(":", 1)[0] == host for a in cluster["worker"])).to_environ())
    if "SLURM_CPUS_PER_TASK" not in environ and options.threads is None:
        for key in thread_env(1):  # without --cpus-per-task there is no share to give: TensorFlow decides
            if key not in environ:
                env.pop(key, None)
    return plan


def _kubernetes(options: LaunchOptions, environ: Mapping[str, str], cluster, index: int) -> LaunchPlan:
    if options.workers not in (None, 1):
        raise ConfigError(f"-n {options.workers} in a pod: each pod of the Indexed Job is one worker",
                          where="-n / JOB_COMPLETION_INDEX",
                          fix="drop -n; the manifest's `-n` (completions) sets the number of pods")
    return _finish("kubernetes", dict(cluster), [index], index, [], options, environ)


def backend_of(options: LaunchOptions, environ: Mapping[str, str]) -> Backend:
    """The workers' Keras backend: --backend, else the launcher's KERAS_BACKEND, else TensorFlow."""
    backend = options.backend or environ.get("KERAS_BACKEND", "").strip().lower() or "tensorflow"
    if backend not in BACKENDS:
        raise ConfigError(f"KERAS_BACKEND={backend} has no tfscale engine", where="KERAS_BACKEND / --backend",
                          fix="pass --backend tensorflow or --backend jax")
    return backend


def cluster_env(cluster: Mapping[str, list[str]], rank: int, backend: str) -> dict[str, str]:
    """How a worker learns the cluster: TF_CONFIG, or what keras.distribution.initialize reads (JAX)."""
    if backend == "jax":
        return {"KERAS_BACKEND": "jax", "KERAS_DISTRIBUTION_JOB_ADDRESSES": ",".join(cluster["worker"]),
                "KERAS_DISTRIBUTION_NUM_PROCESSES": str(len(cluster["worker"])),
                "KERAS_DISTRIBUTION_PROCESS_ID": str(rank)}
    return {"TF_CONFIG": tf_config.make(cluster, "worker", rank)}


def _finish(manager: LaunchManager, cluster, ranks, node, ports, options: LaunchOptions, environ) -> LaunchPlan:
    world = len(cluster["worker"])
    backend = backend_of(options, environ)
    gpus = [] if manager in MANAGED else visible_gpus(environ)
    gpu_shares = split_gpus(gpus, len(ranks), options.replicas_per_worker)
    threads = options.threads or _threads_per_worker(len(ranks), environ)
    cores = _cores()
    bind = options.bind_cores and manager not in MANAGED and len(cores) >= threads * len(ranks)
    envs = []
    for local, rank in enumerate(ranks):
        worker = WorkerEnv(rank=rank, world_size=world, local_rank=local, local_world_size=len(ranks),
                           node_rank=node, replicas_per_worker=options.replicas_per_worker or None,
                           collective_timeout=options.collective_timeout or None,
                           join_timeout=options.join_timeout or None,
                           cpus=tuple(cores[local * threads:(local + 1) * threads]) if bind else None,
                           address=cluster["worker"][rank])
        env = {**cluster_env(cluster, rank, backend), **worker.to_environ(),
               "PYTHONUNBUFFERED": environ.get("PYTHONUNBUFFERED", "1")}
        if manager not in MANAGED:
            env.update(WORKER_ENV)
        if gpu_shares is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_shares[local])
            if len(gpus) < len(ranks):
                env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
        for key, value in thread_env(threads).items():
            env[key] = environ.get(key, value)
        env["GRPC_EXPERIMENTS"] = environ.get("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
        for key, value in quiet.variables().items():  # TensorFlow's info lines off, unless verbose
            env[key] = environ.get(key, value)
        env.update(options.env)
        envs.append(env)
    return LaunchPlan(manager, {k: list(v) for k, v in cluster.items()}, list(ranks), world, node, list(ports), envs)


def thread_env(intra_op: int) -> dict[str, str]:
    """Thread settings for one worker that may use `intra_op` cores.

    One inter-op thread per core as well: a data-parallel training step is a
    chain of ops; more parallel ops than cores only contend for them.
    """
    return {"TF_NUM_INTRAOP_THREADS": str(intra_op), "TF_NUM_INTEROP_THREADS": str(intra_op),
            "OMP_NUM_THREADS": str(intra_op)}


def _threads_per_worker(local_workers: int, environ: Mapping[str, str]) -> int:
    if environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(environ["SLURM_CPUS_PER_TASK"]))
    return max(1, (len(_cores()) or os.cpu_count() or 1) // local_workers)


def _cores() -> list[int]:
    """The cores this process may run on, sorted; [] where affinity is unknown (not Linux: no binding)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no binding either
        return []


def visible_gpus(environ: Mapping[str, str]) -> list[str]:
    """The GPU ids this host offers its workers, without importing TensorFlow."""
    if "CUDA_VISIBLE_DEVICES" in environ:
        ids = [g.strip() for g in environ["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
        return [] if ids in ([], ["-1"]) else ids
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def split_gpus(gpus: list[str], workers: int, per_worker: int | None) -> list[list[str]] | None:
    """Each worker's GPUs: contiguous equal shares, or shared round-robin when there are fewer GPUs than workers.

    Returns None on a host without GPUs.

    Raises:
        ConfigError: more GPUs per worker asked for than the host has.
    """
    if not gpus:
        return None
    if per_worker is not None and per_worker * workers > len(gpus):
        raise ConfigError(f"{workers} worker(s) x {per_worker} GPU(s) asked for, but this host has {len(gpus)}",
                          where="--replicas-per-worker / -n",
                          fix=f"ask for at most {max(1, len(gpus) // workers)} replica(s) per worker")
    if len(gpus) < workers:
        log.warning("%d workers share %d GPU(s): each worker gets one, memory grows on demand", workers, len(gpus))
        return [[gpus[i % len(gpus)]] for i in range(workers)]
    share = per_worker or len(gpus) // workers
    return [gpus[i * share:(i + 1) * share] for i in range(workers)]
