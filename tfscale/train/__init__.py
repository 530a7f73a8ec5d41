"""Training at scale: the batch and learning-rate contract, precision, callbacks, checkpoints, `fit`.

    scale = tfscale.Scale.auto()
    train = scale.distribute(dataset, global_batch_size=256)
    with scale.scope():
        model = build_model()
        model.compile(optimizer=scale.optimizer("adam", base_lr=1e-3, base_batch_size=64), loss=...)
    model.fit(train, epochs=5, callbacks=scale.callbacks(checkpoint_dir="ckpt/"))

or in one call: ``tfscale.fit(build_model, dataset, epochs=5, global_batch_size=256, loss=...)``.
"""

from tfscale.train.batch import BatchPlan, plan_batch
from tfscale.train.callbacks import build_callbacks
from tfscale.train.checkpoint import Checkpoints
from tfscale.train.guards import TerminateOnNaN, TrainingError
from tfscale.train.optimizer import build_optimizer
from tfscale.train.precision import precision_policy, resolve_precision, use_precision
from tfscale.train.schedule import WarmupSchedule, scaled_learning_rate
from tfscale.train.throughput import InputTimer, Throughput

__all__ = ["BatchPlan", "Checkpoints", "InputTimer", "TerminateOnNaN", "Throughput", "TrainingError", "WarmupSchedule",
           "build_callbacks", "build_optimizer", "plan_batch", "precision_policy", "resolve_precision",
           "scaled_learning_rate", "use_precision"]
