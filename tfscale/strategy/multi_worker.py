"""`multi_worker`: synchronous data parallelism across processes and machines (collective all-reduce)."""

from __future__ import annotations

from tfscale.cluster.detection.devices import configure_cpu_replicas
from tfscale.strategy import communication
from tfscale.strategy.registry import register


def cluster_resolver(topology):
    """A `tf.distribute` resolver for the topology's cluster (an empty one for a single process)."""
    import tensorflow as tf

    spec = tf.train.ClusterSpec({k: list(v) for k, v in topology.cluster.items()})
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        spec, task_type=topology.task_type if topology.cluster else None,
        task_id=topology.task_index if topology.cluster else None, rpc_layer="grpc",
        num_accelerators={"GPU": topology.local_accelerators} if topology.accelerator == "GPU" else {})


@register("multi_worker", "synchronous replicas across worker processes/machines (collective all-reduce); "
                          "Keras 3 fit made to work")
def build(topology, config):
    from tfscale.strategy.keras_compat import MultiWorkerStrategy

    cpu_replicas = 1
    if topology.accelerator == "CPU":
        cpu_replicas = config.replicas or 1
        configure_cpu_replicas(cpu_replicas)
    return MultiWorkerStrategy(cluster_resolver(topology), communication.options(config), cpu_replicas)
