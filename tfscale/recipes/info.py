"""What `tfscale info` reports: versions, devices, the topology, auto's choice, the registry."""

from __future__ import annotations

import importlib.metadata
import platform

_OPTIONAL = ("ai-edge-litert", "tensorflow-model-optimization", "tf-keras", "tensorflow-datasets",
             "keras-tuner", "tensorboard", "dask", "scikit-learn", "pandas")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect(replicas: int | None = None) -> dict:
    """Everything `tfscale info` shows, as plain data. Builds no strategy and initializes no device."""
    import keras
    import tensorflow as tf

    import tfscale
    from tfscale.cluster import detect
    from tfscale.config import StrategyConfig
    from tfscale.strategy import available, choose

    versions = {"tfscale": tfscale.__version__, "python": platform.python_version(),
                "tensorflow": tf.__version__, "keras": keras.__version__}
    versions.update({name: v for name in _OPTIONAL if (v := _version(name))})
    devices = [{"name": d.name, "type": d.device_type} for d in tf.config.list_physical_devices()]
    config = StrategyConfig(replicas=replicas)
    topology = detect(config.cluster)
    name, reason = choose(topology, config)
    return {"versions": versions, "devices": devices, "topology": topology.to_dict(),
            "auto": {"strategy": name, "reason": reason},
            "strategies": [{"name": s.name, "description": s.description} for s in available()]}
