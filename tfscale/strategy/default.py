"""`default`: no distribution; TensorFlow's default strategy on the default device."""

from tfscale.strategy.registry import register


@register("default", "no distribution: one process, TensorFlow's default device placement", one_process=True)
def build(topology, config):
    import tensorflow as tf

    return tf.distribute.get_strategy()
