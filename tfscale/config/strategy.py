"""`StrategyConfig`: how to distribute; presets in strategies/*.toml; values `tfscale launch` passes down."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from tfscale.config.loading import apply_overrides, check_choice as _check_choice, from_mapping, load_toml
from tfscale.errors import ConfigError


COMMUNICATIONS = ("auto", "ring", "nccl")
CLUSTER_MANAGERS = ("auto", "tf_config", "slurm", "kubernetes", "tpu", "none")


@dataclasses.dataclass(frozen=True)
class StrategyConfig:
    """How to distribute: the strategy, its devices and its communication.

    Attributes:
        name: a registered strategy name (`tfscale info` lists them), or "auto".
        description: free text shown by `tfscale info` for a preset.
        replicas: replicas per worker. On a CPU-only machine this many logical
            CPU devices are made, so `mirrored` and `multi_worker` run for real
            on a laptop; with GPUs, the number of GPUs to use. None: all GPUs, or 1 CPU.
        devices: explicit device names (e.g. "/gpu:0"); overrides `replicas`.
        cluster: where to look for the cluster: "auto" (TF_CONFIG, then Slurm,
            Kubernetes, TPU, GPUs, CPU), or one of those by name, or "none".
        communication: collective implementation: "auto", "ring" or "nccl".
        collective_timeout: seconds before a collective with a dead peer fails
            (None: wait forever, TensorFlow's default).
        bytes_per_pack: gradient packing for all-reduce; 0 lets TF decide.
        tpu: TPU name or address; "" or "local" for a Colab/Kaggle/TPU-VM TPU.
        intra_op_threads: threads inside one op (None: TensorFlow's default).
        inter_op_threads: ops run in parallel (None: TensorFlow's default).
    """

    name: str = "auto"
    description: str = ""
    replicas: int | None = None
    devices: tuple[str, ...] = ()
    cluster: str = "auto"
    communication: str = "auto"
    collective_timeout: float | None = None
    bytes_per_pack: int = 0
    tpu: str | None = None
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None

    def __post_init__(self):
        if self.replicas is not None and self.replicas < 1:
            raise ConfigError(f"replicas must be at least 1, got {self.replicas}",
                              where="strategy.replicas", fix="give a whole number >= 1, or leave it out")
        _check_choice("strategy.communication", self.communication, COMMUNICATIONS)
        _check_choice("strategy.cluster", self.cluster, CLUSTER_MANAGERS)
        if self.collective_timeout is not None and self.collective_timeout <= 0:
            raise ConfigError(f"collective_timeout must be positive, got {self.collective_timeout}",
                              where="strategy.collective_timeout", fix="give seconds > 0, or leave it out")
        if self.bytes_per_pack < 0:
            raise ConfigError(f"bytes_per_pack must be >= 0, got {self.bytes_per_pack}",
                              where="strategy.bytes_per_pack", fix="give 0 to let TensorFlow decide")
        for key in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be at least 1, got {value}", where=f"strategy.{key}",
                                  fix="give a whole number >= 1, or leave it out")


# Variables `tfscale launch` sets in each worker (field -> variable); they fill fields the script leaves unset.
LAUNCH_VARIABLES = {"replicas": "TFSCALE_REPLICAS_PER_WORKER", "collective_timeout": "TFSCALE_COLLECTIVE_TIMEOUT"}


def with_launch_environment(config: StrategyConfig, environ: Mapping[str, str] | None = None) -> StrategyConfig:
    """`config` with its unset (None) fields taken from `tfscale launch`'s variables, if present.

    Raises:
        ConfigError: a variable holds something that is not a number.
    """
    environ = os.environ if environ is None else environ
    updates = {}
    for field, variable in LAUNCH_VARIABLES.items():
        if getattr(config, field) is None and environ.get(variable, "").strip():
            kind = int if field == "replicas" else float
            try:
                updates[field] = kind(environ[variable])
            except ValueError:
                raise ConfigError(f"{variable}={environ[variable]!r} is not a number", where=variable,
                                  fix="set it with `tfscale launch` options, or unset it") from None
    return dataclasses.replace(config, **updates) if updates else config


def load_strategy_preset(path: str | os.PathLike, overrides: tuple[str, ...] = ()) -> StrategyConfig:
    """Loads a strategy preset (strategies/*.toml): keys of `StrategyConfig`.

    A preset may hold its keys at the top level or in a ``[strategy]`` table.
    """
    data = apply_overrides(load_toml(path), list(overrides))
    if "strategy" in data and isinstance(data["strategy"], Mapping):
        extra = sorted(set(data) - {"strategy"})
        if extra:
            raise ConfigError(f"unknown top-level keys {extra} beside [strategy]", where=os.fspath(path),
                              fix="put every key inside the [strategy] table")
        return from_mapping(StrategyConfig, data["strategy"], source=os.fspath(path), prefix="strategy.")
    return from_mapping(StrategyConfig, data, source=os.fspath(path))
