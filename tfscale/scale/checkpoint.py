"""Fault-tolerant checkpoints: saved every N steps, every T seconds, at epoch ends and on preemption; restored
at the exact step; never half-written; in a folder or behind an object-store URL.

What a checkpoint is, and how it is committed, listed and verified: `checkpoint_store.py`. This module is
the Keras callback that decides when to save and restores when training starts:

- **When.** At each epoch's end; every `every_steps` steps; every `every_seconds` seconds (the chief's
  clock); and on a preemption signal (`preemption.py`), after which every worker stops at the same step and
  `fit` raises `Preempted` (exit code 143, "restart me"). On several processes the last two are agreed
  through the flags the workers exchange every 2 steps (`preemption.FlagExchange`), so every worker saves at
  the end of the same step, at most one step after the flag was seen.
- **Who.** Every worker takes part in a save (reading weights sharded across processes needs them all);
  only the chief writes, except for a model sharded across processes in a folder: there each process writes
  its own shards (`sharded.py`, orbax) and none gathers the whole model. The chief copies the values at the
  step (`keras_saving.capture`: ~1 ms for 8 MB here, into reused arrays) and writes the `.weights.h5` from
  the copies, hashing it as it writes (the file is not read back), syncs it, uploads and commits it. With `async_save`, for
  step and time checkpoints, that runs in a background thread, so the next steps do not wait for the disk or
  the store; one save is in flight at a time, and `fit` ends only once the last is committed. An epoch's
  checkpoint is committed before the next epoch starts (the soak caught a restart resuming from the epoch
  before, its newest save killed in flight), a preemption's before the process exits.
- **Where resumed.** On (re)start every worker restores the newest intact checkpoint of the chief's folder
  (the previous one when the newest does not match its hash). A checkpoint names its position (epochs
  done, steps into the next); `tfscale.fit` resumes at that exact step, the input skipping the batches
  already trained (`tfscale.data.sharding.skip_examples`). Plain `model.fit` with `scale.callbacks()`
  restarts the interrupted epoch at its first batch (a warning says how many steps run again).
- **Shared.** Before restoring, every worker checks that it sees the chief's folder: the chief writes a
  marker holding a fresh token there, the token reaches every worker through the engine
  (`Engine.exchange`), and a worker that reads another token or none makes every worker raise a
  ClusterError: hosts that share no disk would each resume from checkpoints of their own. An object-store
  URL is seen by every host that can reach it.
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
import threading
import time
import uuid
import warnings
import weakref

import keras

from tfscale.compat import keras as keras_compat
from tfscale.errors import ClusterError, ConfigError, TfscaleError
from tfscale.scale import keras_saving, sharded
from tfscale.scale.checkpoint_store import (SHARDED, WEIGHTS, CheckpointInfo, CheckpointStore, CorruptCheckpoint,
                                            check_resumable, checkpoint_name)
from tfscale.scale.guards import TrainingError
from tfscale.scale.preemption import DEFAULT_SIGNALS, FlagExchange, Preempted, SignalFlag, notice_watchers
from tfscale.storage import Store

log = logging.getLogger("tfscale")

SHARED_MARKER = ".tfscale-chief"  # the chief's token, read back by every worker (`Checkpoints.check_shared`)
MARKER_WAIT_S = 3.0  # how long a worker retries reading it (an NFS client may cache the folder's listing)
_checks = itertools.count()  # one key per check, the same sequence on every worker
_TMP_PREFIX = ".tmp-"
BACKGROUND_NICE = 10  # the background save's nice value (0: the training thread's)


def list_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(epoch, path of the weights) of the committed epoch-end checkpoints in `directory`, newest first."""
    if not os.path.isdir(directory):
        return []
    store = CheckpointStore(directory)
    return [(i.epoch, store.store.join(i.name + WEIGHTS)) for i in store.list() if i.step == 0]


