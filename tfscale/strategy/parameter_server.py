"""`parameter_server`: asynchronous training with variables on parameter servers.

The chief (coordinator) builds the strategy; "worker" and "ps" processes run
a TensorFlow server with `serve` and wait. The training loop through
`tf.distribute.coordinator.ClusterCoordinator` is the user's: Keras 3's `fit`
cannot drive a ParameterServerStrategy (tf-keras' `DatasetCreator` path is not
in Keras 3; its `fit` fails on the dataset, TensorFlow 2.21 / Keras 3.15).
A worker task needs 2 inter-op threads or more: with 1, the first function the
coordinator schedules on it never returns (TensorFlow 2.21), so `serve` refuses it.
"""

from __future__ import annotations

import logging
import os

from tfscale.errors import ClusterError, ConfigError
from tfscale.strategy.multi_worker import cluster_resolver
from tfscale.strategy.registry import Capability, register

log = logging.getLogger("tfscale")


def serve(topology, *, join: bool = True):
    """Runs this process's `tf.distribute.Server` for a worker or ps task of a parameter-server cluster.

    Raises:
        ClusterError: this process is not a worker or ps task.
        ConfigError: a worker task with 1 inter-op thread (it would hang on the first step).
    """
    import tensorflow as tf

    if topology.task_type not in ("worker", "ps"):
        raise ClusterError(f"only worker and ps tasks serve; this is a {topology.task_type}",
                           where="TF_CONFIG task.type", fix="build the strategy on the chief instead")
    if topology.task_type == "worker" and _inter_op_threads(tf) == 1:
        raise ConfigError(f"worker {topology.task_index} of a parameter-server cluster has 1 inter-op thread: the "
                          "first step the chief schedules on it would never return",
                          where="inter_op_threads / TF_NUM_INTEROP_THREADS",
                          fix="give worker tasks 2 inter-op threads or more: inter_op_threads=2 (a Scale option or "
                              "a preset's), or TF_NUM_INTEROP_THREADS=2")
    server = tf.distribute.Server(tf.train.ClusterSpec({k: list(v) for k, v in topology.cluster.items()}),
                                  job_name=topology.task_type, task_index=topology.task_index,
                                  protocol="grpc", start=True)
    log.info("%s %d serving at %s", topology.task_type, topology.task_index, server.target)
    if join:
        server.join()
    return server


@register("parameter_server", "asynchronous training, variables on ps tasks (needs 'chief', 'worker' "
                              "and 'ps' jobs in the cluster)",
          capabilities={Capability.SERVERS, Capability.CLUSTER_RUNTIME})
def build(topology, config):
    if not topology.has_parameter_servers or "chief" not in topology.cluster:
        raise ClusterError("parameter_server needs a cluster with 'chief', 'worker' and 'ps' jobs",
                           where="TF_CONFIG cluster", fix="add the jobs, or use 'multi_worker' for synchronous training")
    if topology.task_type != "chief":
        raise ClusterError(f"this process is a {topology.task_type} task of a parameter-server cluster",
                           where="TF_CONFIG task.type",
                           fix="call scale.serve() (or tfscale.strategy.parameter_server.serve) on worker and ps tasks")
    import tensorflow as tf

    return tf.distribute.ParameterServerStrategy(cluster_resolver(topology))


def _inter_op_threads(tf) -> int | None:
    """This process's inter-op threads: as configured, else as TF_NUM_INTEROP_THREADS asks (None: TF's default)."""
    configured = tf.config.threading.get_inter_op_parallelism_threads()
    if configured:
        return configured
    asked = os.environ.get("TF_NUM_INTEROP_THREADS", "")
    return int(asked) if asked.isdigit() and int(asked) > 0 else None
