"""`mirrored`: synchronous replicas on the GPUs of one machine, or on logical CPU devices."""

from __future__ import annotations

from tfscale.cluster.detection.devices import configure_cpu_replicas
from tfscale.errors import ClusterError
from tfscale.strategy.registry import register


def local_devices(topology, config) -> list[str]:
    """The devices one worker replicates over: named ones, GPUs, or `replicas` logical CPUs."""
    if config.devices:
        return list(config.devices)
    if topology.accelerator == "GPU":
        n = config.replicas or topology.local_accelerators
        if n > topology.local_accelerators:
            raise ClusterError(f"{n} GPU replicas asked for, but this machine has {topology.local_accelerators} GPU(s)",
                               where="replicas", fix=f"ask for at most {topology.local_accelerators} replicas")
        return [f"/gpu:{i}" for i in range(n)]
    n = config.replicas or 1
    configure_cpu_replicas(n)
    return [f"/cpu:{i}" for i in range(n)]


def _cross_device_ops(config, devices):
    import tensorflow as tf

    if config.communication == "nccl":
        return tf.distribute.NcclAllReduce()
    if config.communication == "ring":
        return tf.distribute.HierarchicalCopyAllReduce()
    if all("cpu" in d.lower() for d in devices):
        return tf.distribute.ReductionToOneDevice()
    return None


@register("mirrored", "synchronous replicas on one machine: its GPUs, or N logical CPU devices (`replicas=N`)", one_process=True)
def build(topology, config):
    import tensorflow as tf

    devices = local_devices(topology, config)
    return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=_cross_device_ops(config, devices))
