"""Readers of cluster managers' environments: Slurm, Kubernetes, TPU hosts.

Each function takes the environment as a mapping (os.environ by default in
`detect`), so tests fake the environment, not the code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tfscale.cluster.detection import kubernetes, slurm
from tfscale.errors import ClusterError


def slurm_cluster(environ: Mapping[str, str], *, port_base: int | None = None, gpus_per_node: int = 0):
    """Returns (cluster_spec, task_index) for a Slurm job step, or None outside Slurm.

    Reads SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST and
    SLURM_STEP_TASKS_PER_NODE with TensorFlow's SlurmClusterResolver where the
    nodes have GPUs. SlurmClusterResolver cannot describe a CPU-only job (it
    deals one task per GPU slot and gets none), so there the same packing -
    hosts sorted, port_base + local task index - is done by `slurm.cpu_cluster`
    (standard library only, shared with the launcher).
    """
    if not gpus_per_node:
        return slurm.cpu_cluster(environ, port_base=port_base)
    if "SLURM_PROCID" not in environ or "SLURM_STEP_NODELIST" not in environ:
        return None
    import tensorflow as tf

    try:  # TensorFlow's resolver takes a base: the first reserved port, when Slurm reserved consecutive ones
        base = slurm.step_ports(environ, port_base, 1)[0]
        return _slurm_with_gpus(tf.distribute.cluster_resolver, environ, base, gpus_per_node)
    except (RuntimeError, ValueError, KeyError, IndexError) as e:
        raise ClusterError(f"the Slurm environment could not be read: {e}", where="SLURM_* variables",
                           fix="run under `srun` (one task per worker), or pass cluster='none'") from None


def _slurm_with_gpus(resolver_lib, environ: Mapping[str, str], port_base: int, gpus_per_node: int):
    saved = dict(os.environ)
    try:  # the resolver reads os.environ itself
        os.environ.update({k: v for k, v in environ.items() if k.startswith("SLURM_")})
        resolver = resolver_lib.SlurmClusterResolver(port_base=port_base, gpus_per_node=gpus_per_node, auto_set_gpu=False)
        spec = resolver.cluster_spec().as_dict()
        return {k: list(v) for k, v in spec.items()}, resolver.task_id
    finally:
        os.environ.clear()
        os.environ.update(saved)


def kubernetes_cluster(environ: Mapping[str, str]):
    """Returns (cluster_spec, task_index) for a pod of a tfscale Indexed Job, or None (`kubernetes.pod_cluster`)."""
    return kubernetes.pod_cluster(environ)


def keras_distribution_cluster(environ: Mapping[str, str]):
    """Returns (cluster_spec, process_id) from the variables `keras.distribution.initialize` reads.

    KERAS_DISTRIBUTION_JOB_ADDRESSES lists every process's address, or only the
    coordinator's (process 0); KERAS_DISTRIBUTION_NUM_PROCESSES and _PROCESS_ID
    say how many processes there are and which one this is.
    """
    try:
        n = int(environ["KERAS_DISTRIBUTION_NUM_PROCESSES"])
        index = int(environ.get("KERAS_DISTRIBUTION_PROCESS_ID", "0"))
    except ValueError as e:
        raise ClusterError(f"a KERAS_DISTRIBUTION_* variable is not a number: {e}", where="KERAS_DISTRIBUTION_*",
                           fix="set them with `tfscale launch --backend jax`, or give whole numbers") from None
    addresses = [a.strip() for a in environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES", "").split(",") if a.strip()]
    if n < 1 or not 0 <= index < n or not addresses or len(addresses) not in (1, n):
        raise ClusterError(f"KERAS_DISTRIBUTION_* describe {n} process(es), process id {index} and "
                           f"{len(addresses)} address(es)", where="KERAS_DISTRIBUTION_* variables",
                           fix="give NUM_PROCESSES >= 1, 0 <= PROCESS_ID < NUM_PROCESSES, and JOB_ADDRESSES with "
                               "the coordinator's host:port (or every process's)")
    if len(addresses) == 1 and n > 1:  # only the coordinator is named: the others are known by index
        addresses += [f"(process {i})" for i in range(1, n)]
    return {"worker": addresses}, index


# The port of the JAX coordinator on TPU slices: `coordinator_port` of jax/_src/clusters/cloud_tpu_cluster.py
# (JAX 0.4 to 0.10.2), which jax.distributed.initialize() uses there; tfscale passes the same address explicitly.
TPU_COORDINATOR_PORT = 8482


def tpu_pod_hosts(environ: Mapping[str, str]) -> list[str]:
    """The hosts of this TPU slice, in worker-id order, as TPU VMs announce them ([] where none are).

    TPU_PROCESS_ADDRESSES ("host:port,...") first, then TPU_WORKER_HOSTNAMES, as JAX's Cloud TPU cluster reads.
    """
    listed = environ.get("TPU_PROCESS_ADDRESSES") or environ.get("TPU_WORKER_HOSTNAMES") or ""
    return [h.strip().split(":")[0] for h in listed.split(",") if h.strip()]


def tpu_pod_cluster(environ: Mapping[str, str]):
    """Returns (cluster_spec, process_id) for a multi-host TPU slice (or slices), or None for one host.

    Reads what JAX's Cloud TPU cluster reads: the slice's hosts (`tpu_pod_hosts`), TPU_WORKER_ID (this host's
    place in its slice) and, for several slices (Multislice), MEGASCALE_NUM_SLICES, MEGASCALE_SLICE_ID and
    MEGASCALE_COORDINATOR_ADDRESS. The coordinator is worker 0 of slice 0 on port 8482, as
    `jax.distributed.initialize()` would choose there; the other slices' hosts are not announced, so they
    are known by process id only.

    Raises:
        ClusterError: the variables are inconsistent (no or a bad TPU_WORKER_ID, a slice id out of range).
    """
    hosts = tpu_pod_hosts(environ)
    try:
        slices = int(environ.get("MEGASCALE_NUM_SLICES") or 1)
        slice_id = int(environ.get("MEGASCALE_SLICE_ID") or 0)
        worker = int(environ["TPU_WORKER_ID"]) if len(hosts) * slices > 1 else 0
    except (KeyError, ValueError) as e:
        raise ClusterError(f"this TPU slice's variables are incomplete or not numbers ({e!r})",
                           where="TPU_WORKER_ID / MEGASCALE_* variables",
                           fix="run on the TPU VM's workers as set up by Cloud TPU or GKE, or set TPU_WORKER_ID to "
                               "this host's index in TPU_WORKER_HOSTNAMES") from None
    if len(hosts) * slices <= 1:
        return None
    if not 0 <= worker < len(hosts) or not 0 <= slice_id < slices:
        raise ClusterError(f"TPU_WORKER_ID={worker} of {len(hosts)} host(s), slice {slice_id} of {slices}",
                           where="TPU_WORKER_ID / TPU_WORKER_HOSTNAMES / MEGASCALE_SLICE_ID",
                           fix="give a TPU_WORKER_ID below the number of TPU_WORKER_HOSTNAMES, and a "
                               "MEGASCALE_SLICE_ID below MEGASCALE_NUM_SLICES")
    if slices == 1:
        return {"worker": [f"{h}:{TPU_COORDINATOR_PORT}" for h in hosts]}, worker
    coordinator = (environ.get("MEGASCALE_COORDINATOR_ADDRESS") or hosts[0]).split(":")[0]
    addresses = [f"{coordinator}:{TPU_COORDINATOR_PORT}"] + [f"(process {i})" for i in range(1, len(hosts) * slices)]
    return {"worker": addresses}, slice_id * len(hosts) + worker


def tpu_address(environ: Mapping[str, str], explicit: str | None = None) -> tuple[str | None, str]:
    """Returns (the TPU to resolve, why), or (None, why) where no TPU is announced.

    "" means the TPU attached to this VM (Colab, Kaggle, Cloud TPU VM).
    """
    if explicit is not None:
        return explicit, f"TPU {explicit or 'local'!r} asked for explicitly"
    if environ.get("TPU_NAME"):
        return environ["TPU_NAME"], f"TPU_NAME={environ['TPU_NAME']} (Cloud TPU)"
    if environ.get("COLAB_TPU_ADDR"):
        return "grpc://" + environ["COLAB_TPU_ADDR"], "COLAB_TPU_ADDR is set (Colab TPU)"
    if environ.get("TPU_ACCELERATOR_TYPE"):
        where = "Kaggle" if "KAGGLE_KERNEL_RUN_TYPE" in environ else "TPU VM"
        return "", f"TPU_ACCELERATOR_TYPE={environ['TPU_ACCELERATOR_TYPE']} ({where})"
    if tpu_pod_hosts(environ):
        return "", "TPU_WORKER_HOSTNAMES is set (a TPU slice's worker)"
    return None, "no TPU variables (TPU_NAME, COLAB_TPU_ADDR, TPU_ACCELERATOR_TYPE, TPU_WORKER_HOSTNAMES)"
