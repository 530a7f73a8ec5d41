"""Ray's private APIs that tfscale uses (the Ray quarantine; see `tfscale.compat`).

Checked on Ray 2.60 (Ray Train v2).

1. `v2_enabled` (`ray.train.v2._internal.constants.is_v2_enabled`): tfscale.ray runs on Ray Train v2, which
   ``RAY_TRAIN_V2_ENABLED=0`` turns off; Ray has no public test of it. Gone: read from the variable as Ray
   2.60 does (on where unset, else only for "1" or "true").
2. `training_framework` (`ray.train.v2._internal.util.TrainingFramework`): the name of the framework a run
   trains with, which Ray's run state shows (`TfscaleBackendConfig.framework`). Gone: None (Ray shows none).
3. `preemption_info` (`ray.train.v2._internal.execution.context.get_train_context().preemption_context.
   preemption_info`): the `PreemptionInfo` that Ray Train's `PreemptionWatcher` stores in a worker's train
   context when a node of the group is drained for preemption (`RayTrainWorker.mark_preempt`). The public
   `ray.train.get_preemption_info()` reads it through a broadcast every worker must call the same number of
   times, a barrier too costly at every step; tfscale/ray/notice.py reads the stored value in a thread of
   its own. Gone: the exception of the lookup, and the watcher stays off (a debug line).
"""

from __future__ import annotations

import os


def v2_enabled() -> bool:
    """Ray Train v2 is on (1.)."""
    try:
        from ray.train.v2._internal.constants import is_v2_enabled  # private: see 1. in the module docstring
    except ImportError:
        value = os.environ.get("RAY_TRAIN_V2_ENABLED")
        return value is None or value.lower() in ("1", "true")
    return is_v2_enabled()


def training_framework(jax: bool):
    """Ray Train's name for Keras on JAX (`jax`) or on TensorFlow, or None (2.)."""
    try:
        from ray.train.v2._internal.util import TrainingFramework  # private: see 2. in the module docstring
    except ImportError:
        return None
    return TrainingFramework.JAX if jax else TrainingFramework.TENSORFLOW


def preemption_info():
    """The PreemptionInfo Ray Train stored for this worker, or None (raises where this is not a Ray Train
    worker, or Ray has no such context; 3.)."""
    from ray.train.v2._internal.execution.context import get_train_context  # private: see 3. in the docstring

    return get_train_context().preemption_context.preemption_info
