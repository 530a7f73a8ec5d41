"""`StrategyConfig`: how to distribute; presets (shipped: presets/*.toml); values `tfscale launch` passes down."""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import re
from collections.abc import Mapping
from typing import Any

from tfscale import worker_env
from tfscale.config.loading import apply_overrides, check_choice as _check_choice, from_mapping, load_toml
from tfscale.errors import ConfigError
from tfscale.vocabulary import CLUSTER_MANAGERS, COMMUNICATIONS, JAX, TENSORFLOW, ClusterChoice, Communication


LAYOUT_RULES = ("auto",)


def _for(*engines: str, default: Any = None, factory: Any = None) -> Any:
    """A field that only the named engines read (both when none is named)."""
    metadata = {"engines": engines or (TENSORFLOW, JAX)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class StrategyConfig:
    """How to distribute: the strategy, its devices and its communication.

    Every field says which engine reads it. A field set for the other engine is an
    error when the Scale is built (`engine_options`), never silently ignored.

    Attributes:
        name: a registered strategy name (`tfscale info` lists them), or "auto".
        description: free text shown by `tfscale info` for a preset.
        replicas: replicas per worker. On a CPU-only machine this many logical
            CPU devices (TensorFlow) or host devices (JAX) are made, so the
            strategies run for real on a laptop; with GPUs, the number of GPUs to
            use. None: all GPUs, or 1 CPU.
        cluster: where to look for the cluster: "auto" (TF_CONFIG, the variables
            of `keras.distribution.initialize`, Slurm, Kubernetes, TPU, GPUs, CPU),
            or one of those by name, or "none".
        collective_timeout: seconds before a dead peer turns into an error (TensorFlow:
            the collectives' timeout; JAX: the distributed runtime's heartbeat timeout).
            None: the framework's default.
        join_timeout: seconds every worker of a cluster may take to join it (TensorFlow: the
            registration of every worker with the coordination service; JAX: the distributed runtime's
            initialization); then a worker that did not join is an error naming it. None: 900 s, as
            torchrun's rendezvous.
        tpu: TPU name or address; "" or "local" for a Colab/Kaggle/TPU-VM TPU.
        devices: (TensorFlow) explicit device names (e.g. "/gpu:0"); overrides `replicas`.
        communication: (TensorFlow) collective implementation: "auto", "ring" or "nccl".
        bytes_per_pack: (TensorFlow) gradient packing for all-reduce; 0 lets TF decide.
        intra_op_threads: (TensorFlow) threads inside one op (None: TensorFlow's default).
        inter_op_threads: (TensorFlow) ops run in parallel (None: TensorFlow's default).
        mesh: (JAX) the device mesh's shape, e.g. (1, 2) for `model_parallel` = (data, model);
            None: every device on the model axis (model_parallel), or on the data axis.
        axis_names: (JAX) the mesh's axis names; the first one shards the batch.
        layout: (JAX, model_parallel) how variables are sharded: "auto" (every kernel or
            embedding of at least `min_shard_params` parameters over the model axis), a
            table of rules {path regex: axes per dimension, "" or None for replicated},
            or a `keras.distribution.LayoutMap`.
        min_shard_params: (JAX) variables this large are sharded by "auto", and reported
            when a layout leaves them whole.
    """

    name: str = _for(default="auto")
    description: str = _for(default="")
    replicas: int | None = _for()
    cluster: ClusterChoice = _for(default="auto")
    collective_timeout: float | None = _for()
    join_timeout: float | None = _for()
    tpu: str | None = _for()
    devices: tuple[str, ...] = _for(TENSORFLOW, default=())
    communication: Communication = _for(TENSORFLOW, default="auto")
    bytes_per_pack: int = _for(TENSORFLOW, default=0)
    intra_op_threads: int | None = _for(TENSORFLOW)
    inter_op_threads: int | None = _for(TENSORFLOW)
    mesh: tuple[int, ...] | None = _for(JAX)
    axis_names: tuple[str, ...] = _for(JAX, default=("data", "model"))
    layout: Any = _for(JAX)
    min_shard_params: int = _for(JAX, default=65536)

    def __post_init__(self):
        if self.replicas is not None and self.replicas < 1:
            raise ConfigError(f"replicas must be at least 1, got {self.replicas}",
                              where="strategy.replicas", fix="give a whole number >= 1, or leave it out")
        _check_choice("strategy.communication", self.communication, COMMUNICATIONS)
        _check_choice("strategy.cluster", self.cluster, CLUSTER_MANAGERS)
        for key in ("collective_timeout", "join_timeout"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{key} must be positive, got {value}", where=f"strategy.{key}",
                                  fix="give seconds > 0, or leave it out")
        if self.bytes_per_pack < 0:
            raise ConfigError(f"bytes_per_pack must be >= 0, got {self.bytes_per_pack}",
                              where="strategy.bytes_per_pack", fix="give 0 to let TensorFlow decide")
        for key in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be at least 1, got {value}", where=f"strategy.{key}",
                                  fix="give a whole number >= 1, or leave it out")
        self._check_mesh()
        _check_layout(self.layout)
        if self.min_shard_params < 1:
            raise ConfigError(f"min_shard_params must be >= 1, got {self.min_shard_params}",
                              where="strategy.min_shard_params", fix="give a number of parameters, e.g. 65536")

    def _check_mesh(self) -> None:
        if len(set(self.axis_names)) != len(self.axis_names) or not all(self.axis_names):
            raise ConfigError(f"axis_names must be distinct, non-empty names, got {self.axis_names}",
                              where="strategy.axis_names", fix='e.g. axis_names = ["data", "model"]')
        if self.mesh is None:
            return
        if len(self.mesh) != len(self.axis_names) or any(n < 1 for n in self.mesh):
            raise ConfigError(f"mesh {tuple(self.mesh)} must give one size >= 1 per axis of {tuple(self.axis_names)}",
                              where="strategy.mesh", fix="e.g. mesh = [1, 2] for (data, model) over 2 devices")


