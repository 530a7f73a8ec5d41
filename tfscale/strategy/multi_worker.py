"""`multi_worker`: synchronous data parallelism across processes and machines (collective all-reduce)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

from tfscale.cluster.detection.devices import configure_cpu_replicas
from tfscale.config.strategy import DEFAULT_JOIN_TIMEOUT
from tfscale.strategy import communication
from tfscale.strategy.registry import Capability, register


def cluster_resolver(topology):
    """A `tf.distribute` resolver for the topology's cluster (an empty one for a single process)."""
    import tensorflow as tf

    spec = tf.train.ClusterSpec({k: list(v) for k, v in topology.cluster.items()})
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, task_type=topology.task_type if topology.cluster else None,
        task_id=topology.task_index if topology.cluster else None, rpc_layer="grpc",
        num_accelerators={"GPU": topology.local_accelerators} if topology.accelerator == "GPU" else {})


@register("multi_worker", "synchronous replicas across worker processes/machines (collective all-reduce); "
                          "Keras 3 fit made to work", capabilities={Capability.LOCKSTEP, Capability.CLUSTER_RUNTIME})
def build(topology, config):
    from tfscale.compat.keras.multi_worker import MultiWorkerStrategy

    cpu_replicas = 1
    if topology.accelerator == "CPU":
        cpu_replicas = config.replicas or 1
        configure_cpu_replicas(cpu_replicas)
    with join_deadline(topology, config.join_timeout or DEFAULT_JOIN_TIMEOUT):
        return MultiWorkerStrategy(cluster_resolver(topology), communication.options(config), cpu_replicas)


@contextlib.contextmanager
def join_deadline(topology, seconds: float):
    """Ends this worker with a tfscale error naming the workers that never joined, if the cluster has not
    formed within `seconds` (TensorFlow's registration has no deadline; `cluster.launch.join_watchdog` says
    why it runs in a process of its own)."""
    if topology.num_workers < 2:
        yield
        return
    peers = [(f"{job} {i} at {address}", address) for job, addresses in sorted(topology.cluster.items())
             for i, address in enumerate(addresses) if (job, i) != (topology.task_type, topology.task_index)]
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "tfscale.cluster.launch.join_watchdog", str(seconds), str(os.getpid()),
         f"{topology.task_type} {topology.task_index} ({topology.manager})", json.dumps(peers)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": _package_path()})
    try:
        yield
    finally:
        watchdog.stdin.close()  # formed (or failed here): the watchdog exits
        watchdog.wait()


def _package_path() -> str:
    """PYTHONPATH for the watchdog: the folder tfscale is imported from first (an uninstalled checkout too)."""
    import tfscale

    root = os.path.dirname(os.path.dirname(os.path.abspath(tfscale.__file__)))
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
