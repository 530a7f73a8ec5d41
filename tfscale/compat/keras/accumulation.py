"""Keras 3 gradient accumulation under tf.distribute with several replicas (keras-team/keras#20582).

`BaseOptimizer._backend_apply_gradients` chooses between "update" and "accumulate"
with `ops.cond` in replica context, and the update branch all-reduces gradients
with `merge_call`, which tf.distribute refuses inside control flow: `fit` fails
with "`merge_call` called while defining a new graph" under MirroredStrategy and
MultiWorkerMirroredStrategy on CPUs (and GPUs without XLA). The fix takes the
branch in cross-replica context, as Keras's own `LossScaleOptimizer` does, so each
branch can synchronize (keras-team/keras#23592 proposes the same upstream).

It applies to one optimizer instance at a time (the ones tfscale builds): nothing
is patched process-wide. Delete this module when Keras ships the fix. Checked on
Keras 3.13-3.15 with TensorFlow 2.20-2.21; an optimizer without the private
members it uses (`_USED`) is an `UpstreamError` when tfscale prepares it.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfscale import compat

# The private members of Keras' BaseOptimizer used below (checked on Keras 3.13-3.15, TensorFlow 2.20-2.21), besides
# `_accumulated_gradients`, which `build()` creates later.
_USED = ("_backend_apply_gradients", "_iterations", "_get_variable_index",
         "_clip_gradients", "_apply_weight_decay", "_backend_update_step", "_backend_reset_gradient_accumulators",
         "_backend_increment_gradient_accumulators")
# The first Keras release with keras-team/keras#20582 fixed; None while it is open.
KERAS_ACCUMULATION_FIXED_IN: tuple[int, int] | None = None


def needs_fix(version: tuple[int, int] | None = None) -> bool:
    if version is None:
        version = tuple(int(p) for p in keras.__version__.split(".")[:2])
    return KERAS_ACCUMULATION_FIXED_IN is None or version < KERAS_ACCUMULATION_FIXED_IN


def fix_accumulation(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Makes `optimizer`'s `gradient_accumulation_steps` work under multi-replica strategies; returns it."""
    if not optimizer.gradient_accumulation_steps or not needs_fix():
        return optimizer
    missing = [name for name in _USED if not hasattr(optimizer, name)]
    if missing or not hasattr(tf.__internal__.distribute, "strategy_supports_no_merge_call"):
        what = f"BaseOptimizer.{missing[0]}" if missing else "tf.__internal__.distribute.strategy_supports_no_merge_call"
        raise compat.changed("Keras", keras.__version__, what, "3.13-3.15 (TensorFlow 2.20-2.21)",
                             needed_for="gradient_accumulation_steps under several replicas (keras-team/keras#20582)",
                             fix="install Keras 3.13-3.15, or train with gradient_accumulation_steps=1")
    original = optimizer._backend_apply_gradients

    def apply(grads, trainable_variables):
        context = tf.distribute.get_replica_context()
        if (context is None or context.num_replicas_in_sync == 1
                or tf.__internal__.distribute.strategy_supports_no_merge_call()):
            return original(grads, trainable_variables)
        return context.merge_call(_apply_cross_replica, args=(optimizer, grads, trainable_variables))

    optimizer._backend_apply_gradients = apply
    return optimizer


def _apply_cross_replica(distribution, optimizer, grads, variables):
    """The update/accumulate choice, taken once for all replicas (they share the step counter)."""
    steps = optimizer.gradient_accumulation_steps
    is_update = tf.equal((optimizer._iterations + 1) % steps, 0)
    tf.cond(is_update,
            lambda: distribution.extended.call_for_each_replica(_update, args=(optimizer, grads, variables)),
            lambda: distribution.extended.call_for_each_replica(_accumulate, args=(optimizer, grads, variables)))


def _accumulators(optimizer, variables):
    return [optimizer._accumulated_gradients[optimizer._get_variable_index(v)] for v in variables]


def _update(optimizer, grads, variables):
    """Keras's update branch: average this replica's accumulated gradients, then the (all-reducing) update."""
    steps = optimizer.gradient_accumulation_steps
    grads = [(g + a) / steps for g, a in zip(grads, _accumulators(optimizer, variables))]
    grads = optimizer._clip_gradients(grads)
    optimizer._apply_weight_decay(variables)
    optimizer._backend_update_step(grads, variables, optimizer.learning_rate)
    optimizer._backend_reset_gradient_accumulators()


def _accumulate(optimizer, grads, variables):
    optimizer._backend_increment_gradient_accumulators(grads, _accumulators(optimizer, variables))
