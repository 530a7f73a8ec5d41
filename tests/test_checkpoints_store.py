"""Checkpoints behind an object-store URL (moto's S3 server: an emulator, since no cloud is reachable here), a
SIGKILL at random points of a save, and bad URLs refused before training."""

import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import procs
import tfscale as ts
from s3 import s3_server
from tfscale.errors import ClusterError, ConfigError
from tfscale.scale.checkpoint_store import CheckpointStore

WORKER = str(procs.REPO / "tests" / "workers" / "preempt_resume.py")
SAVE_LOOP = str(procs.REPO / "tests" / "workers" / "save_loop.py")
X = np.random.RandomState(0).rand(48, 5).astype("float32")
Y = (X.sum(1) > 2.5).astype("int32")
OPTIONS = {"global_batch_size": 8, "optimizer": "sgd", "base_lr": 0.1, "seed": 7, "verbose": 0,
           "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}


def build_model():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)])


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


def _weights(path):
    data = np.load(path)
    return [data[k] for k in sorted((k for k in data.files if k[0] == "w" and k[1:].isdigit()), key=lambda k: int(k[1:]))]


def test_a_run_preempted_with_an_s3_checkpoint_dir_resumes_from_the_bucket_in_a_fresh_process(s3, tmp_path):
    s3.make_bucket("runs")
    url = "s3://runs/mlp"
    reference = procs.run_one([WORKER, str(tmp_path / "ref.npz"), str(tmp_path / "ref_ckpt")], timeout=300)
    assert reference.returncode == 0
    first = procs.run_one([WORKER, str(tmp_path / "out.npz"), url, "15"], env={**s3.env, "EVERY_STEPS": "4"},
                          timeout=300, check=False)
    assert first.returncode == 143, first.stdout[-3000:]
    listed = subprocess.run([sys.executable, "-m", "tfscale", "checkpoints", url, "--verify"], capture_output=True,
                            text=True, env=procs.base_env(**s3.env), timeout=120)
    assert listed.returncode == 0 and "epoch-00001-step-0000006" in listed.stdout, listed.stdout + listed.stderr
    assert listed.stdout.strip().endswith("resumes from epoch-00001-step-0000006"), listed.stdout
    assert not os.path.exists(tmp_path / "out.npz")
    again = procs.run_one([WORKER, str(tmp_path / "out.npz"), url], env=s3.env, timeout=300)
    assert "resumed at 1:6" in again.stdout, again.stdout[-2000:]
    for a, b in zip(_weights(tmp_path / "out.npz"), _weights(tmp_path / "ref.npz"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_sigkill_at_20_random_points_of_a_save_leaves_the_previous_or_the_new_checkpoint(s3, tmp_path, where,
                                                                                             monkeypatch):
    """The writer is SIGKILLed 20 times at random moments; after each kill the newest checkpoint that lists is
    whole (its hash matches) and is the last one committed or the one being written, never a partial one."""
    if where == "s3":
        s3.make_bucket("kills")
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
    url = str(tmp_path / "ckpt") if where == "local" else "s3://kills/run"
    env = procs.base_env(**(s3.env if where == "s3" else {}))
    rng = random.Random()
    committed, seen = 0, []
    for kill in range(20):
        writer = subprocess.Popen([sys.executable, SAVE_LOOP, url, str(committed + 1)], env=env,
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = writer.stdout.readline()  # the first commit of this start: it is running and committing
        assert line.startswith("committed"), line
        committed = int(line.split()[1])
        time.sleep(rng.uniform(0.0, 0.15))  # a moment inside the next commits
        os.killpg(writer.pid, signal.SIGKILL)
        rest = writer.stdout.read()
        writer.wait()
        committed = max([committed] + [int(x.split()[1]) for x in rest.splitlines() if x.startswith("committed")])
        store = CheckpointStore(url)
        listed = store.list()
        assert listed, "no checkpoint restores after a kill"
        newest = listed[0]
        assert store.verify(newest) is None, (kill, newest.name, store.verify(newest))
        assert newest.epoch in (committed, committed + 1), (kill, committed, newest.name)
        seen.append(newest.epoch - committed)
    print(f"{where}: newest after each kill, relative to the last commit printed: {seen}")
    store.remove_uncommitted()  # what a killed writer left (an upload or temporary file without its manifest)
    names = store.store.listdir()
    committed_files = {f for info in store.list() for f in info.files} | {f"{i.name}.json" for i in store.list()}
    assert set(names) == committed_files, sorted(set(names) - committed_files)


def test_bad_checkpoint_urls_fail_before_training_with_what_where_and_fix(s3, tmp_path, monkeypatch):
    scale = ts.Scale("default")
    with pytest.raises(ConfigError, match="ftp://") as e:
        ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir="ftp://host/run", **OPTIONS)
    assert "Where: checkpoint_dir" in str(e.value) and "Fix:" in str(e.value)
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match="no-such-bucket"):
        ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir="s3://no-such-bucket/run", **OPTIONS)
    s3.make_bucket("creds")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(ConfigError, match="(?i)credentials"):
        ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir="s3://creds/run", **OPTIONS)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{procs.free_ports(1)[0]}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.raises(ClusterError, match="127.0.0.1"):
        ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir="s3://creds/run", **OPTIONS)
