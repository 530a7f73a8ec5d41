"""`tfscale checkpoints DIR_OR_URL [--verify] [--json]`: what a restarted run would resume from.

Lists each committed checkpoint of a folder or object-store URL, newest first: its position (epochs done,
steps into the next, global step), why it was written, what it was made under (workers, replicas, global
batch, mesh, backend), its size and, with ``--verify``, whether its files match the size and CRC-32 of its manifest.
The first intact one is what `tfscale.fit` / `scale.callbacks()` restore. Never loads TensorFlow or JAX.
"""

from __future__ import annotations

import datetime
import json

from tfscale.cli import command
from tfscale.table import render


def add_parser(subparsers) -> None:
    p = command(subparsers, "checkpoints",
                help="list a checkpoint folder or URL: step, epoch, workers, batch, size, intact",
                description="List the checkpoints of a folder or an object-store URL (s3://, gs://), newest first, "
                            "with what each was made under, and which one a restarted run resumes from.",
                examples=["tfscale checkpoints ckpt/", "tfscale checkpoints s3://bucket/run --verify",
                          "tfscale checkpoints ckpt/ --json"])
    p.add_argument("directory", metavar="DIR_OR_URL", help="the checkpoint_dir of a run")
    p.add_argument("--verify", action="store_true",
                   help="read every file and check it against its manifest's size and CRC-32 (reads the whole "
                        "checkpoint)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from tfscale.scale.checkpoint_store import CheckpointStore

    store = CheckpointStore(args.directory)
    found = store.list()
    problems = {info.name: store.verify(info) for info in found} if args.verify else {}
    resumes = next((i.name for i in found if not problems.get(i.name)), None)
    if args.json:
        print(json.dumps({"directory": store.url, "resumes_from": resumes, "checkpoints": [
            {**info.to_json(), "bytes": info.bytes, "intact": (None if not args.verify else not problems[info.name]),
             "problem": problems.get(info.name)} for info in found]}, indent=1))
        return 0
    if not found:
        print(f"{store.url}: no checkpoint (a run started with this checkpoint_dir starts from scratch)")
        return 0
    rows = []
    for info in found:
        intact = "not checked" if not args.verify else "yes" if not problems[info.name] else "NO: " + problems[info.name]
        mesh = "x".join(str(n) for n in info.mesh.values()) if isinstance(info.mesh, dict) and info.mesh else ""
        rows.append([info.name, info.epoch, info.step, info.global_step, info.reason, info.num_workers,
                     info.num_replicas, info.global_batch_size or "", mesh, info.backend, _size(info.bytes),
                     datetime.datetime.fromtimestamp(info.created).strftime("%Y-%m-%d %H:%M:%S"), intact])
    print(render(["checkpoint", "epochs", "+steps", "step", "why", "workers", "replicas", "global batch", "mesh",
                  "backend", "size", "written", "intact"], rows))
    print(f"\na restarted run resumes from {resumes}" if resumes else "\nno intact checkpoint: a run starts over")
    return 0


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
