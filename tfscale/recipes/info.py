"""What `tfscale info` reports: versions, devices, the topology, auto's choice, the registry per backend, the presets.

`collect` builds no strategy and starts no distributed runtime. `placement`
builds the Scale asked for and a model in its scope, to show where each
variable lives (on JAX: its sharding and bytes per device).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

_OPTIONAL = ("ai-edge-litert", "tensorflow-model-optimization", "tf-keras", "tensorflow-datasets",
             "keras-tuner", "tensorboard", "dask", "scikit-learn", "pandas", "jax", "jaxlib", "libtpu",
             "tensorflow-tpu")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _devices(backend: str, replicas: int | None):
    """(devices as {name, type}, the Topology) the way each engine sees them, without a distributed start."""
    from tfscale.cluster import detect
    from tfscale.config import StrategyConfig

    config = StrategyConfig(replicas=replicas)
    if backend == "jax":
        import jax

        from tfscale.strategy.jax import runtime

        if replicas:
            runtime.set_cpu_devices(replicas)
        topology = runtime.probe(detect(config.cluster, gpus=0))
        return [{"name": f"{d.platform}:{d.id}", "type": d.platform.upper()} for d in jax.devices()], topology, config
    import tensorflow as tf

    from tfscale.cluster.detection.devices import local_gpus

    devices = [{"name": d.name, "type": d.device_type} for d in tf.config.list_physical_devices()]
    return devices, detect(config.cluster, gpus=local_gpus()), config


def collect(replicas: int | None = None, backend: str | None = None) -> dict:
    """Everything `tfscale info` shows, as plain data.

    Args:
        replicas: CPU replicas to assume for auto's choice.
        backend: "tensorflow" or "jax" (default: the backend Keras would load here).
    """
    import tfscale
    from tfscale.cluster import detect
    from tfscale.config import StrategyConfig, load_strategy_preset, preset_names
    from tfscale.strategy import available, backend as backend_lib, choose

    detect(StrategyConfig(replicas=replicas).cluster, gpus=0)  # a malformed TF_CONFIG fails now, before Keras loads
    backend = backend_lib.resolve(backend)
    import keras

    versions = {"tfscale": tfscale.__version__, "python": platform.python_version(), "keras": keras.__version__,
                "tensorflow": _version("tensorflow")}
    versions.update({name: v for name in _OPTIONAL if (v := _version(name))})
    devices, topology, config = _devices(backend, replicas)
    name, reason = choose(topology, config, backend)
    return {"backend": backend, "versions": {k: v for k, v in versions.items() if v}, "devices": devices,
            "topology": topology.to_dict(), "auto": {"strategy": name, "reason": reason},
            "strategies": [{"name": s.name, "backend": s.backend, "description": s.description}
                           for s in available()],
            "presets": [{"name": n, "strategy": p.name, "description": p.description}
                        for n in preset_names() for p in [load_strategy_preset(n)]]}


def placement(model_fn: str, strategy: str = "auto", *, replicas: int | None = None,
              options: dict | None = None) -> dict:
    """The Scale `strategy` asks for, with a model from `model_fn` ("module:function") built in its scope:
    `scale.describe(model)` (each variable's sharding and bytes per device)."""
    from tfscale.scale import Scale
    from tfscale.train.loading import make_model

    scale = Scale(strategy, replicas=replicas, **(options or {}))
    with scale.scope():
        model = make_model(model_fn, None)
    return scale.describe(model)


def memory_plan(model_fn: str, *, devices: int | None, layout, device_memory: str, batch_size: int = 1,
                sequence_length: int | None = None, optimizer: str = "adam",
                min_shard_params: int | None = None) -> dict:
    """`tfscale info --device-memory`: `model_fn`'s model built once, unsharded, with its optimizer's state (the
    model's own where the function compiles it, else `optimizer`), and its bytes per device on every (data, model)
    mesh of `devices` (default: the devices JAX sees), placed by `layout` (`strategy.jax.planner`).

    Raises:
        ConfigError: not on JAX, a size that is not one, or no mesh fits (the error gives the memory that would).
    """
    import keras

    from tfscale.config import StrategyConfig
    from tfscale.errors import ConfigError
    from tfscale.strategy.jax import planner
    from tfscale.strategy.jax.layout import rules_from
    from tfscale.train.loading import make_model

    if keras.config.backend() != "jax":
        raise ConfigError(f"the memory planner is for model_parallel on JAX, and Keras runs on "
                          f"{keras.config.backend()} here", where="--device-memory", fix="add --backend jax")
    memory = planner.parse_bytes(device_memory)
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}", where="--batch-size",
                          fix="give the global batch size, e.g. --batch-size 256")
    count = devices or len(keras.distribution.list_devices())
    model = make_model(model_fn, None)
    if getattr(model, "optimizer", None) is None:
        model.compile(optimizer=optimizer, loss="mse")
    rules, auto = rules_from(layout)
    threshold = min_shard_params or StrategyConfig().min_shard_params
    result = planner.plan(planner.variables_of(model), count, rules=rules, auto=auto, min_shard_params=threshold,
                          activation_bytes_per_example=planner.activation_bytes_per_example(model, sequence_length),
                          batch_size=batch_size, device_memory=memory)
    return result.to_dict()


def set_backend(backend: str | None) -> None:
    """Makes Keras load on `backend` in this (CLI) process, before anything imports it."""
    if backend:
        os.environ["KERAS_BACKEND"] = backend
