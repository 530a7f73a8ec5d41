"""Fault-tolerant checkpoints: the chief keeps them, every worker resumes from them, none is ever half-written.

Each epoch the training state (weights and optimizer, including its step count)
is written to a temporary file, flushed, and renamed to ``epoch-NNNNN.weights.h5``,
so a worker killed mid-write leaves the previous checkpoint intact. All workers
take part in saving (reading distributed variables may need them all), but only
the chief writes into `directory`; the others write into a private temporary
folder that is removed. On (re)start every worker loads the latest checkpoint of
the chief's folder, so a job restarted by `tfscale launch --max-restarts` resumes
at the epoch it reached (the folder must be shared between hosts, e.g. NFS or GCS
fuse, when workers are on several machines). Before restoring, every worker checks that it sees the
chief's folder: the chief writes a marker holding a fresh token there, the token reaches every worker
through the engine (`Engine.exchange`: TensorFlow's coordination service), and a worker that reads
another token or none makes every worker raise a ClusterError: hosts that share no disk would each
resume from checkpoints of their own and silently diverge.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import os
import re
import shutil
import tempfile
import time
import uuid
import warnings
import weakref

import keras

from tfscale.errors import ClusterError, ConfigError
from tfscale.scale.guards import TrainingError

log = logging.getLogger("tfscale")

_NAME = re.compile(r"^epoch-(\d+)\.weights\.h5$")
_TMP_PREFIX = ".tmp-"
SHARED_MARKER = ".tfscale-chief"  # the chief's token, read back by every worker (`Checkpoints.check_shared`)
MARKER_WAIT_S = 3.0  # how long a worker retries reading it (an NFS client may cache the folder's listing)
_checks = itertools.count()  # one key per check, the same sequence on every worker


def checkpoint_name(epoch: int) -> str:
    return f"epoch-{epoch:05d}.weights.h5"


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(epoch, path) of the complete checkpoints in `directory`, newest first."""
    if not os.path.isdir(directory):
        return []
    found = [(int(m.group(1)), os.path.join(directory, name)) for name in os.listdir(directory)
             if (m := _NAME.match(name))]
    return sorted(found, reverse=True)


def worker_dir(directory: str, kind: str, rank: int) -> str:
    """A non-chief worker's private folder for `directory`, the same across restarts (so a restart cleans it)."""
    user = str(os.getuid()) if hasattr(os, "getuid") else ""
    digest = hashlib.sha1(f"{user}:{os.path.abspath(directory)}".encode()).hexdigest()[:10]
    return os.path.join(tempfile.gettempdir(), f"tfscale-{kind}-{digest}-worker{rank}")


def ensure_writable(directory: str, what: str) -> str:
    """Creates `directory` and proves it can hold files; a ConfigError naming it otherwise."""
    directory = os.path.abspath(directory)
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=_TMP_PREFIX + "probe-"):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write {what} to {directory!r}: {e.strerror or e}", where=what.replace(" ", "_"),
                          fix="give a folder you can write to, or fix its permissions") from None
    return directory


