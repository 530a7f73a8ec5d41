"""The launcher-to-worker contract: every ``TFSCALE_*`` variable, and the port defaults, defined once.

A launcher (`tfscale launch`, its Slurm and Kubernetes forms, a Ray
adapter) tells each worker its place with environment variables; the worker
side (`StrategyConfig`, `Topology` detection, `tfscale.launch`'s function
workers, `tfscale.quiet`) reads them back. Both sides use `WorkerEnv`:

    env = WorkerEnv(rank=1, world_size=2, local_rank=0, local_world_size=1, node_rank=1)
    child_environ = {**os.environ, **env.to_environ()}      # launcher side
    WorkerEnv.from_environ(os.environ).rank                 # worker side -> 1

`to_environ` writes only the fields that are set; `from_environ` reads what
is there (missing: None, or the field's default) and raises ClusterError
naming the variable when a value is not a number.

Standard library only, low in tfscale's layers (above `errors` and `quiet`,
whose TFSCALE_VERBOSE it re-exports: quiet.py also runs as a bare script):
`tfscale.config` and `tfscale.cluster` import it. TF_CONFIG and KERAS_DISTRIBUTION_* are
TensorFlow's and Keras's own contracts, not listed here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from tfscale import quiet
from tfscale.errors import ClusterError

DEFAULT_PORT = 12345        # first worker port of `--hosts` nodes and of Kubernetes pods (TFSCALE_PORT overrides)
SLURM_DEFAULT_PORT = 8888   # port base under Slurm: host's first task listens here, the next on +1... (TFSCALE_PORT)
# The exit code of a worker whose cluster broke under it (a peer gone or silent: TensorFlow's Unavailable,
# DeadlineExceeded, Aborted, Cancelled errors): EX_TEMPFAIL. Its launcher then looks for the peer (peers.py).
PEER_LOST_EXIT = 75
# The exit code of a worker that saved a checkpoint on a preemption signal (SIGTERM, Slurm's --signal) and
# stopped: 128 + SIGTERM, as a shell reports a process ended by SIGTERM, and what Kubernetes' pod failure
# policies and Slurm's requeue expect of a terminated job. "Restart me": the run resumes from that checkpoint.
PREEMPTED_EXIT = 143

RANK = "TFSCALE_RANK"                              # this worker's place among all workers
WORLD_SIZE = "TFSCALE_WORLD_SIZE"                  # workers in the whole cluster
LOCAL_RANK = "TFSCALE_LOCAL_RANK"                  # its place on this host
LOCAL_WORLD_SIZE = "TFSCALE_LOCAL_WORLD_SIZE"      # workers on this host
NODE_RANK = "TFSCALE_NODE_RANK"                    # this host's place
RESTART = "TFSCALE_RESTART"                        # how many times the group was restarted
REPLICAS_PER_WORKER = "TFSCALE_REPLICAS_PER_WORKER"  # --replicas-per-worker (read by StrategyConfig)
COLLECTIVE_TIMEOUT = "TFSCALE_COLLECTIVE_TIMEOUT"    # --collective-timeout (read by StrategyConfig)
JOIN_TIMEOUT = "TFSCALE_JOIN_TIMEOUT"                # --join-timeout (read by StrategyConfig)
CPUS = "TFSCALE_CPUS"                              # cores the worker binds itself to ("0,1")
PORT = "TFSCALE_PORT"                              # port base (Slurm, Kubernetes)
K8S_JOB = "TFSCALE_K8S_JOB"                        # Kubernetes: the Indexed Job's name (pods are <job>-<index>)
K8S_SERVICE = "TFSCALE_K8S_SERVICE"                # Kubernetes: the headless Service giving pods DNS names
NUM_WORKERS = "TFSCALE_NUM_WORKERS"                # Kubernetes: the Job's completions
FUNCTION_WORKER = "TFSCALE_FUNCTION_WORKER"        # `tfscale.launch(fn)`: the folder with the function's payload
VERBOSE = quiet.VERBOSE_ENV                        # 1: TensorFlow's info lines and every worker line shown
ADDRESS = "TFSCALE_ADDRESS"                        # this worker's own "host:port" in the cluster (the plan)
TUNE_CONTROL = "TFSCALE_TUNE_CONTROL"              # a tuner's control folder, read by its trial workers

# field -> variable, in the order `to_environ` writes them
_VARIABLES = {
    "rank": RANK, "world_size": WORLD_SIZE, "local_rank": LOCAL_RANK, "local_world_size": LOCAL_WORLD_SIZE,
    "node_rank": NODE_RANK, "restart": RESTART, "replicas_per_worker": REPLICAS_PER_WORKER,
    "collective_timeout": COLLECTIVE_TIMEOUT, "join_timeout": JOIN_TIMEOUT, "cpus": CPUS, "port": PORT, "k8s_job": K8S_JOB,
    "k8s_service": K8S_SERVICE, "num_workers": NUM_WORKERS,
    "function_worker": FUNCTION_WORKER, "verbose": VERBOSE, "address": ADDRESS,
}
NAMES = tuple(_VARIABLES.values()) + (TUNE_CONTROL,)

_TRUE = ("1", "true", "yes", "on")


@dataclasses.dataclass(frozen=True)
class WorkerEnv:
    """What a launcher tells one worker; each field is one ``TFSCALE_*`` variable (None: not set).

    Attributes:
        rank, world_size: this worker's place among all workers, and their number.
        local_rank, local_world_size: its place among this host's workers, and their number.
        node_rank: this host's place among the hosts.
        restart: how many times the launcher restarted the group (0: first start).
        replicas_per_worker: ``--replicas-per-worker``; None: the strategy's default.
        collective_timeout: ``--collective-timeout`` in seconds; None: TensorFlow's default.
        join_timeout: ``--join-timeout`` in seconds; None: the strategy's default (900 s).
        cpus: the cores the worker binds itself to.
        port: the port base under Slurm or Kubernetes.
        k8s_job, k8s_service, num_workers: a Kubernetes Indexed Job's shape (with JOB_COMPLETION_INDEX).
        function_worker: the payload folder of a `tfscale.launch(fn)` worker.
        verbose: True shows TensorFlow's info lines and every worker line.
        address: this worker's own "host:port" in the cluster, as the launcher's plan gives it (its --hosts
            entry, 127.0.0.1 for a local launch): the JAX engine's CPU collectives listen on and announce
            that host, whatever the machine's hostname resolves to.
    """

    rank: int | None = None
    world_size: int | None = None
    local_rank: int | None = None
    local_world_size: int | None = None
    node_rank: int | None = None
    restart: int | None = None
    replicas_per_worker: int | None = None
    collective_timeout: float | None = None
    join_timeout: float | None = None
    cpus: tuple[int, ...] | None = None
    port: int | None = None
    k8s_job: str | None = None
    k8s_service: str | None = None
    num_workers: int | None = None
    function_worker: str | None = None
    verbose: bool | None = None
    address: str | None = None

    def to_environ(self) -> dict[str, str]:
        """The variables of the fields that are set (not None)."""
        out = {}
        for field, variable in _VARIABLES.items():
            value = getattr(self, field)
            if value is None:
                continue
            if isinstance(value, bool):
                out[variable] = "1" if value else "0"
            elif field == "cpus":
                out[variable] = ",".join(str(c) for c in value)
            else:
                out[variable] = str(value)
        return out

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> "WorkerEnv":
        """The fields found in `environ` (unset or empty variables give None).

        Raises:
            ClusterError: a variable that should hold a number does not.
        """
        values = {}
        for field in dataclasses.fields(cls):
            variable = _VARIABLES[field.name]
            raw = environ.get(variable, "").strip()
            if not raw:
                continue
            kind = field.type if isinstance(field.type, str) else str(field.type)
            try:
                if kind.startswith("int"):
                    values[field.name] = int(raw)
                elif kind.startswith("float"):
                    values[field.name] = float(raw)
                elif kind.startswith("bool"):
                    values[field.name] = raw.lower() in _TRUE
                elif kind.startswith("tuple"):
                    values[field.name] = tuple(int(c) for c in raw.split(",") if c.strip())
                else:
                    values[field.name] = raw
            except ValueError:
                raise ClusterError(f"{variable}={raw!r} is not a number", where=variable,
                                   fix="set it through `tfscale launch` (or the manifest it prints), or unset it"
                                   ) from None
        return cls(**values)


def verbose(environ: Mapping[str, str]) -> bool:
    """True when TFSCALE_VERBOSE asks for everything (1, true, yes, on)."""
    return environ.get(VERBOSE, "").strip().lower() in _TRUE
