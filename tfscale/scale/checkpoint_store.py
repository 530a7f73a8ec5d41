"""The checkpoint format: what a checkpoint holds, how it is named, committed, listed, verified and pruned.

A checkpoint is two objects in one folder (a local path or an object-store URL, `tfscale.storage.Store`):

    epoch-00002-step-0000013.weights.h5    the model's weights and the optimizer's state (Keras' .weights.h5)
    epoch-00002-step-0000013.json          its manifest, written last: the commit

(A model whose variables are sharded across processes is kept as a folder ``NAME.sharded/`` instead of the
``.weights.h5``: every process writes its own shards, `tfscale.scale.sharded`; the manifest lists its files.)

The name is the input position the checkpoint resumes at: 2 epochs done and 13 steps into the third
(``epoch-00002.weights.h5`` at an epoch's end). The manifest records what the checkpoint was made under
(global batch, workers, replicas, backend, strategy, mesh, steps per epoch), why it was written (epoch end,
every N steps, every T seconds, preemption) and each file's size and CRC-32. A checkpoint exists only once
its manifest does: the weights are written first (locally to a temporary file renamed into place; to an
object store as one upload, which appears whole), so a writer killed at any point leaves either the previous
set of checkpoints or the new one, never a partial one that restores. A checkpoint whose file does not
match its manifest's hash (a bit flip, a truncated copy) is skipped with a warning naming it, and the one
before is used.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import time
import zlib
from collections.abc import Iterator

from tfscale.errors import ConfigError
from tfscale.storage import Store, sync_file

log = logging.getLogger("tfscale")

FORMAT = 1
WEIGHTS = ".weights.h5"
SHARDED = ".sharded"  # a folder: each process's shards of a model sharded across processes (JAX, orbax)
MANIFEST = ".json"
_NAME = re.compile(r"^epoch-(\d{5,})(?:-step-(\d{7,}))?$")
REASONS = ("epoch", "steps", "seconds", "preemption")


def checkpoint_name(epoch: int, step: int = 0) -> str:
    """The name of the checkpoint taken after `epoch` whole epochs and `step` steps of the next one."""
    return f"epoch-{epoch:05d}" + (f"-step-{step:07d}" if step else "")


@dataclasses.dataclass(frozen=True)
class CheckpointInfo:
    """One committed checkpoint, as its manifest describes it.

    Attributes:
        name: e.g. "epoch-00002-step-0000013".
        epoch: whole epochs done.
        step: steps done in the next epoch (0: at an epoch's end).
        global_step: training steps done in all (batches over all epochs).
        steps_per_epoch: steps in one epoch of the run that wrote it (None: not known).
        global_batch_size: examples per step over all replicas (None: not known).
        num_workers, num_replicas: the cluster it was written on.
        backend, strategy: the engine and strategy (e.g. "tensorflow", "multi_worker").
        mesh: the device mesh, {axis name: size} (JAX), else None.
        reason: "epoch", "steps", "seconds" or "preemption".
        created: seconds since the epoch when it was committed.
        files: {file name: {"bytes": n, "crc32": hex}} ("sha256" in manifests written before CRC-32: still read).
    """

    name: str
    epoch: int
    step: int
    global_step: int
    steps_per_epoch: int | None
    global_batch_size: int | None
    num_workers: int
    num_replicas: int
    backend: str
    strategy: str
    mesh: dict[str, int] | None
    reason: str
    created: float
    files: dict[str, dict]

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.step

    @property
    def bytes(self) -> int:
        return sum(int(f.get("bytes", 0)) for f in self.files.values())

    def to_json(self) -> dict:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> "CheckpointInfo":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


class CorruptCheckpoint(Exception):
    """A checkpoint whose files do not match its manifest (internal: restore skips it)."""


class CheckpointStore:
    """The checkpoints of one folder or URL (see the module docstring).

    Args:
        url: a local folder, or an object-store URL (s3://bucket/run, gs://bucket/run).
        storage_options: passed to the object store's file system (fsspec), e.g. {"anon": False}.
    """

    def __init__(self, url: str | os.PathLike, *, storage_options: dict | None = None):
        self.store = Store(url, storage_options=storage_options)
        self.url = self.store.url

    def check(self) -> None:
        """Proves the folder can be written and read now (a tfscale error saying what to fix otherwise)."""
        self.store.check()

    # ------------------------------------------------------------------ reading

    def list(self) -> list[CheckpointInfo]:
        """The committed checkpoints, newest position first (manifests read; files not hashed)."""
        found = []
        names = set(self.store.listdir())
        for entry in names:
            if not entry.endswith(MANIFEST) or not _NAME.match(entry[:-len(MANIFEST)]):
                continue
            try:
                info = CheckpointInfo.from_json(json.loads(self.store.read_bytes(self.store.join(entry))))
            except FileNotFoundError:  # pruned by the writer since the listing
                continue
            except (ValueError, TypeError, KeyError) as e:
                log.warning("checkpoint manifest %s is unreadable (%s): skipped", self.store.join(entry), e)
                continue
            if all(name.split("/")[0] in names for name in info.files):
                found.append(info)
        return sorted(found, key=lambda i: (i.epoch, i.step), reverse=True)

    def verify(self, info: CheckpointInfo) -> str | None:
        """None when every file of `info` matches its manifest (size and checksum), else what differs."""
        for name, expected in info.files.items():
            path = self.store.join(name)
            if not self.store.exists(path):
                return f"{name} is missing"
            checksum = Checksum.for_entry(expected)
            size = checksum.update_all(self.store.read_chunks(path))
            if differs := checksum.differs(size, expected):
                return f"{name} {differs}"
        return None

    def fetch(self, info: CheckpointInfo, local_dir: str) -> str:
        """A local, verified copy of `info`'s weights file (the file itself when the store is local); for a
        sharded checkpoint its folder, each file's size checked (every process reads only its own shards:
        the hashes are checked by `verify`, e.g. `tfscale checkpoints --verify`).

        Raises:
            CorruptCheckpoint: a file does not match the manifest.
        """
        if is_sharded(info):
            folder = self.store.join(info.name + SHARDED)
            for name, expected in info.files.items():
                path = self.store.join(name)
                size = os.path.getsize(path) if os.path.exists(path) else None
                if size != expected.get("bytes"):
                    raise CorruptCheckpoint(f"{path} has {size} bytes, its manifest {info.name}{MANIFEST} says "
                                            f"{expected.get('bytes')}")
            return folder
        name = info.name + WEIGHTS
        expected = info.files[name]
        if self.store.is_local:
            local = self.store.join(name)
        else:
            local = os.path.join(local_dir, name)
            self.store.get_file(self.store.join(name), local)
        checksum = Checksum.for_entry(expected)
        size = _hash_file(local, checksum)
        if differs := checksum.differs(size, expected):
            raise CorruptCheckpoint(f"{self.store.join(name)} {differs} (manifest {info.name}{MANIFEST})")
        return local

    # ------------------------------------------------------------------ writing (the chief only)

    def commit(self, local_weights: str, info: CheckpointInfo,
               digest: tuple[str, int] | None = None) -> CheckpointInfo:
        """Stores `local_weights` as `info`'s weights, then its manifest (the commit); returns the final info.

        `digest` is the file's (`Checksum` hex digest, bytes) where its writer computed it while writing
        (`keras_saving.capture`); None: the file is read and checksummed here. Either way a file renamed into place
        is synced to the disk first.
        """
        in_place = self.store.is_local and os.path.dirname(os.path.abspath(local_weights)) == self.url
        if digest is None:
            checksum = Checksum()
            size = _hash_file(local_weights, checksum, sync=in_place)
            digest = checksum.hexdigest()
        else:
            digest, size = digest
            if in_place:
                sync_file(local_weights)
        name = info.name + WEIGHTS
        info = dataclasses.replace(info, files={name: {"bytes": size, Checksum.KIND: digest}}, created=time.time())
        if in_place:
            os.replace(local_weights, self.store.join(name))  # written in the folder: renamed, not copied
        else:
            self.store.put_file(local_weights, self.store.join(name))
        self.store.write_bytes(self.store.join(info.name + MANIFEST),
                               json.dumps(info.to_json(), indent=1, sort_keys=True).encode())
        return info

    def commit_sharded(self, folder: str, info: CheckpointInfo) -> CheckpointInfo:
        """Commits the folder `save_sharded` wrote (local stores): renamed to `info.name + SHARDED`, each file
        hashed into the manifest, then the manifest written."""
        final = self.store.join(info.name + SHARDED)
        os.replace(folder, final)
        files = {}
        for root, _, names in os.walk(final):
            for file in sorted(names):
                path = os.path.join(root, file)
                checksum = Checksum()
                size = _hash_file(path, checksum)
                files[os.path.relpath(path, self.url)] = {"bytes": size, Checksum.KIND: checksum.hexdigest()}
        info = dataclasses.replace(info, files=dict(sorted(files.items())), created=time.time())
        self.store.write_bytes(self.store.join(info.name + MANIFEST),
                               json.dumps(info.to_json(), indent=1, sort_keys=True).encode())
        return info

    def prune(self, keep: int, spare: str | None = None) -> bool:
        """Removes all but the newest `keep` checkpoints (the manifest first, so none is left half-visible).

        `spare`: a local path (in this folder) where the weights file of one checkpoint removed from a local store
        is moved instead of deleted, for the next save to write over (`keras_saving.write_weights`): its blocks
        and cached pages are used again, and nothing is freed and allocated anew per save. Returns whether it was.
        """
        moved = False
        for info in self.list()[max(1, keep):]:
            moved = self.remove(info, spare=None if moved else spare) or moved
        return moved

    def remove(self, info: CheckpointInfo, spare: str | None = None) -> bool:
        """Removes a checkpoint, its manifest first; with `spare` (local stores), its weights file is moved there
        instead of deleted (see `prune`). Returns whether it was."""
        self.store.remove(self.store.join(info.name + MANIFEST))
        if is_sharded(info):
            self.store.rmtree(self.store.join(info.name + SHARDED))
        moved = False
        for name in info.files:
            if spare is not None and not moved and self.store.is_local and name.endswith(WEIGHTS):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.store.join(name), spare)
                    moved = True
                    continue
            self.store.remove(self.store.join(name))
        return moved

    def remove_uncommitted(self) -> list[str]:
        """Removes weights files without a manifest (a writer killed before its commit) and temporary files."""
        names = set(self.store.listdir())
        removed = []
        for entry in names:
            ending = next((e for e in (WEIGHTS, SHARDED) if entry.endswith(e)), None)
            stem = entry[:-len(ending)] if ending else None
            orphan = stem is not None and _NAME.match(stem) and stem + MANIFEST not in names
            if orphan or entry.startswith(".tmp-"):
                path = self.store.join(entry)
                if self.store.is_local and os.path.isdir(path):
                    self.store.rmtree(path)
                else:
                    self.store.remove(path)
                removed.append(entry)
        return removed


def is_sharded(info: CheckpointInfo) -> bool:
    """The checkpoint is a folder of shards written by every process (`tfscale.scale.sharded`)."""
    return any(name.startswith(info.name + SHARDED + "/") for name in info.files)


@functools.cache
def crc32():
    """zlib's CRC-32 function (data, running value) -> value: ISA-L's where `isal` is installed, else zlib's."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.crc32
    return isal_zlib.crc32


class Checksum:
    """A file's checksum as its manifest holds it: zlib's CRC-32 (key "crc32", 8 hex digits), or SHA-256 for the
    manifests written before (key "sha256"), still read and verified.

    It is there to find a file cut short or damaged on disk or in transfer (with its size), as TensorFlow's own
    checkpoints (CRC-32C per tensor) and object stores (CRC-32C, MD5) do, not to resist tampering. The CRC is
    zlib's, computed by ISA-L (the `isal` package, a dependency where it has wheels: the same CRC-32, with SIMD)
    and by `zlib` where it is missing: 8 MB in 0.3 ms against zlib's 1.7 ms on one core here, and SHA-256's
    ~6 ms, which was CPU taken from training at every save (benchmarks/bench_checkpoint.py).
    """

    KIND = "crc32"  # what new manifests hold

    def __init__(self, kind: str = KIND):
        self.kind = kind
        self._crc, self._sha = 0, hashlib.sha256() if kind == "sha256" else None

    @classmethod
    def for_entry(cls, expected: dict) -> "Checksum":
        """The checksum a manifest's file entry holds (CRC-32 where it holds neither: then it cannot match)."""
        return cls("sha256" if "sha256" in expected and cls.KIND not in expected else cls.KIND)

    def update(self, data) -> None:
        if self._sha is not None:
            self._sha.update(data)
        else:
            self._crc = crc32()(data, self._crc)

    def update_all(self, chunks: Iterator[bytes]) -> int:
        """Reads every chunk; returns their bytes."""
        size = 0
        for chunk in chunks:
            self.update(chunk)
            size += len(chunk)
        return size

    def hexdigest(self) -> str:
        return self._sha.hexdigest() if self._sha is not None else f"{self._crc:08x}"

    def differs(self, size: int, expected: dict) -> str | None:
        """None when `size` and this checksum are the manifest entry's, else what differs."""
        digest, wanted = self.hexdigest(), str(expected.get(self.kind))
        if size == expected.get("bytes") and digest == wanted:
            return None
        label = "CRC-32" if self.kind == "crc32" else "SHA-256"
        return f"has {size} bytes with {label} {digest[:12]}, its manifest says {expected.get('bytes')} bytes, " \
               f"{wanted[:12]}"


def _hash_file(path: str, checksum: Checksum, sync: bool = False) -> int:
    """Reads a local file once into `checksum`; returns its bytes; with `sync`, flushed to the disk too (before a
    rename)."""
    with open(path, "rb+" if sync else "rb") as f:
        size = checksum.update_all(iter(lambda: f.read(1 << 20), b""))
        if sync:
            os.fsync(f.fileno())
    return size


def check_resumable(info: CheckpointInfo, *, global_batch_size: int | None, where: str) -> None:
    """A ConfigError, before training, when this run cannot go on from `info` with the same trajectory.

    The global batch must be the one the checkpoint was trained with (the order of examples and the
    learning-rate schedule are defined per global batch). The number of workers, replicas and the mesh may
    differ (elastic resume): the weights file holds whole variables, which load onto any layout, and the
    batch plan has already checked that the replicas divide the global batch.
    """
    if info.global_batch_size and global_batch_size and info.global_batch_size != global_batch_size:
        works = [n for n in range(1, info.global_batch_size + 1) if info.global_batch_size % n == 0]
        raise ConfigError(f"checkpoint {info.name} was trained with global batch {info.global_batch_size}, and this "
                          f"run uses {global_batch_size}: the examples of each step and the learning-rate schedule "
                          "would differ", where=where,
                          fix=f"resume with global_batch_size={info.global_batch_size} (on any number of replicas "
                              f"that divides it: {', '.join(map(str, works[:12]))}), or start over in a new "
                              "checkpoint_dir or with resume=False")

