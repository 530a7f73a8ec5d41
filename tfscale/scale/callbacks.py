"""`scale.callbacks(...)`: the callbacks every distributed `fit` needs, right for this worker's role.

The chief writes checkpoints and TensorBoard logs and shows the progress bar; the
other workers write into temporary folders that are removed, and stay silent.
"""

from __future__ import annotations

import os
import shutil
import weakref
from collections.abc import Sequence

import keras

from tfscale.data import epochs
from tfscale.data.sharding.placement import DistributedInput
from tfscale.scale.checkpoint import Checkpoints, ensure_writable, worker_dir
from tfscale.scale.guards import TerminateOnNaN
from tfscale.scale.preemption import DEFAULT_SIGNALS
from tfscale.scale.throughput import InputTimer, Throughput


class SilentProgbar(keras.callbacks.ProgbarLogger):
    """Stands in for Keras's progress bar on non-chief workers, so `fit(verbose="auto")` prints nothing there."""

    def on_train_begin(self, logs=None): pass  # noqa: E704
    def on_epoch_begin(self, epoch, logs=None): pass  # noqa: E704
    def on_train_batch_end(self, batch, logs=None): pass  # noqa: E704
    def on_test_begin(self, logs=None): pass  # noqa: E704
    def on_test_batch_end(self, batch, logs=None): pass  # noqa: E704
    def on_test_end(self, logs=None): pass  # noqa: E704
    def on_predict_begin(self, logs=None): pass  # noqa: E704
    def on_predict_batch_end(self, batch, logs=None): pass  # noqa: E704
    def on_predict_end(self, logs=None): pass  # noqa: E704
    def on_epoch_end(self, epoch, logs=None): pass  # noqa: E704
    def on_train_end(self, logs=None): pass  # noqa: E704


class InputEpoch(keras.callbacks.Callback):
    """Tells elastic tfscale.data pipelines which epoch Keras starts, so they read it in that epoch's order
    (`tfscale.data.epochs`): a resumed run reads epoch k as the run that was not stopped did."""

    def on_epoch_begin(self, epoch, logs=None):
        epochs.set_epoch(epoch)


class RemoveAtEnd(keras.callbacks.Callback):
    """Removes a non-chief worker's temporary folder when training ends (or the process exits)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        weakref.finalize(self, shutil.rmtree, path, True)

    def on_train_end(self, logs=None):
        shutil.rmtree(self.path, ignore_errors=True)


def build_callbacks(scale, *, checkpoint_dir: str | os.PathLike | None = None,
                    tensorboard_dir: str | os.PathLike | None = None, keep_checkpoints: int = 2, resume: bool = True,
                    throughput: bool = True, terminate_on_nan: bool = True, global_batch_size: int | None = None,
                    input_timer: InputTimer | None = None, learning_rate: float | None = None,
                    checkpoint_every_steps: int | None = None, checkpoint_every_seconds: float | None = None,
                    save_on_preemption: bool = True, preemption_signals: Sequence[str] = DEFAULT_SIGNALS,
                    steps_per_epoch: int | None = None, storage_options: dict | None = None,
                    training_input: DistributedInput | None = None,
                    extra: Sequence[keras.callbacks.Callback] = (), **tensorboard_options) -> list:
    """The callbacks for `model.fit` under `scale`, in the order they must run.

    Args:
        scale: the `tfscale.Scale` training runs under.
        checkpoint_dir: where the chief keeps checkpoints, a folder or an object-store URL (s3://bucket/run,
            gs://bucket/run); training resumes from the newest one.
        tensorboard_dir: where the chief writes TensorBoard logs.
        keep_checkpoints: how many of the latest checkpoints to keep.
        resume: restore the latest checkpoint at the start of `fit` (a restarted job continues).
        checkpoint_every_steps: also save every this many steps (epoch ends always save).
        checkpoint_every_seconds: also save once this many seconds passed since the last save.
        save_on_preemption: on SIGTERM or SIGUSR1 (`preemption_signals`), every worker saves at the end of
            the step and `fit` raises `Preempted`: the process exits with 143, to be restarted.
        preemption_signals: the signals that mean preemption (e.g. what Slurm's --signal names).
        steps_per_epoch: steps in one epoch, recorded in the checkpoints (default: `training_input`'s, where
            known; else what Keras reports).
        storage_options: for an object-store checkpoint_dir, passed to its file system (fsspec).
        throughput: log examples/s, steps/s, per replica and input wait each epoch (chief).
        terminate_on_nan: stop with an error naming the step at the first NaN/inf loss.
        global_batch_size: for the throughput figures and the checkpoints' record (default: `training_input`'s).
        training_input: the `DistributedInput` training reads (`scale.input`); without it and
            `global_batch_size`, the training input given to `scale.distribute` (`scale.training_batch_size`).
        input_timer: an `InputTimer` wrapped around the input, for the input-wait figure.
        learning_rate: quoted in the NaN error.
        extra: the user's own callbacks, run after these.
        **tensorboard_options: passed to `keras.callbacks.TensorBoard` (e.g. update_freq=100).

    Raises:
        ConfigError: the checkpoint or TensorBoard folder cannot be written.

    Example:
        model.fit(train, epochs=5, callbacks=scale.callbacks(checkpoint_dir="ckpt/", tensorboard_dir="logs/"))
    """
    chief, rank = scale.is_chief, scale.rank
    callbacks: list = [InputEpoch(), *([TerminateOnNaN(learning_rate)] if terminate_on_nan else [])]
    batch = None
    if throughput or checkpoint_dir is not None:
        batch = global_batch_size or scale.training_batch_size(training_input, where="scale.callbacks(...)")
    if steps_per_epoch is None and training_input is not None:
        steps_per_epoch = training_input.steps
    if throughput:
        callbacks.append(Throughput(batch, scale.num_replicas, timer=input_timer, verbose=chief))
    if checkpoint_dir is not None:
        run = {"global_batch_size": batch, "steps_per_epoch": steps_per_epoch, "num_workers": scale.num_workers,
               "num_replicas": scale.num_replicas, "backend": scale.backend, "strategy": scale.name,
               "mesh": scale.engine.describe().get("mesh")}
        callbacks.append(Checkpoints(os.fspath(checkpoint_dir), is_chief=chief, rank=rank,
                                     keep=keep_checkpoints, resume=resume, every_steps=checkpoint_every_steps,
                                     every_seconds=checkpoint_every_seconds, preemption=save_on_preemption,
                                     signals=preemption_signals, run=run, scope=scale.scope,
                                     host_weights=scale.engine.host_weights, storage_options=storage_options,
                                     exchange=scale.engine.exchange if scale.engine.num_processes > 1 else None,
                                     forget=scale.engine.forget))
    if tensorboard_dir is not None:
        logdir = os.fspath(tensorboard_dir) if chief else worker_dir(os.fspath(tensorboard_dir), "tb", rank)
        if not chief:
            shutil.rmtree(logdir, ignore_errors=True)  # left over by a killed run
        callbacks.append(keras.callbacks.TensorBoard(ensure_writable(logdir, "tensorboard dir"), **tensorboard_options))
        if not chief:
            callbacks.append(RemoveAtEnd(logdir))
    callbacks.extend(extra)
    if not chief:
        callbacks.append(SilentProgbar())
    return callbacks
