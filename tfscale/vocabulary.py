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
    Precision        `TrainConfig.precision`                           "auto", "float32", "mixed_float16", ...
    LrScaling        how the learning rate follows the batch           "linear", "sqrt", "none"
    Communication    TensorFlow's collective implementation            "auto", "ring", "nccl"
    Tuner            a keras-tuner search (`TuneConfig.tuner`)         "hyperband", "random", "bayesian"
    LayerStatus      a layer in a variant's per-layer report           "quantized", "float", "no weights", "absent"
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

Precision = Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)

LrScaling = Literal["linear", "sqrt", "none"]
LR_SCALINGS: tuple[LrScaling, ...] = get_args(LrScaling)

Communication = Literal["auto", "ring", "nccl"]
COMMUNICATIONS: tuple[Communication, ...] = get_args(Communication)

Tuner = Literal["hyperband", "random", "bayesian"]
TUNERS: tuple[Tuner, ...] = get_args(Tuner)

LayerStatus = Literal["quantized", "float", "no weights", "absent"]  # tfscale/export/layers.py
LAYER_STATUSES: tuple[LayerStatus, ...] = get_args(LayerStatus)
QUANTIZED, FLOAT, NO_WEIGHTS, ABSENT = LAYER_STATUSES
