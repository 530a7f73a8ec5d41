"""The TensorFlow engine: a `tf.distribute.Strategy` behind the `Engine` interface."""

from __future__ import annotations

import logging
import os
from typing import Any

from tfscale.cluster import detect
from tfscale.cluster.detection.devices import configure_threads, local_gpus
from tfscale.compat import tensorflow as tf_compat
from tfscale.errors import ClusterError
from tfscale.strategy.backend import TENSORFLOW
from tfscale.strategy.engine import Engine
from tfscale.strategy.registry import Capability
from tfscale.worker_env import PEER_LOST_EXIT

MIN_FLOAT16_CAPABILITY = (7, 0)
EXIT_BARRIER_S = 600.0  # how long a worker that ends well waits at exit for the others (e.g. the chief exporting)

log = logging.getLogger("tfscale")


class TensorFlowEngine(Engine):
    """A tf.distribute strategy (None on the worker and ps tasks of a parameter-server cluster, which serve).

    Attributes:
        strategy: the `tf.distribute.Strategy` that `scope()` enters and `fit` runs under.
    """

    backend = TENSORFLOW

    def __init__(self, name: str, strategy, topology):
        super().__init__(name, topology)
        self._strategy = strategy

    @classmethod
    def start(cls, config, topology=None):
        """Thread pools (before TensorFlow starts them), then the cluster and the GPUs TensorFlow sees."""
        configure_threads(config.intra_op_threads, config.inter_op_threads)
        return topology or detect(config.cluster, tpu=config.tpu, gpus=local_gpus())

    @classmethod
    def build(cls, name: str, spec, topology, config) -> "TensorFlowEngine":
        serving = spec.has(Capability.SERVERS) and topology.task_type in ("worker", "ps")
        engine = cls(name, None if serving else spec.build(topology, config), topology)
        if spec.has(Capability.LOCKSTEP) and engine.num_processes > 1:
            _leave_together(engine, EXIT_BARRIER_S)
        return engine

    @property
    def is_server(self) -> bool:
        """A worker or ps task of a parameter-server cluster: it serves (`serve()`) and holds no strategy."""
        return self._strategy is None

    @property
    def strategy(self):
        if self._strategy is None:
            raise ClusterError(f"this process is a {self.topology.task_type} task of a parameter-server cluster "
                               "and holds no strategy", where="Scale.strategy",
                               fix="call scale.serve() when scale.is_server, and train on the chief")
        return self._strategy

    @property
    def summary(self) -> str:
        if self.has(Capability.SERVERS):  # replicas are the cluster's workers, not this process's
            return f"{self.num_replicas} replica(s) = {self.num_processes} worker(s) x ? {self.accelerator}"
        return super().summary

    @property
    def tf_strategy(self):
        return self.strategy

    @property
    def input_shards(self) -> tuple[int, int]:
        """(the input pipelines of the strategy's cluster: its chief and workers, or 1; this worker's rank)."""
        resolver = self.strategy.cluster_resolver
        spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
        return max(1, len(spec.get("worker", ())) + len(spec.get("chief", ()))), self.rank

    def scope(self):
        return self.strategy.scope()

    @property
    def num_replicas(self) -> int:
        return 0 if self.is_server else self._strategy.num_replicas_in_sync

    @property
    def devices(self) -> list[str]:
        """This worker's devices (TensorFlow's default strategy: the default device)."""
        if self.is_server:
            return []
        try:
            return list(self._strategy.extended.worker_devices)
        except RuntimeError:  # the default strategy has no device list: one default device
            return ["(default device)"]

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def barrier(self, name: str, timeout: float = 3600.0) -> None:
        """A barrier of TensorFlow's coordination service, where the cluster has one (several workers).

        A worker that leaves while another still works (the chief exporting) stops its heartbeats,
        and the coordination service then logs an ERROR ("StartAbort UNAVAILABLE") on a healthy run:
        workers meet here before they exit. TensorFlow 2.21 has no public API for it.
        """
        if self.num_processes < 2 or self.is_server:
            return
        try:
            tf_compat.wait_at_barrier(name, timeout)
        except Exception as e:  # noqa: BLE001 - a worker failed meanwhile: the launcher names it
            log.warning("the workers did not all reach %r: %s", name, str(e).splitlines()[0] if str(e) else e)

    def exchange(self, key: str, value: str, timeout: float = 600.0) -> list[str] | None:
        """Through the key-value store of TensorFlow's coordination service (lockstep strategies only: the
        tasks of a parameter-server cluster do not all run the same code)."""
        if self.num_processes < 2:
            return [value]
        if not self.has(Capability.LOCKSTEP):
            return None
        tf_compat.set_key_value(f"tfscale/{key}/{self.rank}", value)
        return [tf_compat.get_key_value(f"tfscale/{key}/{rank}", timeout)
                for rank in range(self.num_processes)]

    def forget(self, key: str) -> None:
        if self.num_processes < 2 or not self.has(Capability.LOCKSTEP):
            return
        tf_compat.delete_key_value(f"tfscale/{key}/{self.rank}")

    def float16_capable(self) -> bool:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return False
        for gpu in gpus:
            capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
            if capability is None or tuple(capability) < MIN_FLOAT16_CAPABILITY:
                return False
        return True

    def jit_compile(self, wanted):
        """`wanted`, except "auto" outside TPUStrategy on TensorFlow's TPU build (tensorflow-tpu 2.20 with libtpu):
        it shows a TPU_SYSTEM device, so Keras turns XLA on, and that build has no XLA for the CPU ("could not
        find registered transfer manager for platform Host")."""
        if wanted != "auto" or self.has(Capability.COMPILES_ITSELF):
            return wanted
        import tensorflow as tf

        if tf.config.list_logical_devices("TPU_SYSTEM"):
            log.info("jit_compile off: TensorFlow's TPU build has no XLA for the CPU (strategy %s)", self.name)
            return False
        return wanted

    def prepare_optimizer(self, optimizer):
        from tfscale.compat.keras.accumulation import fix_accumulation

        return fix_accumulation(optimizer)  # keras-team/keras#20582

    def describe(self, model=None) -> dict[str, Any]:
        described: dict[str, Any] = {"engine": TENSORFLOW, "devices": self.devices,
                                     "strategy": None if self.is_server else type(self._strategy).__name__}
        if model is not None:
            rows = []
            for v in model.weights:
                size = int(v.numpy().nbytes) if hasattr(v, "numpy") else 0
                rows.append({"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype), "sharding": "replicated",
                             "bytes": size, "bytes_per_device": size})
            described["variables"] = rows
            described["bytes_per_device"] = sum(r["bytes_per_device"] for r in rows)
        return described


