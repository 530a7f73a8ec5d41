"""tfscale's fixed sets of string values, each declared once: a `typing.Literal` and the tuple of its values.

Signatures name the Literal (``backend: Backend``); validation, ``argparse`` choices and error messages
read the tuple (``BACKENDS``), so a value added here reaches all of them. Standard library only, imported
from every layer.

    Backend          the Keras backend an engine trains on             "tensorflow", "jax"
    ClusterManager   who described this process's cluster (Topology)   "tf_config", ..., "none"
    ClusterChoice    where `StrategyConfig.cluster` looks              "auto" or a ClusterManager (CLUSTER_MANAGERS)
    LaunchManager    how `tfscale launch` placed the workers (plan)    "local", "hosts", "slurm", "kubernetes"
    RestartOwner     who restarts a failed launch                      "tfscale", "manager"
    ShardingMode     how a worker's input pipeline gets its records    "files", "records", "slices"
    ElasticMode      how an elastic pipeline keeps its rows            "rows", "slices"
    OnError          what a bad input record does                      "raise", "skip"
"""

from __future__ import annotations

from typing import Literal, get_args

Backend = Literal["tensorflow", "jax"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
TENSORFLOW, JAX = BACKENDS

ClusterManager = Literal["tf_config", "keras_distribution", "slurm", "kubernetes", "tpu", "none"]
ClusterChoice = Literal["auto", ClusterManager]
CLUSTER_MANAGERS: tuple[ClusterChoice, ...] = get_args(ClusterChoice)  # StrategyConfig.cluster's values

LaunchManager = Literal["local", "hosts", "slurm", "kubernetes"]
LAUNCH_MANAGERS: tuple[LaunchManager, ...] = get_args(LaunchManager)

RestartOwner = Literal["tfscale", "manager"]
RESTART_OWNERS: tuple[RestartOwner, ...] = get_args(RestartOwner)

ShardingMode = Literal["files", "records", "slices"]
SHARDING_MODES: tuple[ShardingMode, ...] = get_args(ShardingMode)

ElasticMode = Literal["rows", "slices"]
ELASTIC_MODES: tuple[ElasticMode, ...] = get_args(ElasticMode)

OnError = Literal["raise", "skip"]
ON_ERROR: tuple[OnError, ...] = get_args(OnError)
