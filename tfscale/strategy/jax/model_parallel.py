"""`model_parallel` (JAX): variables sharded over the mesh's model axis, the batch over its data axis."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfscale.errors import ConfigError
from tfscale.strategy.backend import JAX
from tfscale.strategy.jax.devices import device_names, mesh_devices
from tfscale.strategy.registry import Capability, register


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
                            "or rules {path regex: axes}, checked before training", backend=JAX,
          capabilities={Capability.LOCKSTEP})
def build(topology, config):
    from keras import distribution

    from tfscale.strategy.jax.distributions import CheckedModelParallel

    devices = mesh_devices(topology, config)
    given = config.layout.device_mesh if isinstance(config.layout, distribution.LayoutMap) else None
    if given is not None:
        mesh = given
        _check_map_mesh(mesh, config, device_names(devices))
    else:
        shape = mesh_shape(config, topology, len(devices))
        names = np.array(device_names(devices)).reshape(shape)
        mesh = distribution.DeviceMesh(shape=shape, axis_names=list(config.axis_names), devices=names)
    if isinstance(config.layout, distribution.LayoutMap):
        _check_layouts_mesh(config.layout, mesh)
    return CheckedModelParallel(mesh, config)


def _described(mesh) -> str:
    return f"{tuple(int(n) for n in mesh.shape)} with axes {tuple(mesh.axis_names)}"


def _check_map_mesh(mesh, config, devices: list[str]) -> None:
    """A LayoutMap brings its mesh: the Scale's own mesh options may only repeat it, over the Scale's devices.

    Raises:
        ConfigError: `mesh` or `axis_names` given otherwise, or the map's mesh is not over this Scale's devices.
    """
    where = "strategy.mesh / strategy.layout"
    if config.mesh is not None and tuple(config.mesh) != tuple(mesh.shape):
        raise ConfigError(f"mesh {tuple(config.mesh)} differs from the LayoutMap's mesh {_described(mesh)}",
                          where=where, fix="give the mesh once: leave mesh out (the LayoutMap's is used)")
    default_names = {f.name: f.default for f in dataclasses.fields(config)}["axis_names"]
    if tuple(config.axis_names) not in (tuple(mesh.axis_names), tuple(default_names)):
        raise ConfigError(f"axis_names {tuple(config.axis_names)} differ from the LayoutMap's mesh {_described(mesh)}",
                          where="strategy.axis_names / strategy.layout",
                          fix="leave axis_names out (the LayoutMap's mesh names its axes), or build the map on a "
                              "mesh with these names")
    mapped = [_device_name(d) for d in np.asarray(mesh.devices).flatten().tolist()]
    if sorted(mapped) != sorted(devices):
        raise ConfigError(f"the LayoutMap's mesh {_described(mesh)} is over the devices {mapped}, but this Scale "
                          f"spreads over {devices}", where=where,
                          fix="build the map's DeviceMesh on keras.distribution.list_devices() (as many as the "
                              "Scale uses: replicas, or every device)")


def _device_name(device) -> str:
    """Keras' name of a mesh device, given as a name ("cpu:0") or as a JAX device."""
    if hasattr(device, "platform") and hasattr(device, "id"):
        return f"{device.platform}:{device.id}"
    return str(device).lower()


def _check_layouts_mesh(layout_map, mesh) -> None:
    """Every TensorLayout of the map is on the mesh the variables will live on (or on none: it takes that one).

    Raises:
        ConfigError: naming the first rule whose layout has a mesh of its own.
    """
    for pattern, layout in layout_map.items():
        own = getattr(layout, "device_mesh", None)
        if own is not None and own is not mesh and (tuple(own.shape), tuple(own.axis_names)) != (
                tuple(mesh.shape), tuple(mesh.axis_names)):
            raise ConfigError(f"layout rule {pattern!r} is a TensorLayout on the mesh {_described(own)}, not on the "
                              f"mesh the variables live on, {_described(mesh)}", where="strategy.layout",
                              fix="make every TensorLayout of the map without a mesh (or with the map's): "
                                  "layout_map[pattern] = (None, 'model')")