_exit = {"registered": False, "failed": False}


def _broken_cluster(error: BaseException) -> bool:
    """The error a collective raises when a peer is gone or silent."""
    import tensorflow as tf

    return isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
                              tf.errors.CancelledError))


def _leave_together(engine, timeout: float) -> None:
    """The workers of a run that ends well leave together: each waits at exit for the others.

    The chief holds TensorFlow's coordination service; a worker that leaves while another still
    runs (or a chief that leaves first) makes the others log ERRORs ("StartAbort UNAVAILABLE ...
    coordination service") on a healthy run. A process that ends with an uncaught exception (seen by
    `sys.excepthook`, Python's documented hook, chained to the one before) or that `leave_at_once()` marks
    (`tfscale` commands that fail) leaves at once, so the launcher sees the failure without delay; one that ends with
    the error of a broken cluster (a peer gone or silent: Unavailable, DeadlineExceeded, Aborted, Cancelled)
    skips TensorFlow's teardown too, as that waits seconds, up to a minute here, for the peers that are gone:
    it exits with `worker_env.PEER_LOST_EXIT` (75) once the traceback is printed, and its launcher then
    names the peers that no longer answer.

    Python tells an exit handler nothing of the exit status, and tfscale patches no process-wide function
    (`sys.exit` included: docs/DESIGN.md, "The upstream quarantine"), so a script of the user that ends with
    a non-zero `sys.exit` or `raise SystemExit` still waits here: until its peers arrive, or fail (a peer
    that waits on it in a collective does within the collective timeout), or `timeout` at most; a script
    that wants to leave at once after a failure it caught calls `leave_at_once()` (or raises).
    """
    import atexit
    import sys

    if _exit["registered"]:
        return
    _exit["registered"] = True
    previous_hook = sys.excepthook

    def excepthook(kind, value, tb):
        _exit["failed"] = True
        previous_hook(kind, value, tb)
        if _broken_cluster(value):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(PEER_LOST_EXIT)

    def at_exit():
        if not _exit["failed"]:
            engine.barrier("tfscale_exit", timeout)

    sys.excepthook = excepthook
    atexit.register(at_exit)


def leave_at_once() -> None:
    """This process ends failing: it skips the exit barrier of `_leave_together` (where one is set up)."""
    _exit["failed"] = True
