"""Collective communication options shared by the mirrored and multi-worker strategies."""

from __future__ import annotations

import tensorflow as tf

from tfscale.config import StrategyConfig

_IMPLEMENTATIONS = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}


def options(config: StrategyConfig) -> tf.distribute.experimental.CommunicationOptions:
    """CommunicationOptions from the config: implementation, timeout and gradient packing."""
    return tf.distribute.experimental.CommunicationOptions(
        bytes_per_pack=config.bytes_per_pack,
        timeout_seconds=config.collective_timeout,
        implementation=_IMPLEMENTATIONS[config.communication],
    )
