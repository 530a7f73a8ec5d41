"""Soak: N launch -> train -> kill -> restart cycles of a tiny model under `tfscale launch -n 2`.

One `tfscale launch -n 2 --max-restarts N` job trains N + 1 epochs; in each of the first N epochs
worker 1 (or, every third cycle, the chief) SIGKILLs itself mid-epoch, the launcher restarts both
workers and they resume from the chief's last checkpoint. Afterwards nothing may be left behind:

- no process of the job (launcher, workers, their children);
- no listening socket on the ports of the cluster (every attempt's);
- no tfscale temporary folder (the job runs with its own TMPDIR);
- no file in the checkpoint folder but the last checkpoint, its weights and manifest (keep_checkpoints=1).

Prints one JSON object: cycles, seconds in all, seconds per cycle, and what was checked.
Usage: python scripts/soak.py [--cycles 30] [--backend tensorflow|jax]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's tfscale (scripts/ run as a file)
from tfscale.scale.checkpoint_store import CheckpointStore  # noqa: E402 - standard library only

WORKER = '''
import os, signal, sys
import numpy as np
import tfscale as ts

out, ckpt, cycles = sys.argv[1], sys.argv[2], int(sys.argv[3])
# the cluster's ports, for the check that nothing listens on them afterwards
addresses = os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES") or ",".join(
    __import__("json").loads(os.environ.get("TF_CONFIG", '{"cluster": {"worker": []}}'))["cluster"]["worker"])
with open(os.path.join(out, f"ports-{os.getpid()}"), "w") as f:
    f.write(" ".join(a.rsplit(":", 1)[1] for a in addresses.split(",") if a))
scale = ts.Scale.auto()
import keras

rng = np.random.RandomState(0)
x = rng.rand(64, 4).astype("float32")
y = (x.sum(1) > 2).astype("int32")


class Die(keras.callbacks.Callback):
    """In epoch k < cycles, the first time (file out/killed-k): rank 1 (the chief every third cycle) dies mid-epoch."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        record = os.path.join(out, f"killed-{self.epoch}")
        victim = 0 if self.epoch % 3 == 2 else 1
        if batch == 2 and self.epoch < cycles and scale.rank == victim and not os.path.exists(record):
            open(record, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


result = ts.fit(lambda: keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), (x, y), scale=scale,
                epochs=cycles + 1, global_batch_size=16, optimizer="sgd", base_lr=0.05,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), seed=1, checkpoint_dir=ckpt,
                keep_checkpoints=1, verbose=0, callbacks=[Die()])
if scale.is_chief:
    with open(os.path.join(out, "done"), "w") as f:
        f.write(str(result.resumed_from_epoch))
'''


def listening() -> set[int]:
    """The TCP ports some socket on this host listens on (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return found


def used_ports(out: Path) -> set[int]:
    """The ports of every attempt's cluster, as its workers wrote them."""
    return {int(p) for f in out.glob("ports-*") for p in f.read_text().split()}


def job_processes(marker: str) -> list[int]:
    """PIDs whose environment holds `marker` (every process of the job inherits it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--backend", choices=("tensorflow", "jax"), default="tensorflow")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tfscale-soak-"))
    out, ckpt, tmp = work / "out", work / "ckpt", work / "tmp"
    for folder in (out, tmp):
        folder.mkdir()
    (work / "worker.py").write_text(WORKER)
    marker = f"TFSCALE_SOAK={work.name}"
    env = {**os.environ, "TMPDIR": str(tmp), "TFSCALE_SOAK": work.name, "TF_NUM_INTRAOP_THREADS": "1",
           "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tfscale", "launch", "-n", "2", "--max-restarts",
               str(args.cycles), "--backend", args.backend, "--timeout", str(60 * args.cycles + 120), "--",
               sys.executable, str(work / "worker.py"), str(out), str(ckpt), str(args.cycles)]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    deadline = time.monotonic() + 30  # stragglers of a stopped group exit just after the launcher
    while job_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    restarts = done.stdout.count("restarting all 2 worker(s)") + done.stderr.count("restarting all 2 worker(s)")
    result = {
        "cycles": args.cycles, "backend": args.backend, "exit_code": done.returncode, "restarts": restarts,
        "seconds": round(seconds, 1), "seconds_per_cycle": round(seconds / max(1, args.cycles), 2),
        "cpu_seconds_per_cycle": round((children.ru_utime + children.ru_stime) / max(1, args.cycles), 2),
        "resumed_from_epoch": (out / "done").read_text() if (out / "done").exists() else None,
        "kills": len(list(out.glob("killed-*"))),
        "processes_left": job_processes(marker),
        "ports_left": sorted(listening() & used_ports(out)),
        "temp_left": sorted(os.listdir(tmp)),
        "checkpoint_files": sorted(os.listdir(ckpt)) if ckpt.exists() else [],
        "checkpoints": [i.name for i in CheckpointStore(str(ckpt)).list()] if ckpt.exists() else [],
    }
    ok = (done.returncode == 0 and used_ports(out) and restarts == args.cycles and result["kills"] == args.cycles
          and not result["processes_left"] and not result["ports_left"] and not result["temp_left"]
          and result["checkpoints"] == [f"epoch-{args.cycles + 1:05d}"]
          and result["checkpoint_files"] == [f"epoch-{args.cycles + 1:05d}{ext}" for ext in (".json", ".weights.h5")])
    result["ok"] = ok
    print(json.dumps(result, indent=2))
    if ok:
        shutil.rmtree(work)
    else:
        print(done.stderr[-3000:], f"\n(kept for a look: {work})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
