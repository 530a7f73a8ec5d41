"""Where am I: the cluster manager, this process's role, and the replicas that follow.

`detect` looks, in order, at the user's explicit choice, TF_CONFIG, the
variables `keras.distribution.initialize` reads (KERAS_DISTRIBUTION_*, what
`tfscale launch --backend jax` sets), Slurm, Kubernetes, a TPU, local GPUs and
the CPU, and records why it decided, so `tfscale info` can say it. It is
backend-free: the TensorFlow engine builds TF_CONFIG resolvers from a
Topology, the JAX engine calls `jax.distributed.initialize` with its
`coordinator`, `num_workers` and `rank`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from tfscale import worker_env
from tfscale.cluster.detection import environment, tf_config
from tfscale.errors import ClusterError
from tfscale.vocabulary import ClusterChoice, ClusterManager


@dataclasses.dataclass(frozen=True)
class Topology:
    """The cluster this process belongs to.

    Attributes:
        manager: who described the cluster: "tf_config", "keras_distribution", "slurm", "kubernetes",
            "tpu" or "none".
        task_type: this process's job ("worker", "chief", "ps", "evaluator").
        task_index: this process's index within its job.
        cluster: job name -> list of "host:port" (empty for a single process).
        accelerator: "TPU", "GPU" or "CPU".
        local_accelerators: GPUs (or 0) visible to this process.
        tpu: the TPU address to resolve ("" for a local TPU), or None.
        reasons: why each decision was taken, in order.
    """

    manager: ClusterManager = "none"
    task_type: str = "worker"
    task_index: int = 0
    cluster: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    accelerator: str = "CPU"
    local_accelerators: int = 0
    tpu: str | None = None
    reasons: tuple[str, ...] = ()

    @property
    def num_workers(self) -> int:
        """Processes that train (chief + workers); 1 for a single process."""
        return max(1, len(self.cluster.get("chief", ())) + len(self.cluster.get("worker", ())))

    @property
    def is_chief(self) -> bool:
        """The process that writes checkpoints, logs and exports."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_index == 0 and "chief" not in self.cluster

    @property
    def rank(self) -> int:
        """This worker's place among the training processes (the chief is 0)."""
        if self.task_type == "worker" and "chief" in self.cluster:
            return self.task_index + len(self.cluster["chief"])
        return self.task_index

    @property
    def coordinator(self) -> str | None:
        """The first training process's address (the JAX engine's coordinator); None for a single process."""
        first = self.cluster.get("chief") or self.cluster.get("worker")
        return first[0] if first and self.num_workers > 1 else None

    @property
    def has_parameter_servers(self) -> bool:
        return bool(self.cluster.get("ps"))

    def to_dict(self) -> dict[str, Any]:
        return {"manager": self.manager, "task_type": self.task_type, "task_index": self.task_index,
                "rank": self.rank, "num_workers": self.num_workers, "is_chief": self.is_chief, "coordinator": self.coordinator,
                "cluster": {k: list(v) for k, v in self.cluster.items()}, "accelerator": self.accelerator,
                "local_accelerators": self.local_accelerators, "tpu": self.tpu, "reasons": list(self.reasons)}


