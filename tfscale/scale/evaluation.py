"""`Scale.evaluate`: a model's metrics over every example of the input, each counted once, on any engine.

The TensorFlow engine and one replica evaluate the input as it is (the last global batch incomplete). Where
every replica needs a batch of one shape (the JAX engine with several replicas), the whole global batches
are evaluated first, then the rest as one batch that every replica holds whole
(`tfscale.data.sharding.remainder`), and the metric states are merged: those of the whole batches plus
``1 / replicas`` of what the last batch added. The result equals one process's `evaluate` on all the
examples (to float rounding) for metrics whose state sums over examples, which every Keras metric's does.

Example:
    metrics = scale.evaluate(model, (x_test, y_test), global_batch_size=64)   # {"loss": ..., "accuracy": ...}
"""

from __future__ import annotations

import logging

import keras
import numpy as np

from tfscale.data.sharding import placement
from tfscale.data.sharding.remainder import one_pass, remainder, splittable

log = logging.getLogger("tfscale")


def evaluate(scale, model, data, *, global_batch_size: int, per_replica_batch_size: int, verbose="auto",
             where: str = "Scale.evaluate(data)") -> dict[str, float]:
    """`model`'s metrics on every example of `data` (unbatched examples) under `scale`, by name.

    Every process calls it together (it is a collective); every process gets the same figures.

    Raises:
        DataError: input of a kind the engine cannot read, or an infinite dataset.
    """
    engine = scale.engine
    verbose = verbose if scale.is_chief else 0
    data = one_pass(data)
    if engine.tf_strategy is not None or engine.num_replicas < 2 or not splittable(data):
        placed = placement.place_input(engine, data, global_batch_size=global_batch_size,
                                       per_replica_batch_size=per_replica_batch_size, drop_remainder=False,
                                       where=where)  # a tfscale pipeline on JAX: the warning says what is left out
        return _floats(model.evaluate(placed.dataset, verbose=verbose, return_dict=True))
    split = remainder(engine, data, global_batch_size=global_batch_size, where=where)
    whole = None
    if split.whole_steps:
        placed = placement.place_input(engine, data, global_batch_size=global_batch_size,
                                       per_replica_batch_size=per_replica_batch_size, drop_remainder=True,
                                       where=where)
        results = _floats(model.evaluate(placed.dataset, verbose=verbose, return_dict=True))
        if split.tail is None:
            return results
        whole = _states(model)
    model.evaluate(split.tail, verbose=0, return_dict=True)
    tail = _states(model)
    merged = [t / split.copies if whole is None else w + t / split.copies for w, t in zip(whole or tail, tail)]
    for variable, value in zip(model.metrics_variables, merged):
        variable.assign((np.rint(value) if "int" in str(variable.dtype) else value).astype(str(variable.dtype)))
    log.info("%s: %d examples, %d whole global batch(es) of %d and %d evaluated on all %d replicas",
             where, split.examples, split.whole_steps, global_batch_size,
             split.examples - split.whole_steps * global_batch_size, split.copies)
    return _floats(model.get_metrics_result())


def _states(model) -> list[np.ndarray]:
    """The model's metric variables as float64 arrays (replicated on every process: readable on each)."""
    return [np.asarray(keras.ops.convert_to_numpy(v.value), dtype=np.float64) for v in model.metrics_variables]


def _floats(results: dict) -> dict[str, float]:
    return {name: float(keras.ops.convert_to_numpy(value)) for name, value in results.items()}
