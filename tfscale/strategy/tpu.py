"""`tpu`: TPUStrategy on Colab, Kaggle, a Cloud TPU VM or a named Cloud TPU."""

from __future__ import annotations

import logging

from tfscale.errors import ClusterError
from tfscale.strategy.registry import Capability, register

log = logging.getLogger("tfscale")


def connect(address: str | None):
    """Connects to the TPU at `address` ("" or "local": this VM's) and initializes it.

    Raises:
        ClusterError: no TPU could be found or initialized, with the remedy.
    """
    import tensorflow as tf

    address = "local" if address in (None, "") else address
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as e:  # noqa: BLE001 - resolver failures come as many types (OSError, OpError, ValueError)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "ConfigureDistributedTPU" in str(e) or "OpKernel" in str(e):  # TensorFlow built without TPU support
            reason = "this TensorFlow is not the TPU build (tensorflow-tpu), and no TPU is attached"
        raise ClusterError(f"a TPU was asked for but none could be reached ({reason})", where=f"tpu={address!r}",
                           fix="on Colab choose Runtime > Change runtime type > TPU; on Kaggle enable the TPU "
                               "accelerator; on a Cloud TPU VM set TPU_NAME and install TensorFlow's TPU build "
                               "(tensorflow-tpu 2.20 with libtpu 0.0.20: README, 'TPU VMs and TensorFlow 2.20'), or "
                               "use KERAS_BACKEND=jax; or Scale.auto() to fall back to GPU/CPU") from None
    log.info("TPU initialized: %s", address)
    return resolver


@register("tpu", "TPU cores (Colab, Kaggle, Cloud TPU VM via TPU_NAME); bfloat16 by default",
          capabilities={Capability.COMPILES_ITSELF})
def build(topology, config):
    import tensorflow as tf

    address = config.tpu if config.tpu is not None else topology.tpu
    return tf.distribute.TPUStrategy(connect(address))