class Checkpoints(keras.callbacks.Callback):
    """Saves the training state every epoch and restores the latest one when training starts.

    Args:
        directory: the chief's checkpoint folder, read by every worker on restore.
        is_chief: this process writes into `directory`.
        rank: this worker's rank (names a non-chief worker's temporary folder).
        keep: how many of the latest checkpoints to keep.
        resume: restore from the latest checkpoint found at the start of `fit`.
        scope: the context the optimizer is built in before a restore (`scale.scope`; default: the
            model's tf.distribute strategy, if it has one).
        host_weights: a context in which every weight can be read on this host (`scale.engine.host_weights`:
            on JAX it gathers weights sharded across processes; every worker saves, so every one enters it).
        exchange: every process's value of a key (`scale.engine.exchange`), for `check_shared` (several
            processes); None: no check.
    """

    def __init__(self, directory: str, *, is_chief: bool = True, rank: int = 0, keep: int = 2, resume: bool = True,
                 scope=None, host_weights=None, exchange=None):
        super().__init__()
        self.exchange = exchange
        self.scope = scope
        self.host_weights = host_weights or (lambda model: contextlib.nullcontext())
        self.directory = os.path.abspath(directory)
        self.is_chief = is_chief
        self.keep = max(1, keep)
        self.resume = resume
        self.write_dir = self.directory if is_chief else worker_dir(self.directory, "ckpt", rank)
        if not is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)  # left over by a killed run
            weakref.finalize(self, shutil.rmtree, self.write_dir, True)
        ensure_writable(self.write_dir, "checkpoint dir")
        self.restored_epoch = 0

    # ------------------------------------------------------------------ restore

    def on_train_begin(self, logs=None):
        self._remove_partial_files()
        if self.resume:
            self.check_shared()
        self.restored_epoch = self.restore() if self.resume else 0

    def check_shared(self) -> None:
        """Every worker sees the chief's folder, or every worker raises a ClusterError (before any step).

        All workers call it together. Without `exchange`, or where the engine has no way to exchange
        (None), nothing is checked.
        """
        if self.exchange is None:
            return
        key = f"checkpoint_dir/{next(_checks)}"
        token = uuid.uuid4().hex if self.is_chief else "-"
        if self.is_chief:
            _write_marker(self.directory, token)
        tokens = self.exchange(f"{key}/token", token)
        if tokens is None or len(tokens) < 2:  # nothing to check (one process), or no way to (the engine)
            if self.is_chief:
                _remove(os.path.join(self.directory, SHARED_MARKER))
            return
        chief_token = next((t for t in tokens if t != "-"), "")
        seen = "1" if self.is_chief or _sees_marker(self.directory, chief_token) else "0"
        blind = [rank for rank, s in enumerate(self.exchange(f"{key}/seen", seen) or []) if s != "1"]
        if blind:
            raise ClusterError(f"checkpoint_dir {self.directory!r} is not shared between the hosts: worker(s) "
                               f"{', '.join(map(str, blind))} do not see the marker the chief wrote there, so they "
                               "could not resume from the chief's checkpoints", where="checkpoint_dir",
                               fix="give a checkpoint_dir that every host sees at the same path (NFS, or a gs:// or "
                                   "s3:// bucket mounted on every host), or train with resume=False")

    def restore(self) -> int:
        """Loads the newest readable checkpoint of the chief's folder; returns its epoch (0: none)."""
        for epoch, path in list_checkpoints(self.directory):
            try:
                self._load(path)
            except OSError as e:  # unreadable (a disk error): fall back to the one before
                log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, e)
                continue
            self.model._initial_epoch = epoch
            log.info("resuming from %s: epoch %d done", path, epoch)
            return epoch
        return 0

    def _load(self, path: str) -> None:
        model = self.model
        strategy = getattr(model, "distribute_strategy", None)
        scope = self.scope or (strategy.scope if strategy is not None else contextlib.nullcontext)
        with scope():
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model.load_weights(path)
            except ValueError as e:
                raise _mismatch(path, str(e)) from None
        # Keras only warns when the optimizer differs (e.g. another precision): a silent half-restore.
        skipped = [str(w.message) for w in caught if "loading" in str(w.message) or "could not be" in str(w.message)]
        if skipped:
            raise _mismatch(path, skipped[0])

    # ------------------------------------------------------------------ save

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            log.warning("epoch %d ended with loss %s: not saving it over the last good checkpoint", epoch + 1, loss)
            return
        self.save(epoch + 1)

    def save(self, epoch: int) -> str:
        """Writes the state after `epoch` epochs: temporary file, flush, rename; then prunes old ones."""
        final = os.path.join(self.write_dir, checkpoint_name(epoch))
        partial = os.path.join(self.write_dir, f"{_TMP_PREFIX}{os.getpid()}-{checkpoint_name(epoch)}")
        try:
            os.makedirs(self.write_dir, exist_ok=True)  # a non-chief's folder goes at the end of each fit
            with self.host_weights(self.model):
                self.model.save_weights(partial, overwrite=True)
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(partial, final)
        except OSError as e:
            _remove(partial)
            raise TrainingError(f"could not write checkpoint {final!r}: {e.strerror or e}", where="checkpoint_dir",
                                fix="free disk space or fix the folder's permissions; earlier checkpoints "
                                    "are intact") from None
        for _, old in list_checkpoints(self.write_dir)[self.keep:]:
            _remove(old)
        return final

    def _remove_partial_files(self) -> None:
        for name in os.listdir(self.write_dir):
            if name.startswith(_TMP_PREFIX):
                _remove(os.path.join(self.write_dir, name))

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None  # a later fit() starts where it is told
        if not self.is_chief:
            shutil.rmtree(self.write_dir, ignore_errors=True)
        elif self.exchange is not None:
            _remove(os.path.join(self.directory, SHARED_MARKER))  # every worker read it long ago


def _mismatch(path: str, detail: str) -> ConfigError:
    return ConfigError(f"checkpoint {path!r} does not fit this model and optimizer: {detail.strip()}",
                       where="checkpoint_dir", fix="use a new checkpoint_dir for a different model, optimizer or "
                       "precision, or pass resume=False to start over")


def _write_marker(directory: str, token: str) -> None:
    partial = os.path.join(directory, f"{_TMP_PREFIX}{os.getpid()}-marker")
    with open(partial, "w") as f:
        f.write(token)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, os.path.join(directory, SHARED_MARKER))


def _sees_marker(directory: str, token: str) -> bool:
    """This worker reads `token` in `directory`'s marker (retried for `MARKER_WAIT_S`: NFS caches listings)."""
    deadline = time.monotonic() + MARKER_WAIT_S
    while True:
        try:
            os.listdir(directory)  # revalidates a cached listing (NFS)
            with open(os.path.join(directory, SHARED_MARKER)) as f:
                if f.read() == token:
                    return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
