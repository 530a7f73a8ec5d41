"""Starts and stops the scoring service's processes on 127.0.0.1: a Redis server and Celery workers.

Every process runs in its own session, so stopping it (or SIGKILL in the
fault-tolerance test) reaches all of its threads and children.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(port: int | None = None, *, log_file: Path | None = None,
                timeout: float = 20) -> tuple[subprocess.Popen, str]:
    """A throw-away Redis on 127.0.0.1 (no persistence); returns (process, URL of database 0).

    Raises:
        SystemExit: redis-server is not installed.
        RuntimeError: it did not answer PING within `timeout` seconds.
    """
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed. Fix: apt-get install redis-server "
                         "(or pass --broker redis://HOST:PORT/0 to use a running one)")
    port = port or free_port()
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return proc, url
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop([proc])
                raise RuntimeError(f"redis-server on port {port} did not start (exit code {proc.returncode})")
            time.sleep(0.05)


def worker_command(name: str, *, concurrency: int, prefetch_multiplier: int = 2) -> list[str]:
    """The command line of one Celery worker of the scoring service (threads pool: batches form in-process)."""
    return [sys.executable, "-m", "celery", "--workdir", str(HERE), "-A", "celery_app", "worker",
            "--pool", "threads", "--concurrency", str(concurrency), "--prefetch-multiplier", str(prefetch_multiplier),
            "--hostname", f"{name}@%h", "--queues", "sentiment", "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle"]


def start_worker(name: str, *, broker: str, model_dir: str | Path, concurrency: int = 32, max_batch: int = 32,
                 max_wait_ms: float = 5, visibility_timeout: float = 60, log_file: Path | None = None,
                 ) -> subprocess.Popen:
    """Starts one Celery worker holding the TFLite model in `model_dir` (returns at once)."""
    env = dict(os.environ, SENTIMENT_BROKER=broker, SENTIMENT_MODEL_DIR=str(Path(model_dir).resolve()),
               SENTIMENT_MAX_BATCH=str(max_batch), SENTIMENT_MAX_WAIT_MS=str(max_wait_ms),
               SENTIMENT_VISIBILITY_TIMEOUT=str(visibility_timeout), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    out = open(log_file, "ab") if log_file else subprocess.DEVNULL
    return subprocess.Popen(worker_command(name, concurrency=concurrency), env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_workers(app, names: list[str], procs: list[subprocess.Popen], timeout: float = 60) -> None:
    """Returns once every named worker answers a ping; raises if one exits or time runs out."""
    deadline = time.monotonic() + timeout
    missing = set(names)
    while missing:
        dead = [p.pid for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"Celery workers not ready: {sorted(missing)} (exited: pids {dead}); see their logs")
        for reply in app.control.ping(timeout=0.5) or []:
            for hostname in reply:
                missing.discard(hostname.split("@")[0])


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Sends `sig` to the process's whole session and waits for it to exit."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    proc.wait()


def stop(procs: list[subprocess.Popen], grace: float = 10) -> None:
    """SIGTERM (warm shutdown), then SIGKILL for whatever is still running after `grace` seconds."""
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill(proc)
