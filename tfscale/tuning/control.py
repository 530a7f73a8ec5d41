"""How `tfscale tune --workers N` tells the chief that a tuner died: a file in a control folder.

The launcher (workers.py) makes the folder, names it to every process in
TFSCALE_TUNE_CONTROL, and writes ``<tuner id>.dead`` there when a tuner
exits with an error; the chief (chief.py) reads the folder while it serves
and hands that tuner's trial to the next one that asks. Standard library only:
the launcher imports it without keras-tuner.
"""

from __future__ import annotations

import os

from tfscale import worker_env

CONTROL_ENV = worker_env.TUNE_CONTROL
_SUFFIX = ".dead"


def announce_dead(control_dir: str, tuner_id: str) -> None:
    """Tells the chief that `tuner_id` died (launcher side)."""
    with open(os.path.join(control_dir, tuner_id + _SUFFIX), "w"):
        pass


def announced_dead(control_dir: str | None, known: list[str]) -> list[str]:
    """The tuners announced dead in `control_dir` that are not in `known`, sorted (chief side)."""
    if not control_dir or not os.path.isdir(control_dir):
        return []
    names = sorted(f[: -len(_SUFFIX)] for f in os.listdir(control_dir) if f.endswith(_SUFFIX))
    return [n for n in names if n not in known]
