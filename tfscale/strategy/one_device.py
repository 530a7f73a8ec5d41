"""`one_device`: everything on one named device (the first GPU, or the CPU)."""

from tfscale.strategy.registry import register


@register("one_device", "one device: the first GPU if there is one, else the CPU (or `devices=[...]`)", one_process=True)
def build(topology, config):
    import tensorflow as tf

    if config.devices:
        device = config.devices[0]
    else:
        device = "/gpu:0" if topology.accelerator == "GPU" else "/cpu:0"
    return tf.distribute.OneDeviceStrategy(device)
