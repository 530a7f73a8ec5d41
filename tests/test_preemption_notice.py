"""GCE's preemption notice (`preemption.MetadataWatcher`): a metadata server announcing a preemption or a
terminating host maintenance makes training save at the next step and stop, as a signal would; off GCE nothing
is watched. The metadata server is a fake on 127.0.0.1 named by GCE_METADATA_HOST (set in every test, so no
test asks a real metadata address)."""

import http.server
import socket
import threading
import time

import keras
import numpy as np
import pytest

import tfscale as ts
from tfscale.scale import preemption
from tfscale.scale.checkpoint_store import CheckpointStore
from tfscale.scale.preemption import GCE_NOTICE, MetadataWatcher, Preempted, SignalFlag

EPOCHS, STEPS, BATCH = 3, 6, 8
RNG = np.random.RandomState(0)
X = RNG.rand(STEPS * BATCH, 5).astype("float32")
Y = (X.sum(1) > 2.5).astype("int32")
OPTIONS = {"global_batch_size": BATCH, "optimizer": "sgd", "base_lr": 0.1, "seed": 7, "verbose": 0,
           "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=True)}
PREEMPTED, MAINTENANCE = "instance/preempted", "instance/maintenance-event"
WATCHER_THREAD = "tfscale-gce-notice"


def build_model():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)])


@pytest.fixture(scope="module")
def scale():
    return ts.Scale("default")


class MetadataServer(http.server.ThreadingHTTPServer):
    """GCE's metadata server as far as preemption goes: answers with `Metadata-Flavor: Google` to requests that
    carry it (403 otherwise, as the real one), "FALSE" and "NONE" until `announce` changes a value."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), MetadataHandler)
        self.values = {"": "instance/\nproject/\n", PREEMPTED: "FALSE", MAINTENANCE: "NONE"}
        self.served: dict[tuple[str, str], int] = {}
        self.headerless = 0
        self.changed = threading.Condition()

    def announce(self, path: str, value: str) -> None:
        with self.changed:
            self.values[path] = value

    def wait_read(self, path: str, value: str, timeout: float = 30.0) -> bool:
        """Waits until a client read `value` at `path`."""
        with self.changed:
            return self.changed.wait_for(lambda: self.served.get((path, value), 0) > 0, timeout)


class MetadataHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        path = self.path.split("?")[0].removeprefix("/computeMetadata/v1/")
        if self.headers.get("Metadata-Flavor") != "Google":
            server.headerless += 1
            self.send_response(403)
            self.end_headers()
            return
        with server.changed:
            value = server.values.get(path)
        body = (value or "not found").encode()
        self.send_response(200 if value is not None else 404)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/text")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with server.changed:
            server.served[(path, value)] = server.served.get((path, value), 0) + 1
            server.changed.notify_all()

    def log_message(self, *args):
        pass


@pytest.fixture
def metadata(monkeypatch):
    server = MetadataServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{server.server_address[1]}")
    yield server
    server.shutdown()
    server.server_close()


class Announce(keras.callbacks.Callback):
    """At the end of global step n, the server announces `value` at `path` for each (n, path, value), and the
    step ends once the watcher has read it."""

    def __init__(self, server: MetadataServer, *announcements):
        super().__init__()
        self.server, self.announcements, self.seen, self.watching = server, announcements, 0, []

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        self.watching.append(_watchers() != [])
        for step, path, value in self.announcements:
            if step == self.seen:
                self.server.announce(path, value)
                assert self.server.wait_read(path, value), f"no watcher read {path} = {value}"


def _watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WATCHER_THREAD and t.is_alive()]


def _preempted_then_resumed(scale, server, tmp_path, at, path, value, *before):
    """Trains until `value` at `path` (announced at global step `at`) stops it; checks the checkpoint, resumes."""
    announce = Announce(server, *before, (at, path, value))
    with pytest.raises(Preempted) as stopped:
        ts.fit(build_model, (X, Y), scale=scale, epochs=EPOCHS, checkpoint_dir=tmp_path, callbacks=[announce],
               **OPTIONS)
    assert stopped.value.code == 143 and stopped.value.signal_name == GCE_NOTICE
    assert announce.watching[0], "no watcher thread while training on GCE"
    newest = CheckpointStore(str(tmp_path)).list()[0]
    # read after tfscale's check of step `at`: saved at a step's end after it, before the end of training
    assert newest.reason == "preemption" and at <= newest.global_step < EPOCHS * STEPS, newest
    assert stopped.value.checkpoint == newest.name and newest.step != 0, newest
    assert server.headerless == 0
    server.announce(path, {PREEMPTED: "FALSE", MAINTENANCE: "NONE"}[path])  # the VM restarted
    resumed = ts.fit(build_model, (X, Y), scale=scale, epochs=EPOCHS, checkpoint_dir=tmp_path, **OPTIONS)
    assert (resumed.resumed_from_epoch, resumed.resumed_from_step) == (newest.epoch, newest.step)
    assert resumed.history.epoch == list(range(newest.epoch, EPOCHS))
    for thread in _watchers():  # stopped at the end of fit: it ends within one poll
        thread.join(30)
    assert _watchers() == []
    return newest


def test_a_gce_preemption_notice_saves_at_the_next_step_and_the_rerun_resumes_there(scale, metadata, tmp_path):
    newest = _preempted_then_resumed(scale, metadata, tmp_path, STEPS + 2, PREEMPTED, "TRUE")
    print(f"notice read at the end of step {STEPS + 2}: saved {newest.name} (global step {newest.global_step})")


def test_a_terminating_host_maintenance_saves_and_the_rerun_resumes_but_a_migration_does_not(scale, metadata,
                                                                                            tmp_path):
    newest = _preempted_then_resumed(scale, metadata, tmp_path, STEPS + 3, MAINTENANCE, "TERMINATE_ON_HOST_MAINTENANCE",
                                     (2, MAINTENANCE, "MIGRATE_ON_HOST_MAINTENANCE"))
    print(f"termination read at the end of step {STEPS + 3}: saved {newest.name} (global step {newest.global_step})")


def test_off_gce_no_watcher_starts_and_start_up_does_not_wait(scale, tmp_path, monkeypatch):
    with socket.socket() as s:  # a port nothing listens on: no metadata server there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{port}")
    announce = Announce(None)
    began = time.monotonic()
    result = ts.fit(build_model, (X, Y), scale=scale, epochs=1, checkpoint_dir=tmp_path, callbacks=[announce],
                    **OPTIONS)
    print(f"fit with nothing answering at GCE_METADATA_HOST: {time.monotonic() - began:.2f} s")
    assert result.history.epoch == [0] and not any(announce.watching)
    assert [i.reason for i in CheckpointStore(str(tmp_path)).list()] == ["epoch"]
    # no variable and firmware that is not Google's: no metadata server is asked at all
    monkeypatch.delenv("GCE_METADATA_HOST")
    firmware = tmp_path / "product_name"
    firmware.write_text("Standard PC (Q35 + ICH9, 2009)\n")
    monkeypatch.setattr(preemption, "DMI_PRODUCT_NAME", str(firmware))
    began = time.monotonic()
    watcher = MetadataWatcher(SignalFlag())
    assert watcher.start() is False and _watchers() == []
    print(f"MetadataWatcher.start off GCE: {time.monotonic() - began:.4f} s")
