"""Preemption: a termination signal becomes "save at the next step, on every worker, then exit to be restarted".

Platforms announce a preemption with a signal some seconds before they kill: Kubernetes and spot VMs send
SIGTERM, Slurm sends what ``--signal`` names (e.g. ``USR1@60``) and SIGTERM at a requeue or ``scancel``.
`SignalFlag` turns those signals into a flag while training runs (the previous handlers come back when
it ends; a second signal does what the previous handler would have done). A Python handler runs only
between steps, so the flag is read at each step's end.

On several processes the workers must save at the same step: all of them take part in a save (gathering
sharded weights), and a worker that stopped alone would leave the others waiting in a collective.
`FlagExchange`: at the end of agreed steps each worker publishes its flags through the engine's key-value
store (`Engine.exchange`) and reads everyone's: the same answer on every worker, so every worker saves at the
end of the same step and nothing trained is lost. An exchange is 4 round trips per worker to the coordination
service (set, a get per worker, a delete), and on 2 workers sharing 2 cores each one cost the chief ~0.9 ms of
CPU and ~1.4 ms of waiting: at every step's end, 7-10 % of the steps/s of 22 ms steps
(benchmarks/bench_checkpoint.py --exchange). So the flags are exchanged every `EXCHANGE_EVERY_STEPS` (2) steps:
a flag seen at the end of step t is acted on at the end of step t or t+1, by every worker. (Exchanging in a
helper thread while the next step trains was measured too: it hides the wait, but the helper's thread switches
and GIL hand-offs cost more CPU than the wait saved on 2 cores, and it acts one step later.) A signalled
worker sees its signal at the end of the step it arrives in: at most one step of training runs after that
before the save, none is lost.

Google Compute Engine (spot and preemptible VMs, Cloud TPU VMs, GKE nodes) also announces a preemption in its
metadata server, before its SIGTERM: `MetadataWatcher` polls ``instance/preempted`` ("TRUE") and
``instance/maintenance-event`` (a ``TERMINATE_ON_HOST_MAINTENANCE``; a live migration is ignored) every second
in a daemon thread while training runs, and sets the same flag a signal sets (``received`` is "GCE preemption
notice"), so the save above starts as soon as the notice is out. It runs only on GCE, detected once per process
without delaying start-up: ``GCE_METADATA_HOST`` (google-auth's and gcloud's variable; it also names the host
asked) set, or this machine's firmware saying "Google" (``/sys/class/dmi/id/product_name``, as google-auth reads
it), and then the metadata server answering within 1 s with ``Metadata-Flavor: Google``; elsewhere nothing is
sent. It is on wherever preemption is (`Checkpoints`); ``Checkpoints(preemption_notice=False)`` turns it off.

`PREEMPTED_EXIT` is the exit code of a process that saved and stopped on such a signal: "restart me".
"""

from __future__ import annotations

import enum
import http.client
import itertools
import logging
import os
import signal
import threading
import urllib.error
import urllib.request

from tfscale.worker_env import PREEMPTED_EXIT

log = logging.getLogger("tfscale")

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1")
__all__ = ["DEFAULT_SIGNALS", "EXCHANGE_EVERY_STEPS", "GCE_NOTICE", "PREEMPTED_EXIT", "FlagExchange",
           "MetadataWatcher", "Preempted", "SignalFlag", "signal_numbers"]

GCE_NOTICE = "GCE preemption notice"  # what `SignalFlag.received` holds when the metadata server announced it


class Preempted(SystemExit):
    """Raised at the end of `fit` once the preemption checkpoint is saved: the process exits with
    `PREEMPTED_EXIT` (no traceback), so a launcher, Slurm, Ray or Kubernetes restarts it and it resumes.

    Attributes:
        checkpoint: the name of the checkpoint saved, e.g. "epoch-00001-step-0000037".
        signal_name: the signal that asked for it, or `GCE_NOTICE`.
    """

    def __init__(self, checkpoint: str, signal_name: str):
        super().__init__(PREEMPTED_EXIT)
        self.checkpoint, self.signal_name = checkpoint, signal_name

    def __str__(self) -> str:
        return f"preempted by {self.signal_name}: saved {self.checkpoint}; exiting with {PREEMPTED_EXIT} to be restarted"


def signal_numbers(names) -> list[int]:
    """Signal numbers for names like "SIGTERM", "USR1" or numbers; unknown names are a ConfigError."""
    from tfscale.errors import ConfigError

    numbers = []
    for name in names:
        if isinstance(name, int):
            numbers.append(name)
            continue
        text = str(name).upper()
        text = text if text.startswith("SIG") else "SIG" + text
        number = getattr(signal, text, None)
        if not isinstance(number, signal.Signals) or text in ("SIGKILL", "SIGSTOP"):
            raise ConfigError(f"{name!r} is not a signal tfscale can catch", where="preemption_signals",
                              fix='name signals such as "SIGTERM" or "SIGUSR1" (SIGKILL and SIGSTOP cannot be caught)')
        numbers.append(int(number))
    return numbers


