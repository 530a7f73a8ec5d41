"""What runs on each Ray worker of `tfscale.ray.fit`: `WorkerLoop` calls `train_fn` and reports what it returns.

A TensorFlow, Keras or JAX exception raised by `train_fn` leaves the worker as a `WorkerFailure` (its type, message
and traceback as text): Ray unpickles a worker's exception in its train controller and in the driver, and
unpickling TensorFlow's own would load TensorFlow there (a peer lost mid-step raises TensorFlow's
UnavailableError on the workers left). Imports Ray only inside the functions that run on a worker.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Mapping

from tfscale.errors import ConfigError
from tfscale.ray import notice

log = logging.getLogger("tfscale")

# Packages whose exception classes must not travel to Ray's controller and driver: unpickling one imports its
# package there (TensorFlow: hundreds of megabytes and seconds of CPU, in processes that never train).
FRAMEWORKS = ("tensorflow", "keras", "tf_keras", "jax", "jaxlib")


class WorkerLoop:
    """What each Ray worker runs: `train_fn`, then a dict it returns reported to Ray (rank 0's with a checkpoint).

    TF_CONFIG and the options' variables (KERAS_BACKEND, ...) are already set (`backend.TfscaleBackend`).
    """

    def __init__(self, train_fn: Callable, takes_config: bool):
        self.train_fn, self.takes_config = train_fn, takes_config

    def __call__(self, config):
        keras = sys.modules.get("keras")
        wanted = os.environ.get("KERAS_BACKEND", "tensorflow")
        if keras is not None and hasattr(keras, "backend") and keras.backend.backend() != wanted:
            raise ConfigError(f"Keras was imported on this Ray worker with the {keras.backend.backend()} backend "
                              f"before train_fn ran, and backend={wanted!r} was asked for",
                              where="tfscale.ray.fit(backend=...)",
                              fix="import keras inside train_fn, not at the top of the module that defines it")
        notice.install()  # a node drained for preemption: tfscale saves at an agreed step (tfscale.ray.notice)
        try:
            result = self.train_fn(config) if self.takes_config else self.train_fn()
        except BaseException as error:
            if not _from_framework(error):
                raise
            raise WorkerFailure.of(error) from None
        if isinstance(result, Mapping):
            _report(dict(result))
        elif result is not None:
            log.warning("train_fn returned a %s: only a dict of metrics is reported to Ray", type(result).__name__)


class WorkerFailure(RuntimeError):
    """A TensorFlow, Keras or JAX exception raised by `train_fn`, as Ray carries it to its controller and driver:
    the exception's type name, message and traceback as text (no framework needed to read it back).

    Attributes:
        kind: the original exception's type, e.g. "tensorflow.python.framework.errors_impl.UnavailableError".
        message: its message.
        trace: its traceback, as the worker printed it.
    """

    def __init__(self, kind: str, message: str, trace: str = ""):
        super().__init__(kind, message, trace)
        self.kind, self.message, self.trace = kind, message, trace

    @classmethod
    def of(cls, error: BaseException) -> "WorkerFailure":
        kind = f"{type(error).__module__}.{type(error).__qualname__}"
        return cls(kind, str(error), "".join(traceback.format_exception(error)))

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}\n\nThe worker's traceback:\n{self.trace}"


def _from_framework(error: BaseException) -> bool:
    return type(error).__module__.partition(".")[0] in FRAMEWORKS


def _report(metrics: dict) -> None:
    """Every worker reports (Ray's report is a barrier); rank 0 attaches a checkpoint, so `Result.metrics` holds
    its metrics (Ray Train keeps the metrics of reports with a checkpoint)."""
    from ray import train

    if train.get_context().get_world_rank() != 0:
        train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="tfscale-ray-") as folder:
        with open(os.path.join(folder, "metrics.json"), "w") as f:
            json.dump(metrics, f, default=str)
        train.report(metrics, checkpoint=train.Checkpoint.from_directory(folder))

