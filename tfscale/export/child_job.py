"""The child-process job protocol of export: a job folder in, ``result.json`` out.

Export runs some work in a fresh Python process (`handoff`: a model on JAX exported on
TensorFlow; `optimization`: tfmot on tf-keras). Both sides speak through one temporary folder:

    parent: job_folder() -> write_job(folder, spec) (+ its own files) -> run(worker, folder, ...)
    child:  read_job(folder) -> work -> write_result(folder, result)   (``python -m <worker> FOLDER``)

`run` starts ``python -m <worker> FOLDER`` with this package importable, reads ``result.json``,
and turns an ``{"error": {"what", "where", "fix"}}`` result, a non-zero exit or a timeout into an
`ExportError`. Standard library only (the child imports what its work needs).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from tfscale.errors import ExportError, TfscaleError
from tfscale.storage import atomic_write

log = logging.getLogger("tfscale")

JOB, RESULT = "job.json", "result.json"
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@contextlib.contextmanager
def job_folder(prefix: str) -> Iterator[Path]:
    """A new temporary folder for one job, removed with everything in it afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_job(folder: Path, spec: Mapping[str, Any]) -> None:
    """The parent's side: the job's description, ``job.json``."""
    (folder / JOB).write_text(json.dumps(spec))


def read_job(folder: Path) -> dict[str, Any]:
    """The child's side: the job the parent wrote."""
    return json.loads((folder / JOB).read_text())


def write_result(folder: Path, result: Mapping[str, Any]) -> None:
    """The child's side: ``result.json``, written whole (a killed child leaves none, never half of one)."""
    atomic_write(folder / RESULT, json.dumps(result, indent=2, default=str), sync=False)


def error_result(e: BaseException, *, where: str, fix: str, prefix: str = "") -> dict[str, Any]:
    """The ``error`` a child reports: a tfscale error's own parts; else `prefix`, the exception, `where`, `fix`
    and the traceback's tail (logged by a parent that captures the output)."""
    if isinstance(e, TfscaleError):
        return {"what": e.what, "where": e.where, "fix": e.fix}
    return {"what": f"{prefix}{type(e).__name__}: {e}", "where": where, "fix": fix,
            "traceback": traceback.format_exc()[-3000:]}


def child_env(**variables: str) -> dict[str, str]:
    """This process's environment with `variables` set and this tfscale importable first."""
    env = {**os.environ, **variables}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def run(worker: str, folder: Path, *, env: Mapping[str, str], name: str, where: str, capture: bool = False,
        timeout: float | None = None, timeout_fix: str = "") -> dict[str, Any]:
    """Runs ``python -m <worker> FOLDER`` and returns its result.

    Args:
        worker: the child's module.
        folder: the job folder (`write_job` done).
        env: the child's environment (`child_env`).
        name: the child as errors name it ("the export process", "the tfmot worker").
        where: the `where` of its errors when the child gives none.
        capture: keep the child's output (logged at INFO when it fails) instead of passing it through.
        timeout: seconds the child may run (None: no limit).
        timeout_fix: the fix an ExportError for a timeout gives.

    Raises:
        ExportError: the child reported an error, exited with a non-zero code, or ran out of time.
    """
    try:
        proc = subprocess.run([sys.executable, "-m", worker, str(folder)], env=dict(env), capture_output=capture,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ExportError(f"{name} did not finish within {timeout} s", where=where, fix=timeout_fix) from e
    result_file = folder / RESULT
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    if proc.returncode == 0 and "error" not in result:
        return result
    output = proc.stderr or ""
    error = result.get("error") or {"what": f"{name} exited with code {proc.returncode}", "where": where,
                                    "fix": "see its output: " + output[-2000:] if capture else "see its output above"}
    if capture:
        log.info("%s output:\n%s\n%s", where, output[-4000:], error.get("traceback", ""))
    raise ExportError(error["what"], where=error.get("where") or where, fix=error.get("fix"))
