"""Collective communication options shared by the mirrored and multi-worker strategies."""

from __future__ import annotations

from tfscale.config import StrategyConfig


def options(config: StrategyConfig):
    """`tf.distribute.experimental.CommunicationOptions` from the config: implementation, timeout, packing."""
    import tensorflow as tf

    implementation = tf.distribute.experimental.CommunicationImplementation
    return tf.distribute.experimental.CommunicationOptions(
        bytes_per_pack=config.bytes_per_pack,
        timeout_seconds=config.collective_timeout,
        implementation=getattr(implementation, config.communication.upper()),
    )
