"""tf.data service for real: `tfscale data serve` dispatcher + 2 workers on 127.0.0.1, a pipeline read through them."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from procs import base_env, free_ports, kill_all
from test_data_helpers import undecodable_png, write_images

import tfscale as ts
from tfscale.errors import ConfigError


def _serve(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tfscale", "data", "serve", *args], env=base_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_ready(proc: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"server exited ({proc.poll()}):\n" + "".join(lines)[-3000:])
        lines.append(line)
        if "ready" in line:
            return line
    raise AssertionError("server not ready:\n" + "".join(lines)[-3000:])


@pytest.mark.slow
def test_pipeline_through_a_dispatcher_and_two_workers(tmp_path):
    port, = free_ports(1)
    procs = [_serve(["--dispatcher", "--port", str(port)])]
    try:
        assert str(port) in _wait_ready(procs[0])
        procs += [_serve(["--worker", "--dispatcher-address", f"127.0.0.1:{port}"]) for _ in range(2)]
        for proc in procs[1:]:
            _wait_ready(proc)
        numbers = ts.data.from_numpy(np.arange(60)).map(lambda x: x * 3).service(f"127.0.0.1:{port}")
        assert sorted(int(v) for v in numbers.dataset()) == [3 * i for i in range(60)]  # each element once
        write_images(tmp_path, per_class=(5, 5))
        images = ts.data.image_folder(str(tmp_path), image_size=(8, 8)).service(f"grpc://127.0.0.1:{port}")
        batches = list(images.dataset(batch_size=4))
        assert sum(int(x.shape[0]) for x, _ in batches) == 10 and batches[0][0].shape[1:] == (8, 8, 3)
        _bad_records_reach_the_trainer(tmp_path, f"127.0.0.1:{port}")
        # parallel_epochs: every service worker produces the whole data, so with 2 workers each value twice
        twice = ts.data.from_numpy(np.arange(30)).service(f"127.0.0.1:{port}", processing_mode="parallel_epochs")
        assert sorted(int(v) for v in twice.dataset()) == sorted(list(range(30)) * 2)
        _each_worker_decodes_in_parallel_epochs(tmp_path / "parallel", f"127.0.0.1:{port}")
        assert all(p.poll() is None for p in procs)  # the servers are still up
    finally:
        kill_all(procs)
    logs = [p.stdout.read() for p in procs[1:]]  # each worker's own log names what it skipped
    joined = "".join(logs)
    assert "skipped corrupt or truncated image" in joined and "broken.png" in joined and "empty.jpg" in joined
    # the parallel_epochs pipeline's bad files: each of the two workers decoded them itself
    for i, log in enumerate(logs):
        assert "bad_a.png" in log and "bad_b.jpg" in log, f"service worker {i} never decoded the pipeline:\n{log}"
        assert "skipped undecodable image: " in log and "bad_c.png" in log, log


def _each_worker_decodes_in_parallel_epochs(root, address):
    """6 good images and 3 bad ones, read in parallel_epochs mode: each worker delivers the 6 and drops the 3 (one
    passes the checks and fails only when decoded: the good images of its batch still arrive)."""
    paths = write_images(root, per_class=(3, 3))
    (root / "class_0" / "bad_a.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (root / "class_1" / "bad_b.jpg").write_bytes(b"")
    (root / "class_1" / "bad_c.png").write_bytes(undecodable_png(open(paths[0], "rb").read()))
    pipe = ts.data.image_folder(str(root), image_size=(8, 8), on_error="skip").service(
        address, processing_mode="parallel_epochs")
    firsts = sorted(int(x[i, 0, 0, 0] * 255 + 0.5) for x, _ in pipe.dataset(batch_size=3) for i in range(x.shape[0]))
    assert firsts == sorted(list(range(6)) * 2)  # image n's pixels are n: each good image once per worker


def _bad_records_reach_the_trainer(tmp_path, address):
    """Skip mode through the service: the epoch log counts what the service workers dropped."""
    import keras

    (tmp_path / "class_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (tmp_path / "class_1" / "empty.jpg").write_bytes(b"")
    pipe = ts.data.image_folder(str(tmp_path), image_size=(8, 8), on_error="skip").service(address)
    sizes = [int(x.shape[0]) for x, _ in pipe.dataset(batch_size=4)]
    assert sorted(sizes, reverse=True) == [4, 4, 2]  # the 10 good images, in whole batches
    assert pipe.skipped == {"bad record on a tf.data service worker (its log names it)": 2}
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(pipe.dataset(batch_size=4), epochs=2, verbose=0, callbacks=[pipe.callback()])
    assert history.history["skipped_records"] == [2, 2]


def test_service_options_are_checked():
    with pytest.raises(ConfigError, match="processing_mode"):
        ts.data.from_numpy(np.arange(3)).service("127.0.0.1:1", processing_mode="sometimes")
