"""The chief of a distributed search: serves keras-tuner's oracle to the tuner workers and outlives dead ones.

keras-tuner's own chief (``oracle_chief.start_server``) waits forever for a
tuner that died holding a trial, and polls every 20 s. This one serves the
same gRPC service, hands a dead tuner's trial to the next tuner that asks
(the tuner's death is announced by its launcher as a file
``<control dir>/<tuner id>.dead``), and stops as soon as the oracle has
stopped and no tuner holds a trial.

It reaches into keras-tuner 1.4's oracle (its retry queue, its gRPC service), which has no
public API for either, through keras-tuner's quarantine, `tfscale.compat.keras_tuner`.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures

import grpc
from keras_tuner import synchronized

from tfscale.compat import keras_tuner as kt_compat
from tfscale.errors import ClusterError
from tfscale.tuning.control import announced_dead
from tfscale.tuning.results import record_tuner

log = logging.getLogger("tfscale")

POLL_SECONDS = 0.25


@synchronized
def release(oracle, tuner_id: str):
    """Forgets `tuner_id` and queues the trial it held to be run again; returns that trial or None."""
    trial = oracle.ongoing_trials.pop(tuner_id, None)
    oracle.tuner_ids.discard(tuner_id)
    queue = kt_compat.retry_queue(oracle)
    if trial is not None and trial.trial_id not in queue:
        queue.append(trial.trial_id)
        oracle.save()
    return trial


@synchronized
def requeue_stale(oracle) -> list[str]:
    """Queues again every trial a previous run left running (its process was killed); returns their ids.

    keras-tuner's reload queues the trials its saved state lists as held by a
    tuner; this also queues those whose ``trial.json`` says RUNNING but which the
    state, saved a moment earlier, does not list. A resumed search runs each of
    them once more, whichever tuner asks first, and never repeats a finished one.
    """
    queue = kt_compat.retry_queue(oracle)
    for trial in oracle.ongoing_trials.values():  # empty after a reload; kept for a live oracle
        if trial.trial_id not in queue:
            queue.append(trial.trial_id)
    oracle.ongoing_trials.clear()
    missing = sorted((t.trial_id for t in oracle.trials.values()
                      if t.status == "RUNNING" and t.trial_id not in queue), key=lambda t: (len(t), t))
    if missing:
        queue[:0] = reversed(missing)  # create_trial pops from the end
        oracle.save()
    return sorted(queue, key=lambda t: (len(t), t))


@synchronized
def _finished(oracle) -> bool:
    return not oracle.ongoing_trials and not oracle.tuner_ids


class _Servicer(kt_compat.oracle_servicer_class()):
    """keras-tuner's oracle service, noting which tuner runs which trial."""

    def __init__(self, oracle, project_dir: str):
        super().__init__(oracle)
        self.project_dir = project_dir

    def CreateTrial(self, request, context):  # noqa: N802 (gRPC method name)
        response = super().CreateTrial(request, context)
        trial = self.oracle.ongoing_trials.get(request.tuner_id)
        if trial is not None:
            record_tuner(self.project_dir, trial.trial_id, request.tuner_id)
            log.info("chief: trial %s goes to %s", trial.trial_id, request.tuner_id)
        return response


def serve(oracle, project_dir: str, *, address: str, control_dir: str | None = None) -> list[str]:
    """Serves `oracle` at `address` until the search is over; returns the tuners announced dead.

    Raises:
        ClusterError: the address cannot be listened on.
    """
    servicer = _Servicer(oracle, project_dir)
    # One thread, as keras-tuner's chief: the oracle's methods are not re-entrant.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=[("grpc.so_reuseport", 1)])
    kt_compat.add_oracle_service(servicer, server)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # grpc >= 1.55 raises instead of returning 0
        bound = 0
    if bound == 0:
        raise ClusterError(f"the chief oracle cannot listen on {address}", where="KERASTUNER_ORACLE_PORT",
                           fix="choose a free port (`tfscale tune --workers N` picks one itself)")
    server.start()
    log.info("chief: oracle serving on %s", address)
    dead: list[str] = []
    try:
        while not (servicer.stop_triggered and _finished(oracle)):
            time.sleep(POLL_SECONDS)
            for tuner_id in announced_dead(control_dir, dead):
                dead.append(tuner_id)
                trial = release(oracle, tuner_id)
                held = f"; its trial {trial.trial_id} goes to the next tuner that asks" if trial else ""
                log.warning("chief: %s died%s", tuner_id, held)
    finally:
        server.stop(grace=1.0)
    return dead
