"""Preemption: a termination signal becomes "save at the next step, on every worker, then exit to be restarted".

Platforms announce a preemption with a signal some seconds before they kill: Kubernetes and spot VMs send
SIGTERM, Slurm sends what ``--signal`` names (e.g. ``USR1@60``) and SIGTERM at a requeue or ``scancel``.
`SignalFlag` turns those signals into a flag while training runs (the previous handlers come back when
it ends; a second signal does what the previous handler would have done). A Python handler runs only
between steps, so the flag is read at each step's end.

On several processes the workers must save at the same step: all of them take part in a save (gathering
sharded weights), and a worker that stopped alone would leave the others waiting in a collective. At
every step's end each worker publishes its flags through the engine's key-value store
(`Engine.exchange`) and reads everyone's: the same answer on every worker, at the same step. A
signalled worker publishes at the end of the step it is in; its peers cannot finish the next step
without it, so they read its flag at the latest one step later: at most one step of work is lost, and
none where every worker is signalled (the usual case: the platform signals them all).

`PREEMPTED_EXIT` is the exit code of a process that saved and stopped on such a signal: "restart me".
"""

from __future__ import annotations

import logging
import signal
import threading

from tfscale.worker_env import PREEMPTED_EXIT

log = logging.getLogger("tfscale")

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR1")
__all__ = ["DEFAULT_SIGNALS", "PREEMPTED_EXIT", "Preempted", "SignalFlag", "signal_numbers"]


class Preempted(SystemExit):
    """Raised at the end of `fit` once the preemption checkpoint is saved: the process exits with
    `PREEMPTED_EXIT` (no traceback), so a launcher, Slurm, Ray or Kubernetes restarts it and it resumes.

    Attributes:
        checkpoint: the name of the checkpoint saved, e.g. "epoch-00001-step-0000037".
        signal_name: the signal that asked for it.
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

    def _handle(self, number, frame):
        name = signal.Signals(number).name
        if self.received is None and self.active():
            self.received = name
            log.warning("%s received: saving a checkpoint at the end of this step, then exiting", name)
            return
        previous = self._previous.get(number)  # a second signal, or no training left: what would have happened
        self.uninstall()
        if callable(previous):
            previous(number, frame)
        else:
            signal.raise_signal(number)
