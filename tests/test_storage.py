"""tfscale.storage.Store: one API over a local folder and an S3 URL (moto's S3 server, a real process).

The S3 side talks to moto's emulator over 127.0.0.1 (tests/s3.py): no cloud is reachable here. Each error
test gives the bad input the user would, and checks the error's type and what it names, never timings.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid

import pytest

from procs import REPO, free_ports
from s3 import s3_server
from tfscale.errors import ClusterError, ConfigError
from tfscale.storage import Store, atomic_path, atomic_write

# No credentials or endpoint from this machine's configuration, and no EC2 metadata lookup (no cloud here).
_ISOLATED = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent",
             "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def server():
    with s3_server() as s3:
        yield s3


def _aws_env(monkeypatch, **env: str) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in {**_ISOLATED, **env}.items():
        monkeypatch.setenv(name, value)


def _bucket(server) -> str:
    name = f"bkt-{uuid.uuid4().hex[:10]}"
    server.make_bucket(name)
    return name


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        return Store(tmp_path / "ckpt")
    server = request.getfixturevalue("server")
    _aws_env(monkeypatch, **server.env)
    return Store(f"s3://{_bucket(server)}/run/")


def test_round_trip(store, tmp_path):
    assert store.url.endswith("ckpt") if store.is_local else store.url.endswith("/run")
    store.check()
    assert store.listdir() == []
    store.makedirs("sub")
    store.write_bytes(store.join("a.json"), b'{"epoch": 1}')
    store.write_bytes("sub/b.bin", b"\x00" * 10)
    assert store.read_bytes(store.join("a.json")) == b'{"epoch": 1}'
    assert store.read_bytes("a.json") == b'{"epoch": 1}'  # relative to the root, too
    assert store.exists(store.join("a.json")) and store.exists(store.join("sub"))
    assert not store.exists(store.join("nothing"))
    assert store.listdir() == ["a.json", "sub"]
    assert store.listdir(store.join("sub")) == ["b.bin"]
    assert store.listdir(store.join("nothing")) == []
    assert store.size(store.join("sub", "b.bin")) == 10

    big = tmp_path / "weights.h5"
    big.write_bytes(os.urandom(3 << 20))
    store.put_file(str(big), store.join("w.h5"))
    assert store.size(store.join("w.h5")) == 3 << 20
    assert b"".join(store.read_chunks(store.join("w.h5"))) == big.read_bytes()
    store.get_file(store.join("w.h5"), str(tmp_path / "back.h5"))
    assert (tmp_path / "back.h5").read_bytes() == big.read_bytes()
    with pytest.raises(FileNotFoundError):
        store.read_bytes(store.join("nothing"))

    store.write_bytes(store.join("ckpt-1", "x"), b"1")
    store.write_bytes(store.join("ckpt-10", "x"), b"10")
    store.rmtree(store.join("ckpt-1"))  # not ckpt-10: a prefix is a folder, not a string prefix
    assert store.listdir(store.join("ckpt-10")) == ["x"] and not store.exists(store.join("ckpt-1", "x"))
    store.rmtree(store.join("ckpt-1"))  # missing: fine
    store.remove(store.join("a.json"))
    store.remove(store.join("a.json"))  # missing: fine
    assert store.listdir() == ["ckpt-10", "sub", "w.h5"]  # no temporary or probe objects left


def test_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Store("ckpt/").url == str(tmp_path / "ckpt")
    assert Store(f"file://{tmp_path}/x").url == str(tmp_path / "x")
    store = Store("ckpt")
    store.makedirs("a")
    store.write_bytes("a/f", b"1")
    store.rename_dir("a", "b")
    assert store.listdir() == ["b"] and store.read_bytes("b/f") == b"1"


def test_atomic_write_replaces_whole_with_plain_mode(tmp_path):
    path = tmp_path / "state.json"
    atomic_write(path, b"old")
    atomic_write(str(path), "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    assert os.listdir(tmp_path) == ["state.json"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask  # not mkstemp's 0600


def test_atomic_path_moves_a_whole_file_into_place_or_leaves_the_old_one(tmp_path):
    """`atomic_path`, the one local atomic writer's form for writers that take a path (model.save, savefig)."""
    path = tmp_path / "model.keras"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith("model.keras") and os.path.exists(tmp)
        with open(tmp, "wb") as f:
            f.write(b"half")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.keras"]  # no temporary file left
    with atomic_path(path, suffix=".png", sync=False) as tmp:
        assert tmp.endswith("model.keras.png")
        with open(tmp, "wb") as f:
            f.write(b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["model.keras"]


def test_s3_endpoint_from_aws_endpoint_url_s3(server, monkeypatch):
    env = dict(server.env)
    env["AWS_ENDPOINT_URL_S3"] = env.pop("AWS_ENDPOINT_URL")
    _aws_env(monkeypatch, **env)
    store = Store(f"s3://{_bucket(server)}")
    store.check()
    store.write_bytes("x", b"1")
    assert store.listdir() == ["x"]


def test_remote_has_no_atomic_rename(server, monkeypatch):
    _aws_env(monkeypatch, **server.env)
    with pytest.raises(TypeError, match="no atomic rename"):
        Store(f"s3://{_bucket(server)}/run").rename_dir("a", "b")


# ---------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("url", ["ftp://host/ckpt", "hdfs://nn/ckpt", "gcs:/x"])
def test_unknown_scheme(url):
    with pytest.raises(ConfigError) as e:
        Store(url, what="train.checkpoint_dir")
    message = str(e.value)
    assert url in message and "train.checkpoint_dir" in e.value.where
    assert "s3://bucket/prefix" in e.value.fix and "gs://bucket/prefix" in e.value.fix


@pytest.mark.parametrize(("url", "package", "extra"),
                         [("s3://bkt/run", "s3fs", "s3"), ("gs://bkt/run", "gcsfs", "gcs")])
def test_library_missing(url, package, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # as where the package is not installed
    with pytest.raises(ConfigError) as e:
        Store(url)
    assert package in e.value.what and f'pip install "{package}"' in e.value.fix and f'.[{extra}]' in e.value.fix


def test_url_without_bucket():
    with pytest.raises(ConfigError, match="names no bucket"):
        Store("s3:///run")


def test_no_such_bucket(server, monkeypatch):
    _aws_env(monkeypatch, **server.env)
    with pytest.raises(ConfigError) as e:
        Store("s3://no-such-bucket-here/run").check()
    assert "'no-such-bucket-here' does not exist" in e.value.what and server.endpoint in e.value.what
    assert "checkpoint_dir = s3://no-such-bucket-here/run" in e.value.where
    assert "create the bucket" in e.value.fix


def test_missing_credentials(server, monkeypatch):
    _aws_env(monkeypatch, AWS_ENDPOINT_URL=server.endpoint, AWS_DEFAULT_REGION="us-east-1")  # no keys at all
    with pytest.raises(ConfigError) as e:
        Store(f"s3://{_bucket(server)}/run").check()
    assert "no credentials" in e.value.what and "s3://" in e.value.where
    assert "AWS_ACCESS_KEY_ID" in e.value.fix


def test_wrong_credentials():
    # moto checks keys once its first N requests are done: the readiness probe and the bucket creation.
    with s3_server(server_env={"INITIAL_NO_AUTH_ACTION_COUNT": "2"}) as server, pytest.MonkeyPatch.context() as mp:
        server.make_bucket("bkt-auth")
        _aws_env(mp, **server.env)  # keys moto does not know
        with pytest.raises(ConfigError) as e:
            Store("s3://bkt-auth/run").check()
    assert "access denied" in e.value.what and "s3://bkt-auth/run" in e.value.where
    assert "check the keys" in e.value.fix


def test_unreachable_endpoint(monkeypatch):
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    _aws_env(monkeypatch, AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
             AWS_DEFAULT_REGION="us-east-1")
    started = time.monotonic()
    with pytest.raises(ClusterError) as e:
        Store("s3://bkt/run").check()
    print(f"unreachable endpoint reported after {time.monotonic() - started:.1f} s")
    assert endpoint in e.value.what and "does not answer" in e.value.what
    assert "AWS_ENDPOINT_URL" in e.value.fix


def test_store_gone_during_training(monkeypatch):
    with s3_server() as server:
        _aws_env(monkeypatch, **server.env)
        store = Store(f"s3://{_bucket(server)}/run")
        store.check()
    with pytest.raises(ClusterError) as e:  # the server has stopped
        store.write_bytes(store.join("epoch-00001.json"), b"{}")
    assert "could not write s3://" in e.value.what and "epoch-00001.json" in e.value.what
    assert server.endpoint in e.value.what


def test_local_folder_under_a_file(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError) as e:
        Store(tmp_path / "file" / "sub", what="train.checkpoint_dir").check()  # fails even as root
    assert f"{tmp_path / 'file'} is a file" in e.value.what
    assert e.value.where == f"train.checkpoint_dir = {tmp_path / 'file' / 'sub'}"
    assert "remove or rename" in e.value.fix


def test_local_option_rejected(tmp_path):
    with pytest.raises(ConfigError, match="storage_options apply to object-store URLs only"):
        Store(tmp_path, storage_options={"anon": True})


def test_import_loads_no_object_store_library():
    code = ("import sys, tfscale, tfscale.storage; "
            "assert not {'fsspec', 's3fs', 'botocore', 'gcsfs'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)
