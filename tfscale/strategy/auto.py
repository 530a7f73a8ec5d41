"""`auto`: picks a strategy from the topology, and says why."""

from __future__ import annotations

AUTO_DESCRIPTION = ("picks from the environment: tpu, parameter_server, multi_worker, mirrored "
                    "(several GPUs or CPU replicas), one_device (one GPU) or default")


def choose(topology, config) -> tuple[str, str]:
    """Returns (strategy name, reason) for the detected topology and config."""
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
