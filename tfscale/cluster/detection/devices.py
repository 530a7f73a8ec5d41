"""Local TensorFlow devices: the GPUs TensorFlow sees, logical CPU replicas and thread pools.

TensorFlow is imported inside each function: the TensorFlow engine calls them, the JAX engine never does.
"""

from __future__ import annotations

import logging

from tfscale.errors import ClusterError

log = logging.getLogger("tfscale")


def local_gpus() -> int:
    """Number of physical GPUs visible to TensorFlow (does not initialize devices)."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def configure_cpu_replicas(n: int) -> None:
    """Splits the CPU into `n` logical devices, so n replicas run on one CPU.

    Must run before TensorFlow initializes its devices. Asking again for the
    number already configured is fine.

    Raises:
        ClusterError: devices were already initialized with another layout.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if (current is None and n == 1) or (current is not None and len(current) == n):
        return  # one replica is the CPU as it is
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have == n:
            return
        raise ClusterError(
            f"{n} CPU replicas were asked for, but TensorFlow has already initialized its devices "
            f"({have} logical CPU device(s))",
            where="tfscale.Scale(..., replicas=...)",
            fix="create the Scale before any TensorFlow op runs or any model is built "
                "(first thing in the script), or restart the Python process / notebook kernel") from None
    log.info("split the CPU into %d logical devices", n)


def configure_threads(intra_op: int | None, inter_op: int | None) -> None:
    """Sets TensorFlow's thread pools, before devices are initialized."""
    import tensorflow as tf

    try:
        if intra_op:
            tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        if inter_op:
            tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError:
        if (intra_op and tf.config.threading.get_intra_op_parallelism_threads() != intra_op) or (
                inter_op and tf.config.threading.get_inter_op_parallelism_threads() != inter_op):
            raise ClusterError("thread settings were given after TensorFlow started its thread pools",
                               where="strategy.intra_op_threads / inter_op_threads",
                               fix="create the Scale first thing in the script") from None
