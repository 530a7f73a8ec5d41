"""The devices a JAX strategy spreads over: every device of the default platform, or the first `replicas`."""

from __future__ import annotations

from tfscale.errors import ClusterError


def mesh_devices(topology, config) -> list:
    """Every device of JAX's default platform (all processes'), or the first `config.replicas` of one process's.

    Raises:
        ClusterError: more replicas asked for than there are devices.
    """
    import jax

    devices = jax.devices()
    if config.replicas and topology.num_workers == 1 and topology.accelerator != "CPU":
        if config.replicas > len(devices):
            raise ClusterError(f"{config.replicas} replicas asked for, but JAX sees {len(devices)} "
                               f"{jax.default_backend()} device(s)", where="replicas",
                               fix=f"ask for at most {len(devices)} replicas")
        devices = devices[:config.replicas]
    return devices


def device_names(devices) -> list[str]:
    """Keras' names for JAX devices ("cpu:0", "gpu:1", ...)."""
    return [f"{d.platform}:{d.id}" for d in devices]
