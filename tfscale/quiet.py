"""Quiet runs: a person sees tfscale's lines, their own, real warnings and errors, and nothing else.

TensorFlow, absl, LiteRT and the TFLite converter print dozens of lines on a
healthy run, some before any Python code can configure logging: the absl
"before InitializeLog" banner and cudart notice (twice, one per TF library),
an ``E... failed call to cuInit`` on every machine without a GPU driver,
SavedModel reader lines, ``fully_quantize: 0, ...`` and "Created TensorFlow
Lite XNNPACK delegate". `enable` hides them:

- ``TF_CPP_MIN_LOG_LEVEL=2`` (unless already set): TF's C++ info and warnings off
  once its logging starts; child processes inherit it.
- Native writes to file descriptor 2 go through a small filter process that
  drops the known start-up and converter lines (`is_noise`) and passes every
  other line on. Python's own `sys.stderr` keeps writing to the real stderr
  directly, so tracebacks, warnings and progress bars are never delayed, and a
  crash loses nothing: the filter reads until the last writer has gone.
- TensorFlow's Python logger keeps WARNING and above (in Jupyter, TF sets it
  to INFO: "Reduce to ... then broadcast to" per step).

``TFSCALE_VERBOSE=1`` (``tfscale --verbose``) shows everything. Standard
library only: this module runs before TensorFlow loads.

Example:
    from tfscale import quiet
    quiet.enable()          # first, before TensorFlow is imported
    import tensorflow as tf
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import select
import signal
import subprocess
import sys

VERBOSE_ENV = "TFSCALE_VERBOSE"  # tfscale.worker_env.VERBOSE (this file also runs as `python -I -S quiet.py`)
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_TF_LOG_LEVEL = "2"  # C++ errors still show; info and warnings do not
PARTIAL_LINE_WAIT_S = 0.05  # a partial line (a prompt, a progress bar) is passed on after this long

# Lines that say nothing to a person on a healthy run. Each names its source; keep them specific.
NOISE = tuple(re.compile(p) for p in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-]+:\d+\] ",  # absl/TF C++ INFO and WARNING lines
    r"^E\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: ",  # no GPU driver here
    r"^E\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ cuda_(dnn|fft|blas)\.cc:\d+\] Unable to register cu\w+ factory: ",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$",
    r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+$",
    r"^INFO: (Created TensorFlow Lite \w+ delegate for CPU|Initialized TensorFlow Lite runtime)\.$",
))

_filter: subprocess.Popen | None = None
_saved_stderr: int | None = None


def verbose() -> bool:
    """True when ``TFSCALE_VERBOSE`` asks for everything (1, true, yes)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def is_noise(line: str | bytes) -> bool:
    """True for a line TensorFlow, absl, LiteRT or the converter print on a healthy run (see `NOISE`)."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.rstrip("\r\n")
    return any(p.search(line) for p in NOISE)


def variables() -> dict[str, str]:
    """Variables a worker process needs for a quiet run; the launcher adds them to each worker.

    Verbose runs pass ``TFSCALE_VERBOSE=1`` on instead, so the workers show everything too.
    """
    if verbose():
        return {VERBOSE_ENV: "1"}
    return {TF_LOG_LEVEL_ENV: os.environ.get(TF_LOG_LEVEL_ENV, QUIET_TF_LOG_LEVEL)}


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


_TF_LOGGER_FILTER = _BelowWarning()


def enable(*, stderr_filter: bool = True) -> None:
    """Silences TensorFlow's start-up and info noise in this process and the processes it starts.

    Call it before TensorFlow is imported (later calls still quiet the Python
    loggers and the lines printed from then on). Does nothing under
    ``TFSCALE_VERBOSE=1``. Calling it again is harmless.

    Args:
        stderr_filter: route native writes to stderr through the `is_noise`
            filter process (False: environment and loggers only).
    """
    if verbose():
        os.environ.setdefault(TF_LOG_LEVEL_ENV, "0")
        return
    os.environ.setdefault(TF_LOG_LEVEL_ENV, QUIET_TF_LOG_LEVEL)
    logger = logging.getLogger("tensorflow")  # the same object TF configures later
    if _TF_LOGGER_FILTER not in logger.filters:
        logger.addFilter(_TF_LOGGER_FILTER)
    if stderr_filter and _filter is None:
        _start_filter()


def _start_filter() -> None:
    """Points file descriptor 2 at a pipe read by a filter process that writes to the real stderr."""
    global _filter, _saved_stderr
    if os.name != "posix" or not sys.executable:  # the filter reads a pipe with select(): POSIX only
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no stderr descriptor (some embedded interpreters): stay as we are
        return
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__)], stdin=read_end,
                                stdout=saved, stderr=subprocess.DEVNULL, close_fds=True)
    except OSError:
        for fd in (saved, read_end, write_end):
            os.close(fd)
        return
    os.close(read_end)
    os.dup2(write_end, 2)
    os.close(write_end)
    _filter, _saved_stderr = proc, saved
    if _is_fd2(sys.stderr):  # Python's own writes go straight out: in order, never lost, isatty kept
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=sys.stderr.encoding,
                               errors="backslashreplace")
    atexit.register(_stop_filter)


def _is_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


def _stop_filter(timeout: float = 2.0) -> None:
    """At exit: gives fd 2 back to the real stderr and lets the filter finish its last lines."""
    global _filter, _saved_stderr
    if _filter is None or _saved_stderr is None:
        return
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(_saved_stderr, 2)  # closes this process's end of the pipe
    try:
        _filter.wait(timeout)  # a child still holding the pipe keeps it open: do not wait for it
    except subprocess.TimeoutExpired:
        pass
    _filter, _saved_stderr = None, None


def _serve(source: int, sink: int) -> None:
    """The filter process: copies `source` to `sink` line by line, dropping `is_noise` lines."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # stop only when every writer has closed the pipe
        signal.signal(sig, signal.SIG_IGN)
    pending, midline = b"", False
    while True:
        ready, _, _ = select.select([source], [], [], PARTIAL_LINE_WAIT_S if pending else None)
        if not ready:  # a partial line that waits (a prompt, "\r" progress): pass it on now
            _write(sink, pending)
            pending, midline = b"", True
            continue
        chunk = os.read(source, 1 << 16)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        out = []
        for line in lines:
            if midline or not is_noise(line):
                out.append(line + b"\n")
            midline = False
        if out:
            _write(sink, b"".join(out))
    if pending and (midline or not is_noise(pending)):
        _write(sink, pending)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _NoBar:
    """What `progress` returns when nothing should show: the tqdm methods tfscale uses, doing nothing."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int | None, *, enabled: bool = True, desc: str = "", unit: str = "step"):
    """A progress bar on stderr when it is a terminal: tqdm's, or nothing (no tqdm, not a terminal, a notebook).

    Logs, pipes and notebooks never get progress lines; a person at a terminal does.

    Args:
        total: steps expected (None: unknown).
        enabled: False returns the do-nothing bar.
        desc: text before the bar.
        unit: what one step is ("file", "record").

    Returns:
        An object with tqdm's ``update(n)``, ``set_description_str(s)`` and ``close()``.
    """
    stream = sys.stderr
    if not enabled or not getattr(stream, "isatty", lambda: False)():
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, leave=False)


if __name__ == "__main__":
    try:
        _serve(0, 1)
    except (BrokenPipeError, KeyboardInterrupt):
        pass