def worker_dir(directory: str, kind: str, rank: int) -> str:
    """A non-chief worker's private folder for `directory`, the same across restarts (so a restart cleans it)."""
    user = str(os.getuid()) if hasattr(os, "getuid") else ""
    digest = hashlib.sha1(f"{user}:{directory if '://' in directory else os.path.abspath(directory)}".encode())
    return os.path.join(tempfile.gettempdir(), f"tfscale-{kind}-{digest.hexdigest()[:10]}-worker{rank}")


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
    """Saves the training state and restores the newest one when training starts (see the module docstring).

    Args:
        directory: the checkpoint folder or object-store URL (s3://bucket/run, gs://bucket/run).
        is_chief: this process writes into `directory`.
        rank: this worker's rank (names a non-chief worker's temporary folder).
        keep: how many of the newest checkpoints to keep.
        resume: restore from the newest checkpoint at the start of `fit`.
        every_steps: also save every this many training steps (None: not by steps).
        every_seconds: also save when this many seconds passed since the last save (None: not by time).
        preemption: on one of `signals`, save at the end of the step and stop (`Preempted`).
        signals: the signals that mean preemption (default SIGTERM and SIGUSR1).
        preemption_notice: with `preemption`, also watch GCE's metadata server for a preemption notice, on GCE
            only (`preemption.MetadataWatcher`).
        async_save: commit step and time checkpoints in a background thread while training goes on (an
            epoch's is committed before the next epoch starts).
        run: what the checkpoint is made under, recorded in its manifest and checked on resume:
            {"global_batch_size", "steps_per_epoch", "num_workers", "num_replicas", "backend", "strategy", "mesh"}.
        scope: the context the optimizer is built in before a restore (`scale.scope`).
        host_weights: a context in which every weight can be read on this host (`scale.engine.host_weights`).
        exchange: every process's value of a key (`scale.engine.exchange`), on several processes; None: one.
            The preemption flags and the chief's timer go through it (`preemption.FlagExchange`).
        forget: drops this process's value of an exchanged key (`scale.engine.forget`).
        storage_options: for an object-store URL, passed to its file system (fsspec).
    """

    def __init__(self, directory: str, *, is_chief: bool = True, rank: int = 0, keep: int = 2, resume: bool = True,
                 every_steps: int | None = None, every_seconds: float | None = None, preemption: bool = True,
                 signals=DEFAULT_SIGNALS, preemption_notice: bool = True, async_save: bool = True,
                 run: dict | None = None, scope=None, host_weights=None, exchange=None, forget=None,
                 storage_options: dict | None = None):
        super().__init__()
        for key, value in (("checkpoint_every_steps", every_steps), ("checkpoint_every_seconds", every_seconds)):
            if value is not None and not value > 0:
                raise ConfigError(f"{key} is {value!r}", where=key, fix="give a positive number, or leave it unset")
        self.exchange, self.scope = exchange, scope
        self.host_weights = host_weights or (lambda model: contextlib.nullcontext())
        self.checkpoints = CheckpointStore(directory, storage_options=storage_options)
        self.directory = self.checkpoints.url
        self.is_chief, self.rank = is_chief, rank
        self.keep, self.resume = max(1, keep), resume
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.async_save = async_save
        self.run = dict(run or {})
        self.flag = SignalFlag(signals, active=self._training) if preemption else None
        self.notices = notice_watchers(self.flag) if preemption and preemption_notice else []
        # on several processes, the preemption flags and the chief's timer are agreed through the engine
        needs_flags = exchange is not None and (preemption or every_seconds is not None)
        self.flags = FlagExchange(exchange, forget) if needs_flags else None
        self.stale_after = 600.0  # seconds without a step after which a signal is not taken for a running fit
        self.scratch = worker_dir(self.directory, "ckpt", rank)
        shutil.rmtree(self.scratch, ignore_errors=True)  # left over by a killed run
        os.makedirs(self.scratch, exist_ok=True)
        weakref.finalize(self, shutil.rmtree, self.scratch, True)
        if is_chief:
            self.checkpoints.check()  # before training: unreachable store, missing credentials, no such bucket
        self.restored: CheckpointInfo | None = None
        self.restored_epoch = 0
        self.start_offset = 0  # steps of the first epoch of this fit that its input skips (tfscale.fit)
        self.preempted: Preempted | None = None
        self._restored_here = False
        self._epoch = self._step = self._global_step = 0
        self._last_save = time.monotonic()
        self._last_saved: tuple[int, int] | None = None
        self._pending: _Background | None = None
        self._pending_error: BaseException | None = None
        self._progress: float | None = None

    # ------------------------------------------------------------------ restore

    def on_train_begin(self, logs=None):
        if self.resume and not self._restored_here:
            self.restore_now()
            if self.restored is not None and self.restored.step:
                log.warning("resuming %s with plain model.fit: the interrupted epoch %d starts again at its first "
                            "batch, so %d step(s) run twice (tfscale.fit resumes at the exact step)",
                            self.restored.name, self.restored.epoch + 1, self.restored.step)
        if self._restored_here and self.restored is not None and self.restored.step and self.start_offset == 0:
            self._global_step -= self.restored.step  # the interrupted epoch starts again at its first batch
        self._restored_here = False  # a later fit() restores again, as a new run would
        self._last_save = time.monotonic()
        if self.flags is not None:
            self.flags.restart()
        if self.flag is not None:
            self.flag.received = None
            self.flag.install()
        self._progress = time.monotonic()
        for notice in self.notices:  # once training counts as running: a notice already out is taken
            notice.start()

    def _training(self) -> bool:
        """A fit is running with this callback: begun, not ended, and a step ended in the last `stale_after` s."""
        return self._progress is not None and time.monotonic() - self._progress < self.stale_after

    def release(self) -> None:
        """Gives the preemption signals back and lets the save in flight finish (on_train_end does both; call it
        when `fit` raised, so the last checkpoint started is committed, not lost with the process)."""
        if self._pending is not None:
            self._pending.join()
            self._pending = None
            if self._pending_error is not None:
                log.warning("the last checkpoint could not be committed: %s", self._pending_error)
                self._pending_error = None
        if self.is_chief and self.checkpoints.store.is_local:
            _remove(_spare_path(self.directory))
        self._progress = None
        if self.flag is not None:
            self.flag.uninstall()
        for notice in self.notices:
            notice.stop()

    def restore_now(self) -> CheckpointInfo | None:
        """Checks the folder is shared, then loads the newest intact checkpoint; returns it (None: none).

        Call it once the model is compiled (its optimizer is built here); `fit` then does not restore again.

        Raises:
            ConfigError: the checkpoint does not fit this model or optimizer (naming the variable and both
                shapes), or was trained with another global batch.
            ClusterError: the workers do not all see the chief's folder.
        """
        self.check_shared()
        self.restored = self._restore()
        self.restored_epoch = self.restored.epoch if self.restored else 0
        self._global_step = self.restored.global_step if self.restored else 0
        self._restored_here = True
        return self.restored

    def check_shared(self) -> None:
        """Every worker sees the chief's folder, or every worker raises a ClusterError (before any step).

        All workers call it together. Without `exchange`, or where the engine has no way to exchange
        (None), nothing is checked.
        """
        if self.exchange is None:
            return
        key = f"checkpoint_dir/{next(_checks)}"
        token = uuid.uuid4().hex if self.is_chief else "-"
        store = self.checkpoints.store
        if self.is_chief:
            store.write_bytes(store.join(SHARED_MARKER), token.encode())
        tokens = self.exchange(f"{key}/token", token)
        if tokens is None or len(tokens) < 2:  # nothing to check (one process), or no way to (the engine)
            if self.is_chief:
                store.remove(store.join(SHARED_MARKER))
            return
        chief_token = next((t for t in tokens if t != "-"), "")
        seen = "1" if self.is_chief or _sees_marker(store, chief_token) else "0"
        blind = [rank for rank, s in enumerate(self.exchange(f"{key}/seen", seen) or []) if s != "1"]
        if blind:
            raise ClusterError(f"checkpoint_dir {self.directory!r} is not shared between the hosts: worker(s) "
                               f"{', '.join(map(str, blind))} do not see the marker the chief wrote there, so they "
                               "could not resume from the chief's checkpoints", where="checkpoint_dir",
                               fix="give a checkpoint_dir that every host sees at the same path (NFS), or an "
                                   "object-store URL (s3://bucket/run, gs://bucket/run), or train with resume=False")

    def _restore(self) -> CheckpointInfo | None:
        if self.is_chief:
            removed = self.checkpoints.remove_uncommitted()
            if removed:
                log.info("removed %d uncommitted checkpoint file(s) of an interrupted save: %s", len(removed),
                         ", ".join(sorted(removed)))
        for info in self.checkpoints.list():
            try:
                path = self.checkpoints.fetch(info, self.scratch)
            except CorruptCheckpoint as e:
                log.warning("checkpoint %s is corrupted (%s): skipped, trying the one before", info.name, e)
                continue
            except (OSError, TfscaleError) as e:
                log.warning("checkpoint %s cannot be read (%s): skipped, trying the one before", info.name, e)
                continue
            check_resumable(info, global_batch_size=self.run.get("global_batch_size"), where="checkpoint_dir")
            try:
                if path.endswith(SHARDED):  # every process reads the parts its devices hold, onto any layout
                    sharded.restore_sharded(self.model, path)
                else:
                    self._load(path, info)
            except OSError as e:  # unreadable (a disk error): fall back to the one before
                log.warning("checkpoint %s is unreadable (%s); trying the one before", info.name, e)
                continue
            finally:
                if not self.checkpoints.store.is_local:
                    _remove(path)
            keras_compat.resume_at_epoch(self.model, info.epoch)
            was = (f" (it was written on {info.num_replicas} replica(s), {info.num_workers} worker(s))"
                   if (info.num_replicas, info.num_workers) != (self.run.get("num_replicas", info.num_replicas),
                                                                self.run.get("num_workers", info.num_workers))
                   else "")
            log.info("resuming from %s: epoch %d done, %d step(s) into the next%s", info.name, info.epoch,
                     info.step, was)
            return info
        return None

    def _load(self, path: str, info: CheckpointInfo) -> None:
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
                raise _mismatch(info.name, str(e)) from None
        # Keras only warns when the optimizer differs (e.g. another precision): a silent half-restore.
        skipped = [str(w.message) for w in caught if "loading" in str(w.message) or "could not be" in str(w.message)]
        if skipped:
            raise _mismatch(info.name, skipped[0])

    # ------------------------------------------------------------------ when to save

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._step = epoch, self.start_offset

    def on_train_batch_end(self, batch, logs=None):
        self._progress = time.monotonic()
        done = self.start_offset + batch + 1
        self._global_step += done - self._step
        self._step = done
        reason = self._reason_now()
        if reason is None:
            return
        last_of_epoch = self.params.get("steps") is not None and batch + 1 >= self.params["steps"]
        if reason == "preemption":
            self.save(self._epoch, self._step, reason)
            self.wait()
            self.preempted = Preempted(self._last_name, self.flag.received or "a peer's signal")
            self.model.stop_training = True
        elif not last_of_epoch:  # the epoch's end saves it
            self.save(self._epoch, self._step, reason)

    def _reason_now(self) -> str | None:
        preempt = self.flag is not None and self.flag.received is not None
        timed = (self.every_seconds is not None and self.is_chief
                 and time.monotonic() - self._last_save >= self.every_seconds)
        if self.flags is not None:  # several processes: decided together, at the steps where flags are exchanged
            everyone = self.flags.step_end("p" if preempt else "s" if timed else "-")
            preempt, timed = everyone is not None and "p" in everyone, everyone is not None and "s" in everyone
        if preempt:
            return "preemption"
        if self.every_steps is not None and self._global_step % self.every_steps == 0:
            return "steps"
        return "seconds" if timed else None

    def on_epoch_end(self, epoch, logs=None):
        if self.preempted is not None:  # Keras ends the epoch early once stop_training is set
            return
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            log.warning("epoch %d ended with loss %s: not saving it over the last good checkpoint", epoch + 1, loss)
            return
        self.save(epoch + 1, 0, "epoch")

    def on_train_end(self, logs=None):
        keras_compat.resume_at_epoch(self.model, None)  # a later fit() starts where it is told
        self.start_offset = 0
        try:
            self.wait()  # the save in flight is committed (its error raised here)
        finally:
            self.release()
        if self.is_chief and self.exchange is not None:
            self.checkpoints.store.remove(self.checkpoints.store.join(SHARED_MARKER))  # read by all long ago
        if self.preempted is not None:
            preempted, self.preempted = self.preempted, None
            log.warning("%s", preempted)
            raise preempted

    # ------------------------------------------------------------------ saving

    @property
    def _last_name(self) -> str:
        return checkpoint_name(*self._last_saved) if self._last_saved else "nothing"

    def save(self, epoch: int, step: int = 0, reason: str = "epoch") -> str:
        """Saves the state after `epoch` epochs and `step` steps of the next; every worker calls it together.

        Returns the checkpoint's name. The chief commits it in the background (`async_save`); `wait()`
        returns once it is committed.
        """
        steps = self.run.get("steps_per_epoch") or (self.params or {}).get("steps")
        if step and steps and step >= steps:
            epoch, step = epoch + 1, 0
        if self._last_saved == (epoch, step):
            return checkpoint_name(epoch, step)
        self.wait()  # one save in flight at a time
        name = checkpoint_name(epoch, step)
        local = os.path.join(self.scratch, f"{_TMP_PREFIX}{os.getpid()}-{name}{WEIGHTS}")
        if self.is_chief and self.checkpoints.store.is_local:  # beside its final name, renamed into place: no copy
            local = self.checkpoints.store.join(f"{_TMP_PREFIX}{os.getpid()}-{name}{WEIGHTS}")
        if self.checkpoints.store.is_local and sharded.is_sharded(self.model):
            return self._save_sharded(epoch, step, reason, name, steps)
        # Step and time checkpoints are committed in the background; an epoch's is committed before the next epoch
        # starts (a process that dies early in it resumes from there), a preemption's before the process exits.
        background = self.async_save and reason in ("steps", "seconds")
        try:
            # Every worker takes the same steps: Keras' save walk can itself run collectives (on JAX, creating the
            # optimizer it compares attributes with puts a variable on every device), so a save on the chief
            # alone would leave the workers out of step. Where the values cannot be captured (a Keras outside
            # keras_saving's range) the others write into their private folder.
            with self.host_weights(self.model):  # every worker enters it (on JAX it may gather across them)
                write = keras_saving.capture(self.model)
                if write is None:
                    self.model.save_weights(local, overwrite=True)
        except OSError as e:
            _remove(local)
            raise _write_error(name, e) from None
        self._last_saved, self._last_save = (epoch, step), time.monotonic()
        if not self.is_chief:
            _remove(local)
            return name
        info = self._info(name, epoch, step, reason, steps)
        if background:  # the file is written (from the values captured), hashed and committed while training goes on
            self._pending = _Background(self._commit, (local, info, write), name=f"tfscale-save-{name}")
        else:
            self._commit(local, info, write)
            self._raise_pending()
        return name

    def _info(self, name: str, epoch: int, step: int, reason: str, steps: int | None) -> CheckpointInfo:
        run = self.run
        return CheckpointInfo(
            name=name, epoch=epoch, step=step, global_step=self._global_step, steps_per_epoch=steps,
            global_batch_size=run.get("global_batch_size"), num_workers=int(run.get("num_workers", 1)),
            num_replicas=int(run.get("num_replicas", 1)), backend=str(run.get("backend", keras.backend.backend())),
            strategy=str(run.get("strategy", "")), mesh=run.get("mesh"), reason=reason, created=0.0, files={})

    def _save_sharded(self, epoch: int, step: int, reason: str, name: str, steps: int | None) -> str:
        """Every process writes its own shards (no gathering); the chief then commits the folder."""
        folder = self.checkpoints.store.join(f"{_TMP_PREFIX}{name}{SHARDED}")
        try:
            sharded.save_sharded(self.model, folder)
            self._last_saved, self._last_save = (epoch, step), time.monotonic()
            if self.is_chief:
                self.checkpoints.commit_sharded(folder, self._info(name, epoch, step, reason, steps))
                self.checkpoints.prune(self.keep)
                log.info("checkpoint %s saved, sharded (%s)", name, reason)
        except OSError as e:
            raise _write_error(name, e) from None
        return name

    def _commit(self, local: str, info: CheckpointInfo, write=None) -> None:
        """Writes `local` from the values captured (`write`; None: written already), then commits it.

        The file is written over the spare beside it where there is one: the weights file of the checkpoint the
        last prune removed (local stores), or the last upload's local copy (object stores), so that a save
        allocates no new pages or blocks and frees none (`CheckpointStore.prune`)."""
        spare = _spare_path(os.path.dirname(local))
        in_place = os.path.dirname(local) != self.scratch
        try:
            if write is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.replace(spare, local)
            digest = write(local) if write is not None else None  # hashed while written (None: hashed in commit)
            self.checkpoints.commit(local, info, digest=digest)
            self.checkpoints.prune(self.keep, spare=spare if in_place else None)
            log.info("checkpoint %s saved (%s)", info.name, info.reason)
        except BaseException as e:  # noqa: BLE001 - raised in the training thread by wait()
            self._pending_error = e
            _remove(local)
        else:
            if not in_place:  # uploaded: the local copy is the next save's spare
                with contextlib.suppress(FileNotFoundError):
                    os.replace(local, spare)

    def wait(self) -> None:
        """Returns once the save in flight (if any) is committed; raises its error in this thread."""
        if self._pending is not None:
            self._pending.join()
            self._pending = None
        self._raise_pending()

    def _raise_pending(self) -> None:
        error, self._pending_error = self._pending_error, None
        if error is None:
            return
        if isinstance(error, TfscaleError):
            raise error
        if isinstance(error, OSError):
            raise _write_error(self._last_name, error) from None
        raise error


