"""Where checkpoints live: a local folder or an object-store URL, behind one small `Store`.

    store = Store("s3://bucket/run")      # or "gs://bucket/run", "/mnt/ckpt", "ckpt/", "file:///mnt/ckpt"
    store.check()                          # before training: writes, reads back and removes a probe object
    store.write_bytes(store.join("epoch-00001.json"), b"{}")

Local paths use `os` and `shutil` only. Object stores go through fsspec: s3fs for ``s3://`` (AWS S3 and
S3-compatible servers: MinIO, Ceph, a local emulator), gcsfs for ``gs://``. fsspec was chosen because it is
one API for every scheme (a new one is a new package, not new code here); because s3fs, through botocore,
honours the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables, so an S3-compatible server or
an emulator needs no tfscale option (checked with s3fs 2026.9.0, aiobotocore 3.10.0, botocore 1.43.117);
and because `tf.io.gfile` would tie the JAX engine to TensorFlow. Install the ``s3`` extra
(s3fs) or the ``gcs`` extra (gcsfs) (`tfscale.errors.install_hint`); credentials come from the libraries' usual chain
(AWS_ACCESS_KEY_ID / AWS_PROFILE / ~/.aws / an instance role; GOOGLE_APPLICATION_CREDENTIALS / gcloud).
``storage_options`` go to `fsspec.filesystem` for anything else (e.g. ``{"client_kwargs": {"endpoint_url":
...}}``, ``{"anon": True}``).

S3 clients are built with short timeouts (5 s to connect, 30 s to read) and two tries in all, so an
unreachable endpoint fails within about 15 s instead of minutes (a refused connection: ~1 s; a silent host
that drops it: ~11 s, measured here). Failures become tfscale errors: `ConfigError`
for what the user must fix (no such bucket, no or wrong credentials, a local folder that cannot be written)
and `ClusterError` for the network (an endpoint that does not answer), each naming the URL and operation.
A missing object stays a `FileNotFoundError`, as for a local file.

Object stores have no atomic rename: an object appears whole once its upload completes, so callers commit
with a marker object written last (see `tfscale.scale.checkpoint_store`); `rename_dir` is local only.

`PendingFile` (with `atomic_path` and `atomic_write` over it) is tfscale's one local atomic writer: what
tfscale writes whole (checkpoint manifests and copies, exports, shards, tuning state, results) goes through it.

Standard library only at import time (fsspec, s3fs, gcsfs load inside the methods that need them); imports
only `tfscale.errors`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import importlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from tfscale.errors import ClusterError, ConfigError, install_hint

_CHUNK = 1 << 20
TEMP_PREFIX = ".tmp-"  # temporary files in a store's folder start so (a killed writer's are found by it)


@dataclasses.dataclass(frozen=True)
class _Backend:
    package: str          # the fsspec implementation to import
    extra: str            # tfscale's extra that installs it
    credentials_fix: str  # where its credentials come from
    default_endpoint: str


_BACKENDS = {
    "s3": _Backend("s3fs", "s3", "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, ~/.aws/credentials, "
                   "an instance role)", "AWS S3 (no AWS_ENDPOINT_URL set)"),
    "gs": _Backend("gcsfs", "gcs", "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run "
                   "`gcloud auth application-default login`", "https://storage.googleapis.com"),
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(.*)$", re.DOTALL)  # two letters at least: not "C:\\"

# botocore's client configuration for s3fs: "total_max_attempts" counts the first try ("max_attempts" would
# count retries only: three tries, ~16 s on an endpoint that drops connections).
_S3_CONFIG = {"connect_timeout": 5, "read_timeout": 30, "retries": {"total_max_attempts": 2, "mode": "standard"}}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                 "AllAccessDisabled", "AccountProblem", "403", "Forbidden"}


class _Failure(enum.Enum):
    """What an object-store exception means for the user."""
    CREDENTIALS = "no credentials"
    DENIED = "access denied"
    NO_BUCKET = "no such bucket"
    NETWORK = "unreachable"
    MISSING = "no such object"
    LOCAL = "a local file"  # e.g. the disk a download goes to is full: the OSError stays as it is
    OTHER = "other"


class Store:
    """A folder: a local path, or an object-store URL (s3://, gs://).

    Args:
        url: a local folder (relative paths become absolute; ``file://`` URLs are local), or
            ``s3://bucket/prefix`` / ``gs://bucket/prefix``.
        what: the configuration key that named `url`, shown in errors (where=...).
        storage_options: keyword arguments for `fsspec.filesystem` (object stores only).

    Raises:
        ConfigError: an unknown scheme, a URL without a bucket, or the scheme's library is not installed.

    Methods take a `path` that is either relative to the store's root (``"a/b.json"``) or a full path or URL
    as `join` returns it.
    """

    def __init__(self, url: str | os.PathLike, *, what: str = "checkpoint_dir",
                 storage_options: dict | None = None):
        self.what = what
        self.scheme, location = _parse_url(os.fspath(url), what)
        self.is_local = self.scheme == "file"
        self._fs = None
        self._options = dict(storage_options or {})
        if self.is_local:
            if storage_options:
                raise ConfigError("storage_options apply to object-store URLs only, and this is a local folder",
                                  where=f"{what} = {url}", fix="leave storage_options out for a local folder")
            self.url = os.path.abspath(location)
            return
        backend = _BACKENDS[self.scheme]
        try:
            importlib.import_module(backend.package)
        except ImportError as e:
            raise ConfigError(f"{url!r} needs the package {backend.package}, which is not installed ({e})",
                              where=f"{what} = {url}",
                              fix=install_hint(backend.extra, backend.package)) from e
        self.url = f"{self.scheme}://{location}"
        self.bucket = location.split("/", 1)[0]

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ------------------------------------------------------------------ paths

    def join(self, *parts: str) -> str:
        """A child path (local) or URL (remote, "/"-separated) under the root."""
        if self.is_local:
            return os.path.join(self.url, *parts)
        return "/".join([self.url, *(p.strip("/") for p in parts if p.strip("/"))])

    def _path(self, path: str | os.PathLike | None) -> str:
        if path is None:
            return self.url
        path = os.fspath(path)
        if self.is_local:
            return os.path.join(self.url, path)
        return path if "://" in path else self.join(path)

    # ------------------------------------------------------------------ checking

    def check(self) -> None:
        """Proves the folder can be written and read now: creates it (local), writes, reads back, removes a probe.

        Raises:
            ConfigError: the folder cannot be created or written, the bucket does not exist, or the credentials
                are missing or refused.
            ClusterError: the object store's endpoint does not answer.
        """
        probe = self.join(f"{TEMP_PREFIX}probe-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        data = b"tfscale storage probe\n"
        if self.is_local:
            self._check_local(probe, data)
            return
        self.write_bytes(probe, data)
        back = self.read_bytes(probe)
        self.remove(probe)
        if back != data:
            raise ConfigError(f"{self.url} returned other bytes than were written to {probe}",
                              where=f"{self.what} = {self.url}",
                              fix="check the object store (a proxy or gateway rewriting objects?)")

    def _check_local(self, probe: str, data: bytes) -> None:
        where = f"{self.what} = {self.url}"
        try:
            os.makedirs(self.url, exist_ok=True)
            atomic_write(probe, data)
            with open(probe, "rb") as f:
                back = f.read()
            os.remove(probe)
        except OSError as e:
            blocker = _file_in_the_way(self.url)
            if blocker:
                what, fix = f"{blocker} is a file, so the folder {self.url} cannot exist", \
                    f"remove or rename {blocker}, or choose another {self.what}"
            elif e.errno in (errno.EACCES, errno.EPERM):
                what, fix = f"no permission to write in {self.url} ({e.strerror})", \
                    f"make it writable by this user (uid {os.getuid()}), or choose another {self.what}"
            elif e.errno == errno.EROFS:
                what, fix = f"{self.url} is on a read-only file system", f"choose a writable {self.what}"
            elif e.errno == errno.ENOSPC:
                what, fix = f"no space left to write in {self.url}", f"free space, or choose another {self.what}"
            else:
                what, fix = f"{self.url} cannot be written: {e}", f"choose a folder this user can write ({self.what})"
            raise ConfigError(what, where=where, fix=fix) from e
        if back != data:
            raise ConfigError(f"{self.url} returned other bytes than were written to {probe}", where=where,
                              fix="check the file system")

    # ------------------------------------------------------------------ reading

    def listdir(self, path: str | None = None) -> list[str]:
        """The names (not paths) directly under `path` (default: the root), sorted; [] if it does not exist."""
        target = self._path(path)
        if self.is_local:
            try:
                return sorted(os.listdir(target))
            except (FileNotFoundError, NotADirectoryError):
                return []
        with self._translating("list", target):
            try:
                entries = self._filesystem().ls(target, detail=False)
            except FileNotFoundError as e:
                if _failure(e) is _Failure.NO_BUCKET:
                    raise
                return []
        prefix = _strip_scheme(target).rstrip("/") + "/"
        return sorted(e.rstrip("/")[len(prefix):] for e in entries if e.rstrip("/").startswith(prefix))

    def exists(self, path: str) -> bool:
        target = self._path(path)
        if self.is_local:
            return os.path.exists(target)
        with self._translating("check for", target):
            return self._filesystem().exists(target)

    def read_bytes(self, path: str) -> bytes:
        target = self._path(path)
        if self.is_local:
            with open(target, "rb") as f:
                return f.read()
        with self._translating("read", target):
            return self._filesystem().cat_file(target)

    def read_chunks(self, path: str, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        """The bytes of `path` in pieces of `chunk_size` (for hashing a large file without holding it)."""
        target = self._path(path)
        if self.is_local:
            with open(target, "rb") as f:
                yield from iter(lambda: f.read(chunk_size), b"")
            return
        with self._translating("read", target), self._filesystem().open(target, "rb") as f:
            yield from iter(lambda: f.read(chunk_size), b"")

    def size(self, path: str) -> int:
        target = self._path(path)
        if self.is_local:
            return os.path.getsize(target)
        with self._translating("size", target):
            return int(self._filesystem().size(target))

    def get_file(self, path: str, local_path: str) -> None:
        """Copies `path` to the local file `local_path` (whole or not at all: a temporary file renamed)."""
        target = self._path(path)
        os.makedirs(os.path.dirname(os.path.abspath(local_path)), exist_ok=True)
        if self.is_local:
            with open(target, "rb") as src, _atomic_file(local_path) as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            return
        with self._translating("download", target), _atomic_file(local_path) as dst, \
                self._filesystem().open(target, "rb") as src:
            shutil.copyfileobj(src, dst, _CHUNK)

    # ------------------------------------------------------------------ writing

    def write_bytes(self, path: str, data: bytes) -> None:
        """Writes `path` whole or not at all (local: temporary file, fsync, rename; remote: one upload).

        A local folder that `path` is in is created first, as an object store needs none.
        """
        target = self._path(path)
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)  # as an object store: no folder to create first
            atomic_write(target, data)
            return
        with self._translating("write", target):
            self._filesystem().pipe_file(target, bytes(data))

    def put_file(self, local_path: str, path: str) -> None:
        """Uploads (remote) or copies (local, atomically) the local file `local_path` to `path`."""
        target = self._path(path)
        if self.is_local:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(local_path, "rb") as src, _atomic_file(target) as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            return
        with self._translating("upload", target):
            self._filesystem().put_file(local_path, target)

    def remove(self, path: str) -> None:
        """Removes one file or object; a missing one is fine."""
        target = self._path(path)
        if self.is_local:
            with contextlib.suppress(FileNotFoundError):
                os.remove(target)
            return
        with self._translating("remove", target), contextlib.suppress(FileNotFoundError):
            self._filesystem().rm_file(target)

    def rmtree(self, path: str) -> None:
        """Removes a folder (or prefix) and everything under it; a missing one is fine."""
        target = self._path(path)
        if self.is_local:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(target)
            return
        with self._translating("remove", target):
            try:
                self._filesystem().rm(target, recursive=True)
            except FileNotFoundError as e:
                if _failure(e) is _Failure.NO_BUCKET:
                    raise

    def makedirs(self, path: str) -> None:
        """Creates a local folder and its parents (object stores have no folders: nothing to do)."""
        if self.is_local:
            os.makedirs(self._path(path), exist_ok=True)

    def rename_dir(self, src: str, dst: str) -> None:
        """Renames a local folder atomically (`os.replace`).

        Raises:
            TypeError: the store is an object store, which has no atomic rename: commit with a marker object
                written last instead.
        """
        if not self.is_local:
            raise TypeError(f"rename_dir on {self.url}: object stores have no atomic rename; write the files, "
                            "then a marker object last, and treat only marked folders as complete")
        os.replace(self._path(src), self._path(dst))

    # ------------------------------------------------------------------ the object store

    def _filesystem(self):
        if self._fs is None:
            import fsspec  # noqa: PLC0415 (optional: object stores only)

            options = {"skip_instance_cache": True,  # each Store sees the environment of its creation
                       "use_listings_cache": False}  # other workers write too: never a stale listing
            if self.scheme == "s3":
                options["config_kwargs"] = {**_S3_CONFIG, **self._options.get("config_kwargs", {})}
            self._fs = fsspec.filesystem(self.scheme, **{**self._options, **options})
        return self._fs

    def _endpoint(self) -> str:
        client = self._options.get("client_kwargs") or {}
        if self.scheme == "s3":
            found = (client.get("endpoint_url") or self._options.get("endpoint_url")
                     or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
        else:
            found = self._options.get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST")
        return found or _BACKENDS[self.scheme].default_endpoint

    @contextlib.contextmanager
    def _translating(self, op: str, path: str) -> Iterator[None]:
        """Turns the object store's exceptions into tfscale errors naming the URL and the operation.

        A missing object stays FileNotFoundError (as for a local file); tfscale's own errors pass through.
        """
        try:
            yield
        except (ConfigError, ClusterError):
            raise
        except Exception as e:
            failure = _failure(e)
            if failure in (_Failure.MISSING, _Failure.LOCAL):
                raise
            raise self._error(failure, op, path, e) from e

    def _error(self, failure: _Failure, op: str, path: str, e: BaseException) -> Exception:
        where, backend = f"{self.what} = {self.url}", _BACKENDS[self.scheme]
        detail = f"{type(e).__name__}: {e}"
        if failure is _Failure.CREDENTIALS:
            return ConfigError(f"no credentials for {self.url}: could not {op} {path} ({detail})", where=where,
                               fix=backend.credentials_fix)
        if failure is _Failure.DENIED:
            return ConfigError(f"{self.url} refused to {op} {path}: access denied, the credentials are wrong, "
                               f"expired or lack permission ({detail})", where=where,
                               fix=f"check the keys, and that they may read, write, list and delete under "
                                   f"{self.url}; {backend.credentials_fix}")
        if failure is _Failure.NO_BUCKET:
            return ConfigError(f"the bucket {self.bucket!r} does not exist (at {self._endpoint()}): could not "
                               f"{op} {path}", where=where,
                               fix=f"create the bucket, or correct the bucket name in {self.what}")
        if failure is _Failure.NETWORK:
            return ClusterError(f"the object store at {self._endpoint()} does not answer: could not {op} {path} "
                                f"({detail})", where=where,
                                fix="check that the endpoint is right (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 or "
                                    "storage_options), that its server runs, and that this host can reach it "
                                    "(network, proxy, firewall)")
        return ClusterError(f"could not {op} {path} on {self.url} ({detail})", where=where,
                            fix="check the object store's state and logs; the operation may be retried")


def _parse_url(text: str, what: str) -> tuple[str, str]:
    """(scheme, location): ("file", a path) or ("s3" / "gs", "bucket/prefix" without a trailing slash).

    Raises:
        ConfigError: an unknown scheme, a file URL naming another host, or an object-store URL without a bucket.
    """
    match = _SCHEME.match(text)
    if not match:
        return "file", text
    scheme, rest = match.group(1).lower(), match.group(2)
    where = f"{what} = {text}"
    if scheme == "file":
        host, _, path = rest[2:].partition("/")
        if not rest.startswith("//") or host not in ("", "localhost"):
            raise ConfigError(f"{text!r} is not a local file URL", where=where,
                              fix="write file:///absolute/path (three slashes), or the path itself")
        return "file", "/" + path
    if scheme not in _BACKENDS:
        raise ConfigError(f"{text!r} has the scheme {scheme}://, which tfscale cannot store to", where=where,
                          fix="use a local folder, file:///path, "
                              + ", ".join(f"{s}://bucket/prefix" for s in _BACKENDS)
                              + f" (for a local path that contains ':', write ./{text})")
    location = rest[2:].rstrip("/") if rest.startswith("//") else ""
    if not location.split("/", 1)[0]:
        raise ConfigError(f"{text!r} names no bucket", where=where,
                          fix=f"write {scheme}://bucket/prefix (two slashes, then the bucket)")
    return scheme, location


class PendingFile:
    """A temporary file beside `path` that becomes `path` whole on `commit()`, or goes on `discard()`.

    The one local atomic writer: `atomic_write`, `atomic_path`, `Store` (checkpoint manifests), the export files,
    converted shards, tuning state and launched functions' results all write through it. The temporary
    file is ``.tmp-<pid>-<random>-<name><suffix>`` in `path`'s folder (`TEMP_PREFIX`: a killed writer's
    leftovers are found by it; it ends as `path` does, for writers that insist on an ending), created
    empty with the mode a plain `open()` gives (0666 less the umask, not mkstemp's 0600), so readers of
    the folder can read the result.

    Args:
        path: the final file (its folder must exist).
        suffix: appended to the temporary name (e.g. ".png" when `path` has another ending).
        sync: fsync the file before the rename and the folder after it (durable across a crash of the
            machine); False: atomic for readers and against a killed process only.
    """

    def __init__(self, path: str | os.PathLike, *, suffix: str = "", sync: bool = True):
        self.path = os.path.abspath(os.fspath(path))
        folder, name = os.path.split(self.path)
        self.tmp = os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}{suffix}")
        self.sync = sync
        os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))

    def commit(self) -> None:
        """Moves the temporary file onto `path` in one step (on failure it is removed)."""
        try:
            if self.sync:
                sync_file(self.tmp)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        if self.sync:
            _fsync_folder(os.path.dirname(self.path))

    def discard(self) -> None:
        """Removes the temporary file (a missing one is fine); `path` is left as it was."""
        with contextlib.suppress(OSError):
            os.remove(self.tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "", sync: bool = True) -> Iterator[str]:
    """Yields the path of a `PendingFile` to write by name; on success it becomes `path`, else it is removed.

    Example:
        with atomic_path("model.keras", sync=False) as tmp:
            model.save(tmp)
    """
    pending = PendingFile(path, suffix=suffix, sync=sync)
    try:
        yield pending.tmp
    except BaseException:
        pending.discard()
        raise
    pending.commit()


def atomic_write(path: str | os.PathLike, data: bytes | str, *, sync: bool = True) -> None:
    """Writes `path` whole or not at all through a `PendingFile` (with `sync`: flushed and fsynced).

    A reader sees the old file or the whole new one, never a part; a failure leaves no temporary file.
    `str` data is written as UTF-8.
    """
    with _atomic_file(path, sync=sync) as f:
        f.write(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike, *, sync: bool = True) -> Iterator[BinaryIO]:
    """A binary file to fill; on success it becomes `path` (`PendingFile.commit`), else it is removed."""
    with atomic_path(path, sync=sync) as tmp, open(tmp, "wb") as f:
        yield f


def sync_file(path: str) -> None:
    """Flushes a closed file's data to the disk (before a rename that must survive a crash of the machine)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: str) -> None:
    """Makes a rename in `folder` durable (where the platform allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _file_in_the_way(path: str) -> str | None:
    """The nearest existing ancestor of `path` (or `path` itself) when it is not a folder."""
    current = path
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
    return None if os.path.isdir(current) else current


def _strip_scheme(url: str) -> str:
    return url.split("://", 1)[1] if "://" in url else url


def _chain(e: BaseException) -> Iterator[BaseException]:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _failure(e: BaseException) -> _Failure:
    """What an exception from fsspec/s3fs/gcsfs (or its causes) means; the libraries load only if installed."""
    credentials, network = _library_errors()
    chain = list(_chain(e))
    codes = {str(c.response.get("Error", {}).get("Code")) for c in chain
             if isinstance(getattr(c, "response", None), dict)}
    if any(isinstance(c, credentials) for c in chain):
        return _Failure.CREDENTIALS
    # s3fs's PermissionError carries no file name (a local one does: that is LOCAL below)
    if codes & _DENIED_CODES or any(isinstance(c, PermissionError) and c.filename is None for c in chain):
        return _Failure.DENIED
    if "NoSuchBucket" in codes or any("bucket does not exist" in str(c).lower() for c in chain):
        return _Failure.NO_BUCKET
    if any(isinstance(c, network) for c in chain):
        return _Failure.NETWORK
    if isinstance(e, FileNotFoundError):
        return _Failure.MISSING
    if isinstance(e, OSError) and e.filename is not None:
        return _Failure.LOCAL
    return _Failure.OTHER


def _library_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(credential errors, network errors) of the installed object-store libraries."""
    credentials: list[type] = []
    network: list[type] = [ConnectionError, TimeoutError]  # builtins: refused, reset, timed out
    with contextlib.suppress(ImportError):
        from botocore import exceptions as boto  # noqa: PLC0415

        credentials += [boto.NoCredentialsError, boto.PartialCredentialsError]
        network += [boto.ConnectionError, boto.HTTPClientError]  # EndpointConnectionError, ConnectTimeoutError...
    with contextlib.suppress(ImportError):
        import aiohttp  # noqa: PLC0415

        network += [aiohttp.ClientConnectionError]  # ClientConnectorError (an OSError), ServerTimeoutError
    with contextlib.suppress(ImportError):
        from fsspec.exceptions import FSTimeoutError  # noqa: PLC0415

        network.append(FSTimeoutError)
    with contextlib.suppress(ImportError):
        from google.auth import exceptions as google  # noqa: PLC0415

        credentials += [google.DefaultCredentialsError]
    return tuple(credentials), tuple(network)
