"""`model_parallel` (JAX): variables sharded over the mesh's model axis, the batch over its data axis."""

from __future__ import annotations

import math

from tfscale.errors import ConfigError
from tfscale.strategy.backend import JAX
from tfscale.strategy.jax.devices import device_names, mesh_devices
from tfscale.strategy.registry import register


def mesh_shape(config, topology, count: int) -> tuple[int, ...]:
    """The mesh asked for, or (processes, devices per process): data across hosts, model within one.

    Raises:
        ConfigError: the mesh's sizes do not multiply to the number of devices.
    """
    shape = tuple(config.mesh) if config.mesh is not None else (
        (topology.num_workers, count // topology.num_workers) if len(config.axis_names) == 2 else None)
    if shape is None or len(shape) != len(config.axis_names):
        raise ConfigError(f"model_parallel needs a mesh for the axes {tuple(config.axis_names)}",
                          where="strategy.mesh", fix="give mesh=(data, model), e.g. mesh=(1, 2)")
    if math.prod(shape) != count:
        options = [(count // m, m) for m in range(1, count + 1) if count % m == 0]
        raise ConfigError(f"mesh {shape} has {math.prod(shape)} positions, but there are {count} device(s)",
                          where="strategy.mesh",
                          fix=f"give sizes that multiply to {count}, e.g. {', '.join(map(str, options[-2:]))}")
    return shape


@register("model_parallel", "variables sharded over a (data, model) device mesh: `mesh=(1, 2)`, `layout=\"auto\"` "
                            "or rules {path regex: axes}, checked before training", backend=JAX)
def build(topology, config):
    import numpy as np
    from keras import distribution

    from tfscale.strategy.jax.distributions import CheckedModelParallel

    if type(config.layout).__name__ == "LayoutMap":
        mesh = config.layout.device_mesh
        if config.mesh is not None and tuple(config.mesh) != tuple(mesh.shape):
            raise ConfigError(f"mesh {tuple(config.mesh)} differs from the LayoutMap's mesh {tuple(mesh.shape)}",
                              where="strategy.mesh / strategy.layout", fix="give the mesh once: leave mesh out")
    else:
        devices = mesh_devices(topology, config)
        shape = mesh_shape(config, topology, len(devices))
        names = np.array(device_names(devices)).reshape(shape)
        mesh = distribution.DeviceMesh(shape=shape, axis_names=list(config.axis_names), devices=names)
    return CheckedModelParallel(mesh, config)