def _check_layout(layout: Any) -> None:
    """None, "auto", a table {regex: axes} or a keras LayoutMap (checked by name: no Keras import here)."""
    if layout is None or type(layout).__name__ == "LayoutMap":
        return
    if isinstance(layout, str):
        _check_choice("strategy.layout", layout, LAYOUT_RULES)
        return
    if isinstance(layout, Mapping):
        for pattern, axes in layout.items():
            if not isinstance(axes, (list, tuple)) or not all(a is None or isinstance(a, str) for a in axes):
                raise ConfigError(f"layout rule {pattern!r} must map to a list of axis names (or \"\" for a "
                                  f"replicated dimension), got {axes!r}", where="strategy.layout",
                                  fix='e.g. layout = {".*dense.*kernel" = ["", "model"]}')
        return
    raise ConfigError(f"layout must be \"auto\", a table of rules or a keras.distribution.LayoutMap, "
                      f"got {type(layout).__name__}", where="strategy.layout",
                      fix='e.g. layout="auto", or {".*dense.*kernel": (None, "model")}')


def engine_options(config: StrategyConfig, engine: str) -> StrategyConfig:
    """`config` checked for `engine`: a field only the other engine reads, set to a non-default value, is an error.

    Raises:
        ConfigError: naming the fields and the engine they belong to.
    """
    foreign = [f.name for f in dataclasses.fields(config) if engine not in f.metadata.get("engines", (engine,))
               and getattr(config, f.name) != _default(f)]
    if foreign:
        other = JAX if engine == TENSORFLOW else TENSORFLOW
        what = f"{foreign[0]} is a {other}-only setting" if len(foreign) == 1 else \
            f"{', '.join(foreign)} are {other}-only settings"
        raise ConfigError(f"{what}, but this process trains on {engine}", where="strategy options",
                          fix=f"remove {', '.join(foreign)}, or run on KERAS_BACKEND={other}")
    return config


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


