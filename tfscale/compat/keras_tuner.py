"""keras-tuner's private APIs that tfscale uses (the keras-tuner quarantine; see `tfscale.compat`).

Checked on keras-tuner 1.4.8. tfscale's chief of a distributed search (tfscale/tuning/chief.py) serves
keras-tuner's own oracle service and outlives tuners that die, which keras-tuner's chief does not
(``oracle_chief.start_server`` waits forever for a dead tuner's trial); keras-tuner has no public API for it:

1. `retry_queue` (`Oracle._retry_queue`, the trial ids `Oracle.create_trial` hands out again before new ones,
   popping from the end; saved with the oracle's state): the chief queues the trial of a tuner that died, or
   that a killed run left RUNNING, to be run once more. Gone: `UpstreamError`.
2. `oracle_servicer_class` (`keras_tuner.src.distribute.oracle_chief.OracleServicer`) and `add_oracle_service`
   (`keras_tuner.src.protos.get_service_grpc().add_OracleServicer_to_server`): the gRPC service the tuners
   call, which the chief extends to note which tuner runs which trial. Gone: `UpstreamError`.
3. `WholeFilesOracle` (the hook `Oracle._save_trial`, and `Oracle._get_oracle_fname`, `Oracle._get_trial_dir`)
   and `tuner_file` (`Tuner._get_tuner_fname`): keras-tuner writes `oracle.json`, `trial_*/trial.json` and the
   tuner's file in place, so a search killed mid-write cannot be reloaded; tfscale writes them whole
   (tfscale/tuning/oracles.py). Gone: `UpstreamError`.
4. `is_worker` (`Tuner._is_worker`): a tuner of a distributed search, whose oracle is the chief's, over gRPC.
   Gone: `UpstreamError`.
"""

from __future__ import annotations

import os

from tfscale import compat

CHECKED_TEXT = "1.4.8"


def _changed(what: str, needed_for: str):
    return compat.changed("keras-tuner", compat.version_of("keras-tuner"), what, CHECKED_TEXT, needed_for=needed_for)


def retry_queue(oracle) -> list[str]:
    """The oracle's own list of trial ids to run again, which the caller may change in place (1.)."""
    queue = getattr(oracle, "_retry_queue", None)
    if not isinstance(queue, list):
        raise _changed("Oracle._retry_queue", "running again the trials of tuners that died (tfscale.tune)")
    return queue


def oracle_servicer_class() -> type:
    """keras-tuner's gRPC oracle service, to subclass (2.)."""
    try:
        from keras_tuner.src.distribute.oracle_chief import OracleServicer  # private: see 2. in the docstring
    except ImportError:
        raise _changed("keras_tuner.src.distribute.oracle_chief.OracleServicer",
                       "serving the oracle to the tuners of a distributed search (tfscale tune --workers)") from None
    return OracleServicer


def add_oracle_service(servicer, server) -> None:
    """Registers `servicer` (an `oracle_servicer_class()` instance) on the gRPC `server` (2.)."""
    try:
        from keras_tuner.src import protos  # private: see 2. in the module docstring

        add = protos.get_service_grpc().add_OracleServicer_to_server
    except (ImportError, AttributeError):
        raise _changed("keras_tuner.src.protos.get_service_grpc().add_OracleServicer_to_server",
                       "serving the oracle to the tuners of a distributed search (tfscale tune --workers)") from None
    add(servicer, server)


def _member(obj, name: str, needed_for: str):
    member = getattr(obj, name, None)
    if member is None:
        raise _changed(f"{type(obj).__name__}.{name}", needed_for)
    return member


class WholeFilesOracle:
    """Mixed in front of a keras-tuner oracle: its state file and each trial's file are written by the class's
    `write_state(path, state)` (a staticmethod the subclass gives) instead of in place (3.)."""

    write_state = None  # the subclass's writer: staticmethod(function(path, state))

    def save(self):
        if not any("_save_trial" in vars(c) for c in type(self).__mro__ if c.__module__.startswith("keras_tuner")):
            raise _changed("Oracle._save_trial", "writing the files of a search whole (tfscale.tune)")
        path = _member(self, "_get_oracle_fname", "writing the oracle's file whole (tfscale.tune)")()
        return self.write_state(path, self.get_state())

    def _save_trial(self, trial):  # overrides keras-tuner's (3.)
        folder = _member(self, "_get_trial_dir", "writing the trials' files whole (tfscale.tune)")(trial.trial_id)
        self.write_state(os.path.join(folder, "trial.json"), trial.get_state())


def tuner_file(tuner) -> str:
    """The path of the file a keras-tuner tuner saves its state to (3.)."""
    return _member(tuner, "_get_tuner_fname", "writing the tuner's file whole (tfscale.tune)")()


def is_worker(tuner) -> bool:
    """The tuner is a worker of a distributed search, its oracle the chief's (4.)."""
    return _member(tuner, "_is_worker", "telling the chief of a distributed search from its workers")()
