"""What converted shards were made from: the source files (name, size, modification time) and the options.

`tfscale data convert` writes `manifest.json` before any shard and resumes only
when the source and the options still match it; otherwise it refuses, naming
what changed (`--overwrite` rebuilds).
"""

from __future__ import annotations

import glob
import json
import os

from tfscale.data.images.files import EXTENSIONS, walk
from tfscale.data.records.format import FORMAT, MANIFEST, META
from tfscale.errors import DataError
from tfscale.storage import TEMP_PREFIX

_TEMPORARIES = ("part-*.tmp-*", TEMP_PREFIX + "*")  # spill files; `tfscale.storage.PendingFile`s
_OURS = ("part-*-of-*.tfrecord", "part-*-of-*.index", META, MANIFEST, *_TEMPORARIES)


def source_files(src: str) -> list[list]:
    """[relative name, bytes, modification time in ns] of every input file: the CSV file or the images."""
    if os.path.isfile(src):
        stat = os.stat(src)
        return [[os.path.basename(src), stat.st_size, stat.st_mtime_ns]]
    rows = []
    for path in walk(src, EXTENSIONS):
        stat = os.stat(path)
        rows.append([os.path.relpath(path, src).replace(os.sep, "/"), stat.st_size, stat.st_mtime_ns])
    return rows


def make(src: str, options: dict) -> dict:
    return {"format": FORMAT, "source": os.path.abspath(src), "options": options, "files": source_files(src)}


def existing(out: str) -> list[str]:
    """The files a previous convert left in `out` (shards, indexes, dataset.json, manifest, temporaries)."""
    return sorted({p for pattern in _OURS for p in glob.glob(os.path.join(out, pattern))})


def temporaries(out: str) -> list[str]:
    """The temporary files an interrupted convert left in `out` (half shards and indexes, spill files)."""
    return sorted({p for pattern in _TEMPORARIES for p in glob.glob(os.path.join(out, pattern))})


def load(out: str) -> dict | None:
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def differences(old: dict, new: dict) -> list[str]:
    """What changed between two manifests, in words (empty: the shards can be resumed)."""
    changes = []
    for name in sorted(set(old.get("options", {})) | set(new["options"])):
        was, now = old.get("options", {}).get(name), new["options"].get(name)
        if was != now:
            changes.append(f"option {name} was {was!r}, now {now!r}")
    before = {row[0]: tuple(row[1:]) for row in old.get("files", [])}
    after = {row[0]: tuple(row[1:]) for row in new["files"]}
    for what, names in (("added", sorted(set(after) - set(before))), ("removed", sorted(set(before) - set(after))),
                        ("changed", sorted(n for n in set(after) & set(before) if after[n] != before[n]))):
        if names:
            changes.append(f"{len(names)} source file(s) {what} (e.g. {names[0]})")
    return changes


def check_resumable(out: str, new: dict) -> None:
    """Raises a DataError unless `out` is empty of shards or holds shards made from `new`'s source and options."""
    temporary = set(temporaries(out))
    found = [p for p in existing(out) if p not in temporary]
    if not found:
        return
    old = load(out)
    if old is None:
        raise DataError("the output folder holds shards of unknown origin (no manifest.json: an older tfscale "
                        "or another tool)", where=out, fix="pass --overwrite to rebuild them, or choose another --out")
    changes = differences(old, new)
    if changes:
        raise DataError("the shards in the output folder were made from another source or with other options: "
                        + "; ".join(changes), where=out,
                        fix="pass --overwrite to rebuild them, or choose another --out")
