"""Start real worker processes on 127.0.0.1 for multi-process tests, and always clean them up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# One thread pool per worker, so 2-3 workers fit on 2 cores.
THREAD_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
              "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# Packages TensorFlow/Keras import only because they are installed, which no test worker needs unless it
# says so: hidden from the processes tests start (tests/lean_site/sitecustomize.py), as where they are not
# installed. This also checks that tfscale's TensorFlow paths never need them.
# IPython: Keras' saving.file_editor imports it (~0.4 s of a start-up's CPU here).
HIDDEN = ("sklearn", "pandas", "matplotlib", "jax", "IPython")


def hiding(*needed: str) -> tuple[str, ...]:
    """`HIDDEN` less the packages a process needs (e.g. hiding("sklearn") for the digits demo)."""
    return tuple(n for n in HIDDEN if n not in needed)


@contextlib.contextmanager
def unhidden(*needed: str):
    """Within: processes tests start see `needed` too (for a module: an autouse module fixture)."""
    global HIDDEN
    saved, HIDDEN = HIDDEN, hiding(*needed)
    try:
        yield
    finally:
        HIDDEN = saved


def base_env(*, hide: tuple[str, ...] | None = None, **extra: str) -> dict[str, str]:
    """The environment of a process a test starts: one thread pool, this checkout first on the path.

    hide: the packages made unimportable there (default `HIDDEN`, less JAX when KERAS_BACKEND=jax).
    """
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG",) and not k.startswith("SLURM_")}
    env.update(THREAD_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests" / "lean_site"), str(REPO),
                                         env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    if hide is None:
        hide = tuple(n for n in HIDDEN if not (n == "jax" and env.get("KERAS_BACKEND") == "jax"))
    env["TFSCALE_TEST_HIDE"] = ",".join(hide)
    return env


def run_workers(n: int, argv: list[str], *, timeout: float = 240, env: dict[str, str] | None = None,
                hide: tuple[str, ...] | None = None):
    """Runs `python argv...` as n workers of one TF_CONFIG cluster; returns their CompletedProcess list.

    Every process is killed if any fails or the timeout passes, and the test fails with their output.
    """
    ports = free_ports(n)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(n):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen([sys.executable, *argv], env=base_env(hide=hide, TF_CONFIG=tf_config, **(env or {})),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
    return wait_all(procs, timeout)


def run_one(argv: list[str], *, timeout: float = 240, env: dict[str, str] | None = None, check: bool = True,
            hide: tuple[str, ...] | None = None):
    """Runs `python argv...`; with check=False a non-zero exit is returned, not raised."""
    proc = subprocess.Popen([sys.executable, *argv], env=base_env(hide=hide, **(env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return wait_all([proc], timeout, check=check)[0]


def wait_all(procs: list[subprocess.Popen], timeout: float, check: bool = True):
    deadline = time.monotonic() + timeout
    outputs = [None] * len(procs)
    try:
        for i, p in enumerate(procs):
            remaining = max(1.0, deadline - time.monotonic())
            outputs[i], _ = p.communicate(timeout=remaining)
    except subprocess.TimeoutExpired:
        kill_all(procs)
        outs = [p.communicate()[0] for p in procs]
        raise AssertionError("workers timed out:\n" + "\n".join(f"--- worker {i}\n{o[-3000:]}" for i, o in enumerate(outs)))
    finally:
        kill_all(procs)
    failed = [i for i, p in enumerate(procs) if p.returncode != 0]
    if failed and check:
        raise AssertionError("worker(s) %s failed:\n%s" % (failed, "\n".join(
            f"--- worker {i} (exit {procs[i].returncode})\n{(outputs[i] or '')[-4000:]}" for i in failed)))
    return [subprocess.CompletedProcess(p.args, p.returncode, outputs[i], "") for i, p in enumerate(procs)]


def kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