class SignalFlag:
    """A flag set by any of `signals` while installed; `install` and `uninstall` run in the main thread.

    Keras calls no callback when `fit` raises, so a flag can outlive its training: `active()` then says
    False, and a signal does what the previous handler would have done (the next `install` skips it too).

    Attributes:
        received: the name of the first signal received, or None.
    """

    def __init__(self, signals=DEFAULT_SIGNALS, active=None):
        self.signals = signal_numbers(signals)
        self.received: str | None = None
        self.active = active or (lambda: True)  # False once training is gone (a fit that raised)
        self._previous: dict[int, object] = {}

    def install(self) -> bool:
        """Takes the signals over (False where that cannot be done: not the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            log.warning("preemption signals are not caught: training does not run in the main thread")
            return False
        for number in self.signals:
            previous = signal.signal(number, self._handle)
            stale = getattr(previous, "__self__", None)
            if isinstance(stale, SignalFlag) and stale is not self:  # left by a fit that raised: skip it
                previous = stale._previous.get(number, signal.SIG_DFL)
            self._previous[number] = previous
        return True

    def uninstall(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def mark(self, reason: str) -> bool:
        """Sets `received` to `reason` (a signal's name, a platform's notice); False where it was set already or
        no training runs."""
        if self.received is not None or not self.active():
            return False
        self.received = reason
        log.warning("%s received: saving a checkpoint at the end of this step, then exiting", reason)
        return True

    def _handle(self, number, frame):
        if self.mark(signal.Signals(number).name):
            return
        previous = self._previous.get(number)  # a second signal, or no training left: what would have happened
        self.uninstall()
        if callable(previous):
            previous(number, frame)
        else:
            signal.raise_signal(number)


EXCHANGE_EVERY_STEPS = 2  # steps from one exchange of flags to the next (the same on every worker)
# One key per exchange, the same sequence on every worker, for every fit of the process: a counter per fit
# started again at 0 in the next fit, whose exchanges then met the last keys of the one before
# (AlreadyExistsError from TensorFlow's coordination service).
_exchanges = itertools.count()


class FlagExchange:
    """Every worker's flags, read by every worker at the end of the same steps: every `every` steps of a fit
    (see the module docstring).

    Args:
        exchange: every process's value of a key, by rank (`Engine.exchange`); None from it: the engine cannot
            exchange, and each worker goes by its own flags, at every step.
        forget: drops this process's value of an exchanged key (`Engine.forget`).
        every: steps from one exchange to the next (None: `EXCHANGE_EVERY_STEPS`).

    Example:
        flags = FlagExchange(scale.engine.exchange, scale.engine.forget)
        flags.restart()                 # when training starts, on every worker
        everyone = flags.step_end("p")  # at every step's end, on every worker: e.g. "p-", or None between exchanges
    """

    def __init__(self, exchange, forget=None, every: int | None = None):
        self.exchange, self.forget = exchange, forget
        self.every = EXCHANGE_EVERY_STEPS if every is None else every
        self._steps, self._alone = 0, False

    def restart(self) -> None:
        """Counts the steps from here (every worker calls it when training starts)."""
        self._steps = 0

    def step_end(self, flags: str) -> str | None:
        """Every worker's flags (one character each), joined in rank order, at the steps where they are exchanged;
        None at the others."""
        self._steps += 1
        if self._alone:
            return flags
        if self._steps % self.every:
            return None
        number = next(_exchanges)
        everyone = self.exchange(f"ckpt/{number}", flags)
        if number >= 2 and self.forget is not None:  # every process has read the one before last: it wrote the last
            self.forget(f"ckpt/{number - 2}")
        if everyone is None:  # no way to exchange: its own flags, from now on at every step
            self._alone = True
            return flags
        return "".join(everyone)


METADATA_HOST_ENV = "GCE_METADATA_HOST"  # google-auth's and gcloud's name; "host" or "host:port"
DEFAULT_METADATA_HOST = "metadata.google.internal"
DMI_PRODUCT_NAME = "/sys/class/dmi/id/product_name"  # "Google Compute Engine" on GCE (google-auth reads it too)
DETECT_TIMEOUT_S = 1.0  # the one probe at start-up
POLL_TIMEOUT_S = 2.0


class MaintenanceEvent(str, enum.Enum):
    """The values of ``instance/maintenance-event``; only a termination means preemption."""

    NONE = "NONE"
    MIGRATE = "MIGRATE_ON_HOST_MAINTENANCE"
    TERMINATE = "TERMINATE_ON_HOST_MAINTENANCE"


_no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the metadata server is never proxied
_detected: dict[str, bool] = {}  # host -> it answered as a GCE metadata server (probed once per process)
_detect_lock = threading.Lock()


def _metadata(host: str, path: str, timeout: float) -> tuple[str, str]:
    """(body, Metadata-Flavor header) of ``http://host/computeMetadata/v1/path``; OSError where unreachable."""
    request = urllib.request.Request(f"http://{host}/computeMetadata/v1/{path}", headers={"Metadata-Flavor": "Google"})
    with _no_proxy.open(request, timeout=timeout) as response:
        return response.read().decode("utf-8", "replace").strip(), response.headers.get("Metadata-Flavor", "")


