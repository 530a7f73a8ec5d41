"""Writing export files safely: never overwrite without being asked, and never leave half a file.

Every writer builds its output under a temporary name in the destination's own
directory and moves it into place in one step (files: `tfscale.storage.atomic_path`,
the one local atomic writer; directories: `atomic_dir` here), so a reader sees either
the old file or the complete new one, and a failure leaves nothing behind. The
temporary file or folder gets the mode a plain `open()` or `mkdir` would give
(0644 / 0755 under umask 022), not mkstemp's private 0600 / 0700, so other users
and serving containers can read what was exported, as they can `model.keras`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tfscale.errors import ExportError
from tfscale.storage import atomic_path

log = logging.getLogger("tfscale")


def check_target(path: str | os.PathLike, *, overwrite: bool) -> Path:
    """The destination as a Path; an ExportError if it exists and `overwrite` is False.

    Raises:
        ExportError: the file or directory exists and overwrite is False, or a
            directory stands where a file should go (or the reverse).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists and was left untouched", where=str(path),
                          fix="pass overwrite=True (or --overwrite), or choose another path")
    return path


def umask() -> int:
    """This process's umask, read without changing it where Linux tells it (else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = False, suffix: str | None = None) -> Iterator[Path]:
    """Yields a temporary path next to `path`; on success moves it onto `path` in one step.

    Args:
        path: the final file.
        overwrite: replace an existing file (it is untouched until the new one is complete).
        suffix: the temporary file's ending, for writers that insist on one (".keras"); by default
            it ends as `path` does.

    Example:
        with atomic_file("model.tflite", overwrite=True) as tmp:
            tmp.write_bytes(flatbuffer)
    """
    path = check_target(path, overwrite=overwrite)
    if path.is_dir():
        raise ExportError(f"{path} is a directory, not a file", where=str(path), fix="give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = "" if suffix is None or path.name.endswith(suffix) else suffix
    with atomic_path(path, suffix=ending, sync=False) as tmp:
        yield Path(tmp)
        check_target(path, overwrite=overwrite)  # something else may have written it meanwhile


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Like `atomic_file` for a directory (a SavedModel): build it aside, then swap it in.

    The old directory, if any, is renamed aside first and deleted only after the
    new one is in place; if the swap fails it is put back.
    """
    path = check_target(path, overwrite=overwrite)
    if path.exists() and not path.is_dir():
        raise ExportError(f"{path} is a file, not a directory", where=str(path), fix="give a directory name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~umask())
    old = None
    try:
        yield tmp
        check_target(path, overwrite=overwrite)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "previous")
        try:
            os.replace(tmp, path)
        except OSError:
            if old is not None:
                os.replace(old / "previous", path)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Writes `data` to `path` atomically; returns the path."""
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Writes `text` to `path` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)
