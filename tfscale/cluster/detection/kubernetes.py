"""A pod of tfscale's Kubernetes Indexed Job: its cluster from JOB_COMPLETION_INDEX. Standard library only.

`tfscale launch --print-manifest` writes an Indexed Job with a headless
Service; each pod knows its index (JOB_COMPLETION_INDEX, set by Kubernetes)
and the shape of the job (TFSCALE_K8S_JOB, TFSCALE_K8S_SERVICE,
TFSCALE_NUM_WORKERS, TFSCALE_PORT: `tfscale.worker_env`). Pod ``i`` is
reachable at ``<job>-<i>.<service>``. Both `Topology` detection and the
launcher in the pod (`tfscale launch -- CMD`, which execs CMD with TF_CONFIG
and TFSCALE_RANK...) read it.
"""

from __future__ import annotations

from collections.abc import Mapping

from tfscale import worker_env
from tfscale.errors import ClusterError

INDEX = "JOB_COMPLETION_INDEX"


def pod_cluster(environ: Mapping[str, str]):
    """Returns (cluster_spec, task_index) for a pod of a tfscale Indexed Job, or None elsewhere.

    Raises:
        ClusterError: a variable that is not a number, or an index outside the job.
    """
    if "KUBERNETES_SERVICE_HOST" not in environ:
        return None
    needed = (INDEX, worker_env.K8S_JOB, worker_env.K8S_SERVICE, worker_env.NUM_WORKERS)
    if not all(environ.get(k, "").strip() for k in needed):
        return None
    try:
        index = int(environ[INDEX])
    except ValueError:
        raise ClusterError(f"{INDEX}={environ[INDEX]!r} is not a number", where="pod environment",
                           fix="run the pods as an Indexed Job (`tfscale launch --print-manifest`)") from None
    pod = worker_env.WorkerEnv.from_environ(environ)
    if pod.num_workers < 1 or not 0 <= index < pod.num_workers:
        raise ClusterError(f"pod index {index} of a job of {pod.num_workers} worker(s)",
                           where=f"{INDEX} / {worker_env.NUM_WORKERS}",
                           fix="regenerate the manifest with `tfscale launch --print-manifest -n N`")
    port = pod.port or worker_env.DEFAULT_PORT
    return {"worker": [f"{pod.k8s_job}-{i}.{pod.k8s_service}:{port}" for i in range(pod.num_workers)]}, index
