"""Training at scale: the batch and learning-rate contract, precision, callbacks, checkpoints, `fit`.

    scale = tfscale.Scale.auto()
    train = scale.distribute(dataset, global_batch_size=256)
    with scale.scope():
        model = build_model()
        model.compile(optimizer=scale.optimizer("adam", base_lr=1e-3, base_batch_size=64), loss=...)
    model.fit(train, epochs=5, callbacks=scale.callbacks(checkpoint_dir="ckpt/"))

or in one call: ``tfscale.fit(build_model, dataset, epochs=5, global_batch_size=256, loss=...)``.

The blocks that `Scale` hands out (optimizer, learning-rate schedule, callbacks, checkpoints,
throughput, NaN guard) live beside it in `tfscale.scale` and are re-exported here; this
package adds the batch plan, precision, model loading and `fit`, which sit above `Scale`.
"""

from tfscale.scale.callbacks import build_callbacks
from tfscale.scale.checkpoint import Checkpoints
from tfscale.scale.guards import TerminateOnNaN, TrainingError
from tfscale.scale.optimizer import build_optimizer
from tfscale.scale.schedule import WarmupSchedule, scaled_learning_rate
from tfscale.scale.throughput import InputTimer, Throughput
from tfscale.train.batch import BatchPlan, plan_batch
from tfscale.train.precision import precision_policy, resolve_precision, use_precision

__all__ = ["BatchPlan", "Checkpoints", "InputTimer", "TerminateOnNaN", "Throughput", "TrainingError", "WarmupSchedule",
           "build_callbacks", "build_optimizer", "plan_batch", "precision_policy", "resolve_precision",
           "scaled_learning_rate", "use_precision"]
