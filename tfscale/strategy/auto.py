"""`auto`: picks a strategy from the topology, per engine, and says why. Pure: builds nothing."""

from __future__ import annotations

from tfscale.strategy.backend import JAX, TENSORFLOW

AUTO_DESCRIPTIONS = {
    TENSORFLOW: "picks from the environment: tpu, parameter_server, multi_worker, mirrored "
                "(several GPUs or CPU replicas), one_device (one GPU) or default",
    JAX: "picks from the devices JAX sees: tpu (TPU devices), data_parallel (several GPUs, processes or "
         "CPU devices) or one_device",
}


def choose(topology, config, backend: str = TENSORFLOW) -> tuple[str, str]:
    """Returns (strategy name, reason) for the detected topology and config on `backend`."""
    if backend == JAX:
        return _choose_jax(topology, config)
    if topology.accelerator == "TPU":
        return "tpu", "a TPU was found"
    if topology.has_parameter_servers:
        return "parameter_server", "the cluster has ps tasks"
    if topology.num_workers > 1:
        return "multi_worker", f"{topology.num_workers} worker processes ({topology.manager})"
    if config.devices:
        return ("mirrored", f"{len(config.devices)} devices named") if len(config.devices) > 1 else (
            "one_device", "one device named")
    if topology.accelerator == "GPU":
        n = config.replicas or topology.local_accelerators
        if n > 1:
            return "mirrored", f"{n} local GPUs"
        return "one_device", "one local GPU"
    if (config.replicas or 1) > 1:
        return "mirrored", f"{config.replicas} CPU replicas asked for (logical devices)"
    return "default", "one process, no accelerator, one replica"


def _choose_jax(topology, config) -> tuple[str, str]:
    """TPU devices, then GPUs, then CPU devices."""
    if topology.accelerator == "TPU":
        return "tpu", "JAX sees TPU devices" if topology.local_accelerators else "a TPU was announced"
    if topology.num_workers > 1:
        return "data_parallel", f"{topology.num_workers} processes ({topology.manager})"
    if topology.accelerator == "GPU":
        n = config.replicas or topology.local_accelerators
        return ("data_parallel", f"{n} local GPUs") if n > 1 else ("one_device", "one local GPU")
    if (config.replicas or 1) > 1:
        return "data_parallel", f"{config.replicas} CPU replicas asked for (host devices)"
    return "one_device", "one process, no accelerator, one replica"