class _Background:
    """The thread that commits a save while training goes on, at a lower priority (nice `BACKGROUND_NICE`: Linux
    schedules each thread apart) so that it takes the cores when training leaves them, until `join` waits for it:
    then it runs at the waiting thread's priority again (where the OS lets a process raise one: root or
    CAP_SYS_NICE; else it stays low). Not a daemon: Python exits after it."""

    def __init__(self, target, args: tuple, name: str):
        self._lock, self._tid, self._waited = threading.Lock(), None, False
        self._thread = threading.Thread(target=self._run, args=(target, args), name=name)
        self._thread.start()

    def _run(self, target, args: tuple) -> None:
        with self._lock:
            if not self._waited:
                with contextlib.suppress(AttributeError, OSError):
                    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
                    self._tid = threading.get_native_id()
        try:
            target(*args)
        finally:
            with self._lock:
                self._tid = None

    def join(self) -> None:
        with self._lock:
            self._waited = True
            if self._tid is not None:  # lowered and still running
                with contextlib.suppress(AttributeError, OSError):
                    os.setpriority(os.PRIO_PROCESS, self._tid, os.getpriority(os.PRIO_PROCESS, 0))
        self._thread.join()


def _write_error(name: str, e: OSError) -> TrainingError:
    return TrainingError(f"could not write checkpoint {name}: {e.strerror or e}", where="checkpoint_dir",
                         fix="free disk space or fix the folder's permissions; earlier checkpoints are intact")


