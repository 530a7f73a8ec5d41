"""`data_parallel` (JAX): the model replicated on every device, each global batch split over them."""

from __future__ import annotations

from tfscale.errors import ConfigError
from tfscale.strategy.backend import JAX
from tfscale.strategy.jax.devices import device_names, mesh_devices
from tfscale.strategy.registry import Capability, register


def data_parallel(devices, axis_name: str):
    """A `keras.distribution.DataParallel` over `devices`; tfscale shards the input itself."""
    import numpy as np
    from keras import distribution

    names = np.array(device_names(devices))
    mesh = distribution.DeviceMesh(shape=names.shape, axis_names=[axis_name], devices=names)
    return distribution.DataParallel(device_mesh=mesh, auto_shard_dataset=False)


@register("data_parallel", "synchronous replicas on every device JAX sees (GPUs, CPU host devices with "
                           "`replicas=N`, processes from `tfscale launch --backend jax`)", backend=JAX,
          capabilities={Capability.LOCKSTEP})
def build(topology, config):
    devices = mesh_devices(topology, config)
    if config.mesh is not None and tuple(config.mesh) != (len(devices),):
        raise ConfigError(f"data_parallel takes a one-axis mesh of the {len(devices)} device(s), got mesh "
                          f"{tuple(config.mesh)}", where="strategy.mesh",
                          fix="leave mesh out, or use model_parallel for a (data, model) mesh")
    return data_parallel(devices, config.axis_names[0])