def _google_firmware() -> bool:
    try:
        with open(DMI_PRODUCT_NAME, encoding="utf-8", errors="replace") as f:
            return f.read().strip().startswith("Google")
    except OSError:
        return False


def gce_metadata_host() -> str | None:
    """The metadata server's host where this process runs on GCE (probed once per process), else None.

    Nothing is sent unless ``GCE_METADATA_HOST`` is set or the firmware names Google; the probe waits at most
    `DETECT_TIMEOUT_S`.
    """
    host = os.environ.get(METADATA_HOST_ENV, "").strip()
    if not host and not _google_firmware():
        return None
    host = host or DEFAULT_METADATA_HOST
    with _detect_lock:
        if host not in _detected:
            try:
                _detected[host] = _metadata(host, "", DETECT_TIMEOUT_S)[1] == "Google"
            except (OSError, ValueError, http.client.HTTPException):  # refused, timed out, no such host, garbled
                _detected[host] = False
            log.debug("GCE metadata server at %s: %s", host, "found" if _detected[host] else "none")
        return host if _detected[host] else None


class MetadataWatcher:
    """Sets `flag` (`GCE_NOTICE`) once GCE's metadata server announces this VM's preemption or termination for
    host maintenance; polls every `interval` seconds in a daemon thread between `start` and `stop`.

    Example:
        watcher = MetadataWatcher(flag)
        watcher.start()  # False off GCE: nothing watched
        ...; watcher.stop()
    """

    def __init__(self, flag: SignalFlag, interval: float = 1.0):
        self.flag, self.interval = flag, interval
        self._stop: threading.Event | None = None

    def start(self) -> bool:
        """Starts watching where this process runs on GCE (see `gce_metadata_host`); False elsewhere."""
        self.stop()
        host = gce_metadata_host()
        if host is None:
            return False
        self._stop = threading.Event()
        threading.Thread(target=self._watch, args=(host, self._stop), name="tfscale-gce-notice", daemon=True).start()
        log.info("watching the GCE metadata server at %s for a preemption notice", host)
        return True

    def stop(self) -> None:
        """Stops the thread (it ends within one poll; nothing waits for it)."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None

    def _watch(self, host: str, stop: threading.Event) -> None:
        failed = False
        while not stop.is_set():
            try:
                notice = self._notice(host)
            except (OSError, ValueError, http.client.HTTPException) as e:
                if not failed:
                    log.warning("cannot read the GCE preemption notice from %s (%s); still trying", host, e)
                failed, notice = True, False
            if notice and not stop.is_set():
                self.flag.mark(GCE_NOTICE)
                return
            stop.wait(self.interval)

    @staticmethod
    def _notice(host: str) -> bool:
        if _metadata(host, "instance/preempted", POLL_TIMEOUT_S)[0].upper() == "TRUE":
            return True
        return _metadata(host, "instance/maintenance-event", POLL_TIMEOUT_S)[0] == MaintenanceEvent.TERMINATE.value


_NOTICE_SOURCES: list = []  # factories flag -> watcher (`start() -> bool`, `stop()`): platforms' notices beside GCE's


def add_notice_source(factory) -> None:
    """Every `Checkpoints` with preemption on also starts `factory(flag)`, a watcher of a platform's preemption
    notice that marks the flag (tfscale.ray.notice adds Ray Train's in Ray workers)."""
    if factory not in _NOTICE_SOURCES:
        _NOTICE_SOURCES.append(factory)


def notice_watchers(flag: SignalFlag) -> list:
    """The watchers of every preemption notice this process knows of, for `flag` (GCE's metadata server first)."""
    return [MetadataWatcher(flag), *(factory(flag) for factory in _NOTICE_SOURCES)]
