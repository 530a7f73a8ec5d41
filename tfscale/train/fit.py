"""`tfscale.fit(build_model, train_data, ...)`: a whole distributed training run in one call, on either engine.

It goes through its `Scale` as a user's own loop does: `scale.input` places the data (the one path to the
data layer), `scale.optimizer` builds the optimizer and `scale.callbacks` the callbacks, both reading the
`DistributedInput` they are given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras

from tfscale.compat import keras as keras_compat
from tfscale.config import TrainConfig, with_options
from tfscale.data.sharding.position import skip_examples
from tfscale.errors import ConfigError
from tfscale.scale import Scale
from tfscale.scale.checkpoint import Checkpoints
from tfscale.scale.optimizer import peak_learning_rate
from tfscale.scale.throughput import InputTimer, Throughput
from tfscale.strategy import backend
from tfscale.train.batch import BatchPlan, plan_batch
from tfscale.train.loading import make_model
from tfscale.train.precision import check_outputs, for_scale, precision_policy

log = logging.getLogger("tfscale")


@dataclasses.dataclass
class FitResult:
    """What `tfscale.fit` returns.

    Attributes:
        model: the trained Keras model (its variables live under `scale`'s strategy).
        history: Keras's `History` (history.history maps metric names to per-epoch values).
        scale: the `Scale` training ran under.
        batch: the batch plan (global, per-replica, effective batch sizes).
        learning_rate: the peak learning rate after scaling.
        precision: the Keras dtype policy trained with.
        throughput: the last epoch's examples/s, steps/s, per replica and input-wait figures.
        resumed_from_epoch: the epochs done in the checkpoint restored (0: a fresh start).
        resumed_from_step: the steps into the next epoch it resumed at (0: at an epoch's start).
    """

    model: keras.Model
    history: keras.callbacks.History
    scale: Any
    batch: BatchPlan
    learning_rate: float
    precision: str
    throughput: dict[str, float]
    resumed_from_epoch: int = 0
    resumed_from_step: int = 0


def fit(build_model: Callable[..., keras.Model] | str, train_data, *, scale=None, validation_data=None,
        callbacks: Sequence[keras.callbacks.Callback] = (), config: TrainConfig | None = None,
        model_args: Mapping[str, Any] | None = None, **options: Any) -> FitResult:
    """Builds the model under the strategy, scales batch and learning rate, trains with checkpoints.

    Args:
        build_model: a function returning a Keras model (or ``"module:function"``); it runs inside
            the strategy's scope and the precision policy. If it compiles the model and no `loss`
            is given, its own compile is kept (no learning-rate scaling).
        train_data: unbatched training examples: a `tf.data.Dataset` of (x, y), a tfscale.data
            pipeline, or a tuple of arrays (x, y); on JAX also a generator function. tfscale
            batches, shards and prefetches it (`Scale.distribute`).
        scale: the `tfscale.Scale` to train under (default: `Scale.auto()`).
        validation_data: unbatched validation examples, evaluated after each epoch.
        callbacks: more Keras callbacks, run after tfscale's own.
        config: a `TrainConfig`; `options` override its fields.
        model_args: keyword arguments for `build_model`.
        **options: `TrainConfig` fields: epochs, global_batch_size, loss, metrics, base_lr,
            base_batch_size, lr_scaling, warmup_steps, precision, checkpoint_dir, ...

    Returns:
        A `FitResult` with the model, its history and what was decided.

    Raises:
        ConfigError: an unknown option, a batch that does not divide, a model function that
            does not import or returns no model, an unwritable checkpoint folder.
        TrainingError: the loss became NaN or infinite (the error names the step).

    Example:
        result = tfscale.fit(build_model, (x, y), epochs=5, global_batch_size=256,
                             loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    """
    cfg = _train_config(config, options)
    if scale is None:
        scale = Scale.auto()
    plan = plan_batch(scale.num_replicas, cfg.global_batch_size, cfg.per_replica_batch_size,
                      cfg.gradient_accumulation_steps)
    policy = for_scale(cfg.precision, scale)
    timer = InputTimer()  # times tf.data input (the wait for each batch); other input has no figure

    def batches(data, drop_remainder=True, where="train_data", wrap=None):
        return scale.input(data, global_batch_size=plan.global_batch_size, drop_remainder=drop_remainder, wrap=wrap,
                           where=where)

    train = batches(train_data, wrap=timer.wrap)
    validation = None if validation_data is None else batches(validation_data, False, "validation_data").dataset
    if cfg.seed is not None:
        backend.set_random_seed(cfg.seed)
    model, learning_rate = _build_and_compile(build_model, model_args, scale, cfg, train, plan, policy)
    all_callbacks = scale.callbacks(
        checkpoint_dir=cfg.checkpoint_dir, tensorboard_dir=cfg.tensorboard_dir, keep_checkpoints=cfg.keep_checkpoints,
        resume=cfg.resume, training_input=train, input_timer=timer, learning_rate=learning_rate,
        checkpoint_every_steps=cfg.checkpoint_every_steps, checkpoint_every_seconds=cfg.checkpoint_every_seconds,
        save_on_preemption=cfg.save_on_preemption, steps_per_epoch=cfg.steps_per_epoch, extra=callbacks)
    checkpoints = next((c for c in all_callbacks if isinstance(c, Checkpoints)), None)
    start = (0, 0)
    if checkpoints is not None and cfg.resume:
        checkpoints.set_model(model)
        restored = checkpoints.restore_now()
        start = restored.position if restored is not None else (0, 0)
    log.info("training: %s, batch %d (%d per replica, %d per update), precision %s", scale, plan.global_batch_size,
             plan.per_replica_batch_size, plan.effective_batch_size, policy)
    histories = []
    with warnings.catch_warnings(), _released(checkpoints):
        # Keras warns at the end of every epoch of a dataset whose length it does not know yet.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        first_epoch, step = start
        if step and first_epoch < cfg.epochs:  # the rest of the interrupted epoch, at the exact next batch
            rest = _skipped(train_data, step, plan.global_batch_size, cfg)
            if rest is None:
                log.warning("resuming %d step(s) into epoch %d: this input's order depends on the number of workers "
                            "(a tfscale.data pipeline without .elastic()) or on steps_per_epoch / gradient "
                            "accumulation, so the epoch starts again at its first batch and those steps run twice",
                            step, first_epoch + 1)
            else:
                checkpoints.start_offset = step
                histories.append(_fit(model, batches(rest, wrap=timer.wrap).dataset, cfg, scale, validation,
                                      all_callbacks, first_epoch, first_epoch + 1))
                first_epoch += 1
        if first_epoch < cfg.epochs or not histories:
            histories.append(_fit(model, train.dataset, cfg, scale, validation, all_callbacks, first_epoch,
                                  cfg.epochs))
    speed = next((c.summary for c in all_callbacks if isinstance(c, Throughput)), {})
    return FitResult(model, _merged(histories), scale, plan, learning_rate, policy, speed, start[0], start[1])


@contextlib.contextmanager
def _released(checkpoints):
    """The preemption signals are given back however the fits end (Keras calls no callback when fit raises)."""
    try:
        yield
    finally:
        if checkpoints is not None:
            checkpoints.release()


def _fit(model, train, cfg: TrainConfig, scale, validation, callbacks, initial_epoch: int, epochs: int):
    keras_compat.resume_at_epoch(model, None)  # the checkpoint's position was read by tfscale.fit, which passes it here
    try:
        return model.fit(train, epochs=epochs, initial_epoch=initial_epoch, steps_per_epoch=cfg.steps_per_epoch,
                         shuffle=False, validation_data=validation, callbacks=callbacks,
                         verbose=_verbosity(cfg.verbose) if scale.is_chief else 0)
    except Exception as e:  # a bad record found by a tfscale pipeline's raise-mode check
        error = _as_data_error(e)
        if error is None:
            raise
        raise error from None


def _skipped(train_data, steps: int, global_batch_size: int, cfg: TrainConfig):
    """`train_data` after `steps` global batches, or None where that is not the exact position."""
    if cfg.steps_per_epoch is not None or cfg.gradient_accumulation_steps != 1:
        return None
    return skip_examples(train_data, steps * global_batch_size)


def _merged(histories: list):
    """One History of the fits that trained this run (the rest of an interrupted epoch, then the others)."""
    merged = histories[-1]
    for earlier in reversed(histories[:-1]):
        merged.epoch = earlier.epoch + merged.epoch
        merged.history = {k: earlier.history.get(k, []) + v for k, v in merged.history.items()}
    return merged


def _train_config(config: TrainConfig | None, options: Mapping[str, Any]) -> TrainConfig:
    return with_options(TrainConfig, config, options, what="tfscale.fit option", where="tfscale.fit(...)")


def _build_and_compile(build_model, model_args, scale, cfg: TrainConfig, train, plan: BatchPlan, policy: str):
    """The model built and compiled under `scale` with `scale.optimizer` scaled to `train` (a `DistributedInput`);
    and the peak learning rate it trains with."""
    with precision_policy(policy), scale.scope():
        model = make_model(build_model, model_args)
        check_outputs(model, policy)
        if cfg.loss is None:
            if not model.compiled:
                raise ConfigError("no loss given and the model function did not compile the model",
                                  where="loss", fix='give loss=..., e.g. loss="sparse_categorical_crossentropy"')
            log.warning("keeping the model's own compile(): learning rate, accumulation and jit settings not applied")
            return model, peak_learning_rate(model.optimizer)
        _check_names(cfg.loss, cfg.metrics)
        optimizer = scale.optimizer(cfg.optimizer, base_lr=cfg.base_lr, base_batch_size=cfg.base_batch_size,
                                    training_input=train, scaling=cfg.lr_scaling, warmup_steps=cfg.warmup_steps,
                                    decay_steps=cfg.decay_steps, gradient_accumulation_steps=plan.accumulation_steps,
                                    **cfg.optimizer_args)
        model.compile(optimizer=optimizer, loss=cfg.loss, metrics=list(cfg.metrics or ()),
                      jit_compile=scale.engine.jit_compile(cfg.jit_compile),
                      steps_per_execution=cfg.steps_per_execution)
    return model, peak_learning_rate(optimizer)


def _check_names(loss, metrics) -> None:
    """Unknown loss or metric names fail here, naming the key, not deep inside the first step."""
    checks = [("loss", "loss", keras.losses.get, loss)]
    checks += [("metrics", "metric", keras.metrics.get, m) for m in (metrics or ())]
    for key, kind, get, value in checks:
        if isinstance(value, str) and value not in ("accuracy", "acc", "crossentropy", "ce"):
            try:
                get(value)
            except ValueError:
                raise ConfigError(f"{value!r} is not a Keras {kind} name", where=key,
                                  fix="use a name keras.losses.get / keras.metrics.get knows, e.g. "
                                      "'sparse_categorical_crossentropy', 'mse', 'accuracy'") from None


def _verbosity(verbose):
    """Keras' "auto" is a progress bar redrawn with "\r": one line per epoch (2) where stdout is not a terminal."""
    if verbose == "auto" and not (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()):
        return 2
    return verbose


def _as_data_error(error: Exception):
    """The DataError naming a bad record, for a TensorFlow error raised by a tfscale pipeline's check; else None."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(error, tf.errors.OpError):
        return None
    from tfscale.data import badrecords

    translated = badrecords.as_data_error(error)
    return None if translated is error else translated
