"""Configuration: frozen dataclasses, TOML presets and ``--set key=value`` overrides.

Every config is a frozen dataclass validated in ``__post_init__``.  Files and
overrides go through `from_mapping`, which rejects unknown keys (suggesting the
closest known one) and values of the wrong type, naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any

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


def _check_choice(where: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{value!r} is not an accepted value", where=where,
                          fix=f"use one of: {', '.join(choices)}")


TUNERS = ("hyperband", "random", "bayesian")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """A hyperparameter search (`tfscale.tune` options; the ``[tune]`` table of `tfscale tune run.toml`).

    Attributes:
        tuner: "hyperband", "random" or "bayesian".
        objective: the metric to optimize, e.g. "val_accuracy".
        direction: "max" or "min"; "" infers it from the objective's name.
        max_trials: trials for random and bayesian search (Hyperband's count follows from epochs and factor).
        epochs: epochs per trial (Hyperband: the most any trial gets); also for retraining.
        factor: Hyperband's reduction factor between rounds.
        global_batch_size: examples per step over all replicas, the same in every trial (the batch contract).
        executions_per_trial: trainings per trial, averaged.
        seed: the oracle's random seed (None: random; a resumed search keeps its own).
        directory: where searches live; the project is ``directory/project_name``.
        project_name: the search's name; rerunning the same one continues it.
        overwrite: delete a previous search of that name instead of continuing it.
        retrain: train the best model again from scratch for `epochs` after the search.
        export: where the best model goes: "" (only ``best_model.keras`` in the project),
            or a path ("x.keras", "x.tflite", or a folder for every TFLite variant), or a
            table {path, quantize, modes}.
    """

    tuner: str = "hyperband"
    objective: str = "val_loss"
    direction: str = ""
    max_trials: int = 10
    epochs: int = 10
    factor: int = 3
    global_batch_size: int = 64
    executions_per_trial: int = 1
    seed: int | None = None
    directory: str = "tuning"
    project_name: str = "search"
    overwrite: bool = False
    retrain: bool = False
    export: str | dict[str, Any] = ""

    def __post_init__(self):
        _check_choice("tune.tuner", self.tuner, TUNERS)
        _check_choice("tune.direction", self.direction, ("", "max", "min"))
        for key, low in (("max_trials", 1), ("epochs", 1), ("factor", 2), ("global_batch_size", 1),
                         ("executions_per_trial", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"{key} must be at least {low}, got {getattr(self, key)}", where=f"tune.{key}",
                                  fix=f"give a whole number >= {low}")
        if not self.objective or not self.project_name:
            raise ConfigError("objective and project_name must not be empty", where="tune",
                              fix='e.g. objective = "val_accuracy", project_name = "digits"')
        export = {"path": self.export} if isinstance(self.export, str) else dict(self.export)
        unknown = sorted(set(export) - {"path", "quantize", "modes"})
        if unknown or (len(export) > 1 and not export.get("path")):
            raise ConfigError(f"export {self.export!r} is not a path or a table with a path", where="tune.export",
                              fix='give export = "best.tflite", or {path = "out/", modes = ["float32", "int8"]}')

    @property
    def export_spec(self) -> dict[str, Any] | None:
        """`export` as a table {path, quantize?, modes?}, or None for no export."""
        spec = {"path": self.export} if isinstance(self.export, str) else dict(self.export)
        return spec if spec.get("path") else None


LR_SCALINGS = ("linear", "sqrt", "none")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How to train (`tfscale.fit` options; the ``[train]`` table of `tfscale train run.toml`).

    Attributes:
        epochs: passes over the training data.
        global_batch_size: examples per optimizer step over all replicas; give this or
            `per_replica_batch_size`, and tfscale derives the other (an error if it does not divide).
        per_replica_batch_size: examples per step on each replica.
        steps_per_epoch: steps per epoch (None: one pass over the data).
        optimizer: a Keras optimizer name ("adam", "sgd", "adamw", ...).
        optimizer_args: more arguments for it, e.g. {momentum = 0.9} or {weight_decay = 1e-4}.
        base_lr: the learning rate that is right for `base_batch_size` examples per update.
        base_batch_size: the reference batch of `base_lr` (None: the effective batch, i.e. no scaling).
        lr_scaling: "linear" (Goyal et al. 2017), "sqrt" (for Adam-like optimizers) or "none".
        warmup_steps: optimizer updates that ramp the learning rate up to its scaled value.
        decay_steps: updates of cosine decay to 0 after warmup (None: constant after warmup).
        gradient_accumulation_steps: batches whose gradients are averaged into one update;
            the effective batch is ``global_batch_size * gradient_accumulation_steps``.
        precision: "auto" (bfloat16 on TPU, float16 on GPUs that support it, float32 on CPU),
            "float32", "mixed_float16" (with Keras's dynamic loss scaling) or "mixed_bfloat16".
        jit_compile: XLA compilation: true, false or "auto" (Keras decides).
        steps_per_execution: steps run per call of the compiled training function.
        loss: a Keras loss (a name in a config); None keeps the compile done by the model function.
        metrics: Keras metrics (names in a config).
        checkpoint_dir: where the chief keeps checkpoints; a restarted job resumes from the latest.
        tensorboard_dir: where the chief writes TensorBoard logs.
        keep_checkpoints: how many of the latest checkpoints to keep.
        resume: restore the latest checkpoint in `checkpoint_dir` first (false: start over).
        seed: seeds Python, NumPy and Keras before the model is built (None: not seeded).
        verbose: Keras progress output on the chief ("auto", 0, 1, 2); other workers are silent.
    """

    epochs: int = 1
    global_batch_size: int | None = None
    per_replica_batch_size: int | None = None
    steps_per_epoch: int | None = None
    optimizer: str = "adam"
    optimizer_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    base_lr: float = 1e-3
    base_batch_size: int | None = None
    lr_scaling: str = "linear"
    warmup_steps: int = 0
    decay_steps: int | None = None
    gradient_accumulation_steps: int = 1
    precision: str = "auto"
    jit_compile: bool | str = "auto"
    steps_per_execution: int = 1
    loss: Any = None
    metrics: Any = ()
    checkpoint_dir: str | None = None
    tensorboard_dir: str | None = None
    keep_checkpoints: int = 2
    resume: bool = True
    seed: int | None = None
    verbose: int | str = "auto"

    def __post_init__(self):
        _check_choice("train.lr_scaling", self.lr_scaling, LR_SCALINGS)
        _check_choice("train.precision", self.precision, PRECISIONS)
        if self.jit_compile not in (True, False, "auto"):
            raise ConfigError(f"jit_compile {self.jit_compile!r} is not accepted", where="train.jit_compile",
                              fix='give true, false or "auto"')
        for key, low in (("epochs", 1), ("global_batch_size", 1), ("per_replica_batch_size", 1),
                         ("steps_per_epoch", 1), ("base_batch_size", 1), ("warmup_steps", 0), ("decay_steps", 1),
                         ("gradient_accumulation_steps", 1), ("steps_per_execution", 1), ("keep_checkpoints", 1)):
            value = getattr(self, key)
            if value is not None and value < low:
                raise ConfigError(f"{key} must be at least {low}, got {value}", where=f"train.{key}",
                                  fix=f"give a whole number >= {low}" + ("" if key == "epochs" else ", or leave it out"))
        if not self.base_lr > 0:
            raise ConfigError(f"base_lr must be positive, got {self.base_lr}", where="train.base_lr",
                              fix="give a learning rate such as 1e-3")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where `tfscale train` gets its examples (the ``[data]`` table).

    Attributes:
        train: "module:function" returning the training examples, unbatched: a `tf.data.Dataset`
            of (x, y), a tfscale.data pipeline, or a tuple of arrays (x, y).
        validation: "module:function" for validation examples, or "" for none.
        args: keyword arguments passed to both functions.
        shuffle_buffer: examples to shuffle over each epoch (0: keep the order; a restarted job
            then repeats the uninterrupted run exactly).
        seed: the shuffle's seed.
    """

    train: str = ""
    validation: str = ""
    args: dict[str, Any] = dataclasses.field(default_factory=dict)
    shuffle_buffer: int = 0
    seed: int = 0

    def __post_init__(self):
        if not self.train:
            raise ConfigError("no training data named", where="data.train",
                              fix='give train = "package.module:function" returning unbatched (x, y) examples')
        if self.shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}", where="data.shuffle_buffer",
                              fix="give 0 (no shuffle) or a buffer size")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What `tfscale train` exports after training (the ``[export]`` table).

    Attributes:
        dir: the folder for every TFLite variant and the report ("": no export).
        modes: TFLite variants: "float32", "dynamic", "float16", "int8", "int16x8".
        max_drop: the accuracy budget (percentage points) for the recommended variant.
        saved_model: also write a SavedModel into ``dir/saved_model``.
        overwrite: replace files already in `dir`.
    """

    dir: str = ""
    modes: tuple[str, ...] = ("float32", "dynamic", "float16", "int8")
    max_drop: float = 0.5
    saved_model: bool = False
    overwrite: bool = False


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole `tfscale train run.toml`: model, data, strategy, training and export.

    Attributes:
        model: "module:function" returning a Keras model (built inside the strategy's scope).
        model_args: keyword arguments for the model function.
        strategy: a strategy name ("auto", "mirrored", ...), a preset file (strategies/laptop.toml,
            relative to the run file or the working directory), or a ``[strategy]`` table.
        data: the ``[data]`` table.
        train: the ``[train]`` table.
        export: the ``[export]`` table.
    """

    model: str = ""
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    strategy: StrategyConfig | str = "auto"
    data: DataConfig | None = None
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)

    def __post_init__(self):
        if ":" not in self.model:
            raise ConfigError(f"model {self.model!r} is not of the form 'module:function'", where="model",
                              fix='give model = "package.module:build_model"')
        if self.data is None:
            raise ConfigError("the run file has no [data] table", where="data",
                              fix='add [data] with train = "package.module:function"')


def load_run_config(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Loads a `tfscale train` file (keys of `RunConfig`), with ``--set key=value`` overrides."""
    return from_mapping(RunConfig, apply_overrides(load_toml(path), list(overrides)), source=os.fspath(path))


# --------------------------------------------------------------------------- files


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a TOML file into a dict, with a `ConfigError` for a missing or malformed file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist", where=path,
                          fix="check the path (presets live in strategies/)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file is not valid TOML: {e}", where=path,
                          fix="correct the TOML syntax at the position given") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parses one ``--set`` item, ``a.b=value``, into (["a", "b"], value).

    The value is read as a TOML value (numbers, booleans, strings, arrays);
    anything that is not valid TOML is taken as a plain string.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value", where="--set",
                          fix="write it as --set section.key=value, e.g. --set train.epochs=3")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Returns a copy of `data` with each ``key.path=value`` override applied."""
    result = _deep_copy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = result
        for part in keys[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r} goes inside {part!r}, which is a value, not a table",
                                  where="--set", fix="check the key path")
            node = child
        node[keys[-1]] = value
    return result


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


# --------------------------------------------------------------------------- typed mapping


T = typing.TypeVar("T")


def from_mapping(cls: type[T], data: Mapping[str, Any], *, source: str, prefix: str = "") -> T:
    """Builds the frozen dataclass `cls` from `data`, checking keys and types.

    Args:
        cls: a dataclass type.
        data: the values, e.g. one table of a TOML file.
        source: where the values came from (a file name), for error messages.
        prefix: the table name, so errors say ``strategy.replicas``.

    Raises:
        ConfigError: an unknown key (with the closest known one), or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"unknown key {dotted!r}", where=source,
                              fix=f"{hint}known keys: {', '.join(sorted(fields))}")
        kwargs[key] = _coerce(hints[key], value, dotted, source)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(e.what, where=f"{source}, {e.where}" if e.where else source, fix=e.fix) from None


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, source, "a list", value)
        return tuple(_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _type_error(key, source, "a table", value)
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{value!r} is not accepted for {key!r}", where=source,
                              fix=f"use one of: {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise _type_error(key, source, "a table", value)
        return from_mapping(hint, value, source=source, prefix=f"{key}.")
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise _type_error(key, source, "true or false", value)
    if hint is int and isinstance(value, bool):
        raise _type_error(key, source, "a whole number", value)
    if isinstance(hint, type) and not isinstance(value, hint):
        names = {int: "a whole number", float: "a number", str: "a string"}
        raise _type_error(key, source, names.get(hint, hint.__name__), value)
    return value


def _type_error(key: str, source: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{key!r} must be {expected}, got {value!r} ({type(value).__name__})",
                       where=source, fix=f"give {key} as {expected}")


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
