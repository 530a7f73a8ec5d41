"""Input for a Scale: each engine's batches of the user's data, every worker with the same steps.

placement.py holds `place_input(engine, data, ...)`, which `Scale.input` and `Scale.distribute` call (and
only they: a contract in pyproject.toml). It chooses by what the engine declares and by input, and loads
TensorFlow only for tf.data input: per-replica batches through a tf.distribute strategy (tf_distribute.py),
this process's part of every global batch from tf.data (processes.py), or from NumPy arrays and generators
without TensorFlow (arrays.py).

Both engines share the plans (plans.py): whole global batches sliced per worker
for plain data, and "files" / "records" / "slices" plans for tfscale pipelines.
The names of plans.py, tf_distribute.py and position.py below are re-exported here on first use.
"""

from __future__ import annotations

import importlib
import sys

from tfscale import errors
from tfscale.data.batching import batch_sizes

_LAZY = {"AlreadySharded": "plans", "Shardable": "plans", "Plan": "plans", "deal_units": "plans", "plan_for": "plans",
         "per_replica_batches": "plans", "steps_per_epoch": "plans", "equal_steps": "plans",
         "without_auto_shard": "plans", "as_dataset": "tf_distribute", "_replicas_end_together": "tf_distribute",
         "skip_examples": "position"}

__all__ = ["batch_sizes", "is_tf_input", *sorted(_LAZY)]


def __getattr__(name: str):
    if name in _LAZY:
        try:  # TensorFlow missing (a JAX-only install) for tf.data input: a ConfigError naming the extra
            module = importlib.import_module(f"tfscale.data.sharding.{_LAZY[name]}")
        except ModuleNotFoundError as e:
            raise errors.missing_module(e, where=f"tfscale.data.sharding.{name}") from None
        return getattr(module, name)
    raise AttributeError(f"module 'tfscale.data.sharding' has no attribute {name!r}")


def is_tf_input(data) -> bool:
    """A tf.data.Dataset or a tfscale.data pipeline (what needs TensorFlow to be read)."""
    if hasattr(data, "batched_dataset_for") or hasattr(data, "dataset_for"):
        return True
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, getattr(getattr(tf, "data", None), "Dataset", ()))
