"""Ray Train's preemption notice, as a source for tfscale's checkpoints.

When a node of the worker group is drained for preemption (a spot node reclaimed by Ray's autoscaler,
`ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION`), Ray Train's `PreemptionWatcher` (Ray >= 2.60,
Train v2) tells every worker: `RayTrainWorker.mark_preempt` stores a `PreemptionInfo` in the worker's
train context. The public `ray.train.get_preemption_info()` reads it through a broadcast that every
worker must call the same number of times, a barrier too costly at every step; tfscale instead reads
the stored value every `INTERVAL_S` in a thread of its own and marks its preemption flag. The flag then
takes the way of a signal: every worker saves at one agreed step, training ends with `Preempted` (143),
and Ray's `FailureConfig` starts the group again, which resumes at the exact next batch. (A SIGTERM
cannot take that way under Ray: `train_fn` runs in a thread of Ray's worker, where tfscale cannot take
signals.)

The stored value is private to Ray Train: it is read through Ray's quarantine (`tfscale.compat.ray.preemption_info`,
checked on Ray 2.60). Where it is missing the watcher stays off (a debug line).
"""

from __future__ import annotations

import logging
import threading

from tfscale.compat import ray as ray_compat
from tfscale.scale import preemption

log = logging.getLogger("tfscale")

INTERVAL_S = 0.5
RAY_NOTICE = "Ray preemption notice"  # what `SignalFlag.received` holds when Ray announced it


def _stored_notice():
    """The PreemptionInfo Ray Train stored for this worker, or None (raises where Ray has no such context)."""
    return ray_compat.preemption_info()


class RayNoticeWatcher:
    """Marks `flag` once Ray Train announces a preemption of the worker group (see the module docstring)."""

    def __init__(self, flag: preemption.SignalFlag, interval: float = INTERVAL_S):
        self.flag, self.interval = flag, interval
        self._stop = threading.Event()

    def start(self) -> bool:
        try:
            _stored_notice()
        except Exception as e:  # noqa: BLE001 - not in a Ray Train worker, or a Ray without the context
            log.debug("no Ray Train preemption notice to watch: %s", e)
            return False
        self._stop = threading.Event()
        threading.Thread(target=self._watch, args=(self._stop,), name="tfscale-ray-notice", daemon=True).start()
        return True

    def stop(self) -> None:
        self._stop.set()

    def _watch(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                info = _stored_notice()
            except Exception:  # noqa: BLE001 - the worker's context is gone (the group ends)
                return
            if info is not None:
                self.flag.mark(f"{RAY_NOTICE} (ranks {list(info.preempted_ranks)} preempted)")
                return


def install() -> None:
    """Makes every `Checkpoints` of this process watch Ray Train's preemption notice (called in Ray workers)."""
    preemption.add_notice_source(RayNoticeWatcher)