# Variables `tfscale launch` sets in each worker (field -> variable); they fill fields the script leaves unset.
LAUNCH_VARIABLES = {"replicas": worker_env.REPLICAS_PER_WORKER, "collective_timeout": worker_env.COLLECTIVE_TIMEOUT,
                    "join_timeout": worker_env.JOIN_TIMEOUT}
DEFAULT_JOIN_TIMEOUT = 900.0  # seconds, as torchrun's default rendezvous timeout


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


# Presets shipped with tfscale: tfscale/config/presets/NAME.toml, package data (pyproject.toml), so a
# non-editable install has them too. They moved there from the repository's strategies/ folder: the path they
# had, "strategies/NAME.toml", still names them wherever no such file exists.
PRESET_FOLDER = "presets"
_PRESET_REF = re.compile(r"(?:\./)?(?:strategies/)?(\w+)(?:\.toml)?")


def preset_names() -> list[str]:
    """The names of the strategy presets shipped with tfscale ("laptop", "multi_gpu", ...)."""
    folder = importlib.resources.files("tfscale.config").joinpath(PRESET_FOLDER)
    return sorted(entry.name.removesuffix(".toml") for entry in folder.iterdir() if entry.name.endswith(".toml"))


def find_preset(ref: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> str:
    """The file a strategy preset reference names: a path (tried relative to `base_dir` first, e.g. a run
    file's folder, then as given), else a preset shipped with tfscale, named "laptop", "laptop.toml" or
    "strategies/laptop.toml".

    Raises:
        ConfigError: no such file, and no shipped preset of that name (the message lists them).
    """
    text = os.fspath(ref)
    candidates = [os.path.join(base_dir, text)] if base_dir is not None and not os.path.isabs(text) else []
    for candidate in candidates + [text]:
        if os.path.exists(candidate):  # a folder or an unreadable file: load_toml says what is wrong with it
            return candidate
    match = _PRESET_REF.fullmatch(text.replace(os.sep, "/"))
    if match and match.group(1) in preset_names():
        # A file on disk: pip unpacks wheels, and an editable install reads the source tree.
        shipped = importlib.resources.files("tfscale.config").joinpath(PRESET_FOLDER, f"{match.group(1)}.toml")
        return os.fspath(shipped)
    where = f" (from {os.fspath(base_dir)} or the working directory)" if candidates else ""
    raise ConfigError(f"strategy preset {text!r} does not exist{where}", where=text,
                      fix="give the path of a .toml file, or a preset shipped with tfscale: "
                          + ", ".join(preset_names()))


def load_strategy_preset(path: str | os.PathLike, overrides: tuple[str, ...] = ()) -> StrategyConfig:
    """Loads a strategy preset: a TOML file of `StrategyConfig` keys, or a preset shipped with tfscale.

    A preset may hold its keys at the top level or in a ``[strategy]`` table.

    Args:
        path: a .toml file, or the name of a shipped preset (`preset_names()`; `tfscale info` lists them):
            "laptop", "laptop.toml" and "strategies/laptop.toml" name the same one (see `find_preset`).
        overrides: ``key=value`` items applied on top (``strategy.replicas=4`` or ``replicas=4``).

    Example:
        config = load_strategy_preset("laptop", ("replicas=4",))
    """
    path = find_preset(path)
    data = apply_overrides(load_toml(path), list(overrides))
    if "strategy" in data and isinstance(data["strategy"], Mapping):
        extra = sorted(set(data) - {"strategy"})
        if extra:
            raise ConfigError(f"unknown top-level keys {extra} beside [strategy]", where=os.fspath(path),
                              fix="put every key inside the [strategy] table")
        return from_mapping(StrategyConfig, data["strategy"], source=os.fspath(path), prefix="strategy.")
    return from_mapping(StrategyConfig, data, source=os.fspath(path))
