"""`parameter_server`: asynchronous training with variables on parameter servers.

The chief (coordinator) builds the strategy; "worker" and "ps" processes run
a TensorFlow server with `serve` and wait. The training loop through
`ClusterCoordinator` is the user's (Keras `fit` drives it for datasets built
with `DatasetCreator`).
"""

from __future__ import annotations

import logging

from tfscale.errors import ClusterError
from tfscale.strategy.multi_worker import cluster_resolver
from tfscale.strategy.registry import register

log = logging.getLogger("tfscale")


def serve(topology, *, join: bool = True):
    """Runs this process's `tf.distribute.Server` for a worker or ps task of a parameter-server cluster."""
    import tensorflow as tf

    if topology.task_type not in ("worker", "ps"):
        raise ClusterError(f"only worker and ps tasks serve; this is a {topology.task_type}",
                           where="TF_CONFIG task.type", fix="build the strategy on the chief instead")
    server = tf.distribute.Server(tf.train.ClusterSpec({k: list(v) for k, v in topology.cluster.items()}),
                                  job_name=topology.task_type, task_index=topology.task_index,
                                  protocol="grpc", start=True)
    log.info("%s %d serving at %s", topology.task_type, topology.task_index, server.target)
    if join:
        server.join()
    return server


@register("parameter_server", "asynchronous training, variables on ps tasks (needs 'chief', 'worker' "
                              "and 'ps' jobs in the cluster)")
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