_SHAPES = re.compile(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))")
_PATH = re.compile(r"Target variable: <Variable path=([^,\s]+)")
_COUNT = re.compile(r"A total of (\d+) objects could not be loaded")


def _mismatch(name: str, detail: str) -> ConfigError:
    """Keras' message, shortened to the variable and both shapes (it prints the variable's whole value)."""
    shapes, path, count = _SHAPES.search(detail), _PATH.search(detail), _COUNT.search(detail)
    if shapes and path:
        detail = (f"variable {path.group(1)} has shape {shapes.group(1)} in this model and {shapes.group(2)} in the "
                  "checkpoint" + (f" ({count.group(1)} objects differ)" if count else ""))
    else:
        detail = detail.strip().split("\n")[0][:400]
    return ConfigError(f"checkpoint {name} does not fit this model and optimizer: {detail}",
                       where="checkpoint_dir", fix="use a new checkpoint_dir for a different model, optimizer or "
                       "precision, or pass resume=False to start over")


def _sees_marker(store: Store, token: str) -> bool:
    """This worker reads `token` in the folder's marker (retried for `MARKER_WAIT_S`: NFS caches listings)."""
    deadline = time.monotonic() + MARKER_WAIT_S
    while True:
        try:
            store.listdir()  # revalidates a cached listing (NFS)
            if store.read_bytes(store.join(SHARED_MARKER)).decode() == token:
                return True
        except (OSError, TfscaleError):
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _spare_path(folder: str) -> str:
    """The weights file in `folder` that this process's next save writes over (see `Checkpoints._commit`)."""
    return os.path.join(folder, f"{_TMP_PREFIX}{os.getpid()}-spare{WEIGHTS}")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
