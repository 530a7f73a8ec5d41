"""`Scale`, the one object users hold, and the training blocks it hands out.

    scale = tfscale.Scale.auto()
    with scale.scope():
        model.compile(optimizer=scale.optimizer("adam", base_lr=1e-3, base_batch_size=64), loss=...)
    model.fit(train, epochs=5, callbacks=scale.callbacks(checkpoint_dir="ckpt/"))

facade.py holds `Scale`. `Scale.input` places data for the engine and returns a `DistributedInput`
(the batches, the global and per-replica batch, the steps, whether every worker has equal steps);
`Scale.distribute` returns its batches. The blocks below it take a Scale as an argument and never import it:
optimizer.py and schedule.py (`scale.optimizer`: the learning rate scaled to the global batch, warmup),
callbacks.py with checkpoint.py, throughput.py and guards.py (`scale.callbacks`); both read the
`DistributedInput` given as `training_input=`. `tfscale.train` re-exports them and builds `tfscale.fit` on
top, through `Scale`. Importing this package loads no TensorFlow or JAX; the blocks load Keras.
"""

from tfscale.data.sharding.placement import DistributedInput
from tfscale.scale.facade import Scale

__all__ = ["DistributedInput", "Scale"]
