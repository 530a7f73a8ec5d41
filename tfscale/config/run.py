"""`TrainConfig` and the whole `tfscale train run.toml` (`RunConfig`: model, data, strategy, train, export)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from tfscale.config.loading import check_choice as _check_choice
from tfscale.config.runfile import read_run_file
from tfscale.config.strategy import StrategyConfig
from tfscale.errors import ConfigError
from tfscale.vocabulary import LR_SCALINGS, PRECISIONS, LrScaling, Precision


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
        checkpoint_dir: where the chief keeps checkpoints, a folder or an object-store URL (s3://bucket/run,
            gs://bucket/run); a restarted job resumes from the newest, at the exact step.
        tensorboard_dir: where the chief writes TensorBoard logs.
        keep_checkpoints: how many of the latest checkpoints to keep.
        resume: restore the latest checkpoint in `checkpoint_dir` first (false: start over).
        checkpoint_every_steps: also save every this many steps (epoch ends always save).
        checkpoint_every_seconds: also save once this many seconds passed since the last save.
        save_on_preemption: on SIGTERM or SIGUSR1, save at the end of the step on every worker, then exit
            with 143 ("restart me").
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
    lr_scaling: LrScaling = "linear"
    warmup_steps: int = 0
    decay_steps: int | None = None
    gradient_accumulation_steps: int = 1
    precision: Precision = "auto"
    jit_compile: bool | str = "auto"
    steps_per_execution: int = 1
    loss: Any = None
    metrics: Any = ()
    checkpoint_dir: str | None = None
    tensorboard_dir: str | None = None
    keep_checkpoints: int = 2
    resume: bool = True
    checkpoint_every_steps: int | None = None
    checkpoint_every_seconds: float | None = None
    save_on_preemption: bool = True
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
                         ("gradient_accumulation_steps", 1), ("steps_per_execution", 1), ("keep_checkpoints", 1),
                         ("checkpoint_every_steps", 1)):
            value = getattr(self, key)
            if value is not None and value < low:
                raise ConfigError(f"{key} must be at least {low}, got {value}", where=f"train.{key}",
                                  fix=f"give a whole number >= {low}" + ("" if key == "epochs" else ", or leave it out"))
        if self.checkpoint_every_seconds is not None and not self.checkpoint_every_seconds > 0:
            raise ConfigError(f"checkpoint_every_seconds must be positive, got {self.checkpoint_every_seconds}",
                              where="train.checkpoint_every_seconds", fix="give seconds > 0, or leave it out")
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
        shuffle_buffer: examples to shuffle over each epoch (0: keep the order). Arrays are then
            shuffled in an elastic order, so a restarted job still repeats the uninterrupted run
            exactly; a `tf.data.Dataset` is reshuffled each pass (a restart repeats its epoch).
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
class RunFile:
    """The keys every run file holds, `tfscale train`'s and `tfscale tune`'s, meaning the same in both
    (`tfscale.config.runfile`).

    Attributes:
        model: "module:function" returning a Keras model (built inside the strategy's scope); for
            `tfscale tune`, it takes the hyperparameters first (``build_model(hp)``).
        model_args: keyword arguments for the model function.
        strategy: a strategy name ("auto", "mirrored", ...), a preset file (`my_preset.toml`, relative to
            the run file or the working directory, or a shipped one: `laptop.toml`), or a ``[strategy]`` table;
            the loaders make it a `StrategyConfig`.
        data: the ``[data]`` table.
    """

    model: str = ""
    model_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    strategy: StrategyConfig | str = "auto"
    data: DataConfig | None = None

    def __post_init__(self):
        if ":" not in self.model:
            raise ConfigError(f"model {self.model!r} is not of the form 'module:function'", where="model",
                              fix='give model = "package.module:build_model"')
        if self.data is None:
            raise ConfigError("the run file has no [data] table", where="data",
                              fix='add [data] with train = "package.module:function"')


@dataclasses.dataclass(frozen=True)
class RunConfig(RunFile):
    """A whole `tfscale train run.toml`: the keys of every run file (`RunFile`), then training and export.

    Attributes:
        train: the ``[train]`` table.
        export: the ``[export]`` table.
    """

    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)


def load_run_config(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """Loads a `tfscale train` run file (keys of `RunConfig`), with ``--set key=value`` overrides.

    The rules are those of every run file (`tfscale.config.runfile`): ``strategy`` comes back a `StrategyConfig`.
    """
    return read_run_file(RunConfig, path, overrides, command="train")