def detect(cluster: ClusterChoice = "auto", *, tpu: str | None = None,
           environ: Mapping[str, str] | None = None, gpus: int | None = None) -> Topology:
    """Finds the cluster this process is part of.

    Args:
        cluster: "auto", or one manager to use ("tf_config", "keras_distribution",
            "slurm", "kubernetes", "tpu", "none").
        tpu: a TPU name or address the user asked for (forces a TPU).
        environ: the environment to read (os.environ by default).
        gpus: the number of local GPUs (default: asks TensorFlow; the JAX engine passes its own count).

    Raises:
        ClusterError: the chosen manager's environment is missing or malformed.
    """
    environ = os.environ if environ is None else environ
    reasons: list[str] = []
    if gpus is None:
        from tfscale.cluster.detection.devices import local_gpus
        gpus = local_gpus()
    accelerator, local = ("GPU", gpus) if gpus else ("CPU", 0)
    reasons.append(f"{gpus} local GPU(s)" if gpus else "no GPU: using the CPU")

    tpu_target, tpu_reason = environment.tpu_address(environ, tpu)
    if cluster == "tpu" or (cluster == "auto" and tpu_target is not None):
        if tpu_target is None and cluster == "tpu":
            tpu_target = ""
        reasons.append(tpu_reason if cluster == "auto" else "TPU asked for explicitly")
        pod = environment.tpu_pod_cluster(environ)  # a multi-host slice: every worker runs the same program
        if pod is None:
            return Topology(manager="tpu", accelerator="TPU", tpu=tpu_target, reasons=tuple(reasons))
        spec, index = pod
        reasons.append(f"TPU slice: worker {index} of {len(spec['worker'])} (TPU_WORKER_ID, TPU_WORKER_HOSTNAMES)")
        return Topology(manager="tpu", task_index=index, cluster={"worker": tuple(spec["worker"])},
                        accelerator="TPU", tpu=tpu_target, reasons=tuple(reasons))

    found = _find_cluster(cluster, environ, gpus, reasons)
    if found is None:
        return Topology(accelerator=accelerator, local_accelerators=local, reasons=tuple(reasons))
    manager, spec, task_type, index = found
    return Topology(manager=manager, task_type=task_type, task_index=index,
                    cluster={k: tuple(v) for k, v in spec.items()}, accelerator=accelerator,
                    local_accelerators=local, reasons=tuple(reasons))


def _find_cluster(cluster: ClusterChoice, environ: Mapping[str, str], gpus: int, reasons: list[str]):
    if cluster in ("auto", "tf_config") and environ.get("TF_CONFIG", "").strip():
        config = tf_config.parse(environ["TF_CONFIG"])
        task = config["task"]
        n = sum(len(v) for k, v in config["cluster"].items() if k in ("chief", "worker"))
        reasons.append(f"TF_CONFIG: {task['type']} {task['index']} of {n} training process(es)")
        return "tf_config", config["cluster"], task["type"], task["index"]
    if cluster == "tf_config":
        raise ClusterError("cluster 'tf_config' was asked for but TF_CONFIG is not set", where="TF_CONFIG",
                           fix="set TF_CONFIG, start the workers with `tfscale launch`, or use cluster='auto'")
    if cluster in ("auto", "keras_distribution") and environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "").strip():
        spec, index = environment.keras_distribution_cluster(environ)
        reasons.append(f"KERAS_DISTRIBUTION_*: process {index} of {len(spec['worker'])}")
        return "keras_distribution", spec, "worker", index
    if cluster == "keras_distribution":
        raise ClusterError("cluster 'keras_distribution' was asked for but KERAS_DISTRIBUTION_NUM_PROCESSES is "
                           "not set", where="KERAS_DISTRIBUTION_* variables",
                           fix="start the processes with `tfscale launch --backend jax`, or use cluster='auto'")
    if cluster in ("auto", "slurm"):
        port = worker_env.WorkerEnv.from_environ(environ).port  # None: Slurm's reserved ports, else the default
        slurm = environment.slurm_cluster(environ, port_base=port, gpus_per_node=gpus)
        if slurm is not None:
            spec, index = slurm
            reasons.append(f"Slurm job step: task {index} of {len(spec['worker'])}")
            return "slurm", spec, "worker", index
        if cluster == "slurm":
            raise ClusterError("cluster 'slurm' was asked for but this is not a Slurm job step",
                               where="SLURM_PROCID / SLURM_STEP_NODELIST",
                               fix="start the command with `srun`, or use cluster='auto'")
    if cluster in ("auto", "kubernetes"):
        k8s = environment.kubernetes_cluster(environ)
        if k8s is not None:
            spec, index = k8s
            reasons.append(f"Kubernetes Indexed Job: pod {index} of {len(spec['worker'])}")
            return "kubernetes", spec, "worker", index
        if cluster == "kubernetes":
            raise ClusterError("cluster 'kubernetes' was asked for but this pod has no tfscale job variables",
                               where="JOB_COMPLETION_INDEX / TFSCALE_K8S_*",
                               fix="deploy with the manifest from `tfscale launch --print-manifest`")
    reasons.append("no cluster manager found (TF_CONFIG, Slurm, Kubernetes): a single process"
                   if cluster == "auto" else "cluster 'none' asked for: a single process")
    return None
