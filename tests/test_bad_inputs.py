"""Bad inputs, one table: every command and public function ends in a tfscale error, and writes nothing.

Each case makes one bad input in a fresh folder, runs one `tfscale` command (in this process, through
`tfscale.cli.main`) or one public function, and expects:

- the error class tfscale raises (a `TfscaleError` kind) and words of its message, with its three parts:
  what went wrong, where, and how to fix it;
- for the command line: exit code 2 and one line on stderr, ``tfscale COMMAND: what. Where: ... Fix: ...``,
  and no traceback on stdout or stderr;
- nothing half-written: the folder holds exactly the files it held before (same bytes), so the output a
  command was asked to write does not exist, an existing one is unchanged, and no temporary file is left.

Three cases run `python -m tfscale` in a fresh process: the launcher's (no TensorFlow there, so it is cheap),
one that needs its own TensorFlow (CPU replicas are fixed when TensorFlow first starts its devices), and an
unreadable file's, as an unprivileged user (root reads any file: uid 65534 through `setpriv` there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

import procs
import tfscale as ts
from tfscale.cli import launch as launch_cli
from tfscale.cli import main
from tfscale.data.images.codecs import TOO_LARGE
from tfscale.errors import ClusterError, ConfigError, DataError, ExportError, TfscaleError


# --------------------------------------------------------------------------- bad inputs, made small


def png(width: int, height: int, *, rows: int | None = None) -> bytes:
    """A grey PNG (8-bit RGB). rows: how many rows the pixel data holds (fewer than `height`: a header that lies)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = b"".join(b"\x00" + bytes([128]) * (3 * width) for _ in range(height if rows is None else rows))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


BOMB = png(100_000, 100_000, rows=1)  # 10 billion pixels claimed in ~400 bytes


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def photos(tmp: Path, *extra: tuple[str, bytes]) -> None:
    """tmp/photos/{cats,dogs}/ with two good 8x8 PNGs each, plus `extra` (relative name, bytes)."""
    for label in ("cats", "dogs"):
        for i in range(2):
            write(tmp / "photos" / label / f"{i}.png", png(8, 8))
    for name, data in extra:
        write(tmp / "photos" / name, data)


def csv_file(tmp: Path, text: str = "id,x,label\nr0,0.5,1\nr1,1.5,0\n") -> None:
    write(tmp / "rows.csv", text)


def run_file(tmp: Path, *, strategy: str = '"default"', train: str = "epochs = 1\nglobal_batch_size = 4",
             data: str = "tinymod:data") -> None:
    """A `tfscale train` run file and its module (a tiny model and eight examples) in tmp."""
    write(tmp / "tinymod.py", "import keras, numpy as np\n"
                              "def build():\n"
                              "    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])\n"
                              "def data():\n"
                              "    return np.zeros((8, 4), 'float32'), np.zeros(8, 'int32')\n")
    write(tmp / "run.toml", f'model = "tinymod:build"\nstrategy = {strategy}\n\n[data]\ntrain = "{data}"\n\n'
                      f'[train]\n{train}\nloss = "sparse_categorical_crossentropy"\n')


def tune_file(tmp: Path, tune: str) -> None:
    write(tmp / "tune.toml", f'model = "m:build"\n\n[data]\ntrain = "m:data"\n\n[tune]\n{tune}\n')


def not_utf8(path: Path) -> Callable[[Path], None]:
    return lambda tmp: write(tmp / path, b"\xff\xfe\x00garbage\x81")


def taken_port(tmp: Path) -> dict:
    """A port held by a listening socket on 127.0.0.1 for the length of the case."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return {"port": str(sock.getsockname()[1]), "_close": [sock]}


def unreadable(path: Path, data: str = "") -> Callable[[Path], None]:
    """A file without read permission (for root, still readable: run the case `unprivileged`)."""
    return lambda tmp: write(tmp / path, data).chmod(0)


# --------------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: the test id.
        make: writes the bad input into the case's folder; may return placeholders for `run`
            ("_close": things to close afterwards).
        run: the `tfscale` argv (placeholders {tmp}, {models}, and those `make` returned), or a function
            (tmp, models) -> anything for a Python call.
        error: the tfscale error class expected.
        says: words the message must hold.
        out: the path (relative to tmp) the call was asked to write: it must not exist afterwards,
            unless `make` wrote it, and then it must be unchanged.
        fresh: run `python -m tfscale` in a new process.
        unprivileged: with `fresh`, as uid 65534 where this process is root (file permissions bind it then).
        env: environment variables for the case.
    """

    id: str
    make: Callable[[Path], Any] | None
    run: tuple[str, ...] | Callable[[Path, Any], Any]
    error: type[TfscaleError]
    says: tuple[str, ...]
    out: str | None = None
    fresh: bool = False
    unprivileged: bool = False
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def command(self) -> str | None:
        return None if callable(self.run) else self.run[0]


def tf_config(value) -> dict[str, str]:
    return {"TF_CONFIG": value if isinstance(value, str) else json.dumps(value)}


TWO_WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
TFDS = importlib.util.find_spec("tensorflow_datasets") is not None

CASES = [
    # ---- tfscale train: the run file and --set
    Case("train-missing-file", None, ("train", "{tmp}/nope.toml"), ConfigError, ("nope.toml", "does not exist")),
    Case("train-directory", lambda t: (t / "run.toml").mkdir(), ("train", "{tmp}/run.toml"), ConfigError,
         ("run.toml", "is a folder")),
    Case("train-path-through-a-file", lambda t: write(t / "run.toml", ""), ("train", "{tmp}/run.toml/x.toml"),
         ConfigError, ("x.toml", "cannot be read")),
    Case("train-unreadable", unreadable(Path("run.toml"), "x = 1"), ("train", "{tmp}/run.toml"), ConfigError,
         ("run.toml", "cannot be read"), fresh=True, unprivileged=True),
    Case("train-not-utf8", not_utf8(Path("run.toml")), ("train", "{tmp}/run.toml"), ConfigError,
         ("run.toml", "UTF-8")),
    Case("train-empty-file", lambda t: write(t / "run.toml", ""), ("train", "{tmp}/run.toml"), ConfigError,
         ("model", "module:function")),
    Case("train-not-toml", lambda t: write(t / "run.toml", "model = [unclosed\n"), ("train", "{tmp}/run.toml"),
         ConfigError, ("not valid TOML",)),
    Case("train-unknown-key", lambda t: run_file(t, train="epoch = 2\nglobal_batch_size = 4"),
         ("train", "{tmp}/run.toml"), ConfigError, ("unknown key 'train.epoch'", "did you mean 'epochs'")),
    Case("train-wrong-type", lambda t: run_file(t, train='epochs = "two"\nglobal_batch_size = 4'),
         ("train", "{tmp}/run.toml"), ConfigError, ("'train.epochs' must be a whole number", "'two'")),
    Case("train-zero-batch", lambda t: run_file(t, train="global_batch_size = 0"), ("train", "{tmp}/run.toml"),
         ConfigError, ("global_batch_size must be at least 1, got 0", "train.global_batch_size")),
    Case("train-negative-batch", lambda t: run_file(t, train="per_replica_batch_size = -8"),
         ("train", "{tmp}/run.toml"), ConfigError, ("per_replica_batch_size must be at least 1, got -8",)),
    Case("train-set-unknown-key", run_file, ("train", "{tmp}/run.toml", "--set", "train.epoch=3"), ConfigError,
         ("unknown key 'train.epoch'", "did you mean 'epochs'")),
    Case("train-set-without-value", run_file, ("train", "{tmp}/run.toml", "--set", "train.epochs"), ConfigError,
         ("not of the form key=value", "--set")),
    Case("train-unknown-strategy", lambda t: run_file(t, strategy='"warp_drive"'), ("train", "{tmp}/run.toml"),
         ConfigError, ("warp_drive", "mirrored")),
    Case("train-missing-preset", lambda t: run_file(t, strategy='"presets/none.toml"'), ("train", "{tmp}/run.toml"),
         ConfigError, ("presets/none.toml", "does not exist")),
    Case("train-missing-module", lambda t: run_file(t, data="no_such_module:data"), ("train", "{tmp}/run.toml"),
         ConfigError, ("no_such_module", "cannot be imported")),
    Case("train-replicas-do-not-divide-the-batch",
         lambda t: run_file(t, strategy='{ name = "mirrored", replicas = 3 }', train="global_batch_size = 64"),
         ("train", "{tmp}/run.toml"), ConfigError, ("64 does not divide evenly over 3 replicas", "63 or 66"),
         fresh=True),

    # ---- strategies, presets and TF_CONFIG: ts.Scale, tfscale info
    Case("Scale-unknown-strategy", None, lambda t, m: ts.Scale("warp_drive"), ConfigError, ("warp_drive", "mirrored")),
    Case("Scale-unknown-option", None, lambda t, m: ts.Scale("default", replica=2), ConfigError,
         ("replica", "replicas")),
    Case("Scale-zero-replicas", None, lambda t, m: ts.Scale("mirrored", replicas=0), ConfigError,
         ("replicas must be at least 1",)),
    Case("Scale.from_preset-missing", None, lambda t, m: ts.Scale.from_preset(t / "none.toml"), ConfigError,
         ("none.toml", "does not exist")),
    Case("Scale.from_preset-unknown-key", lambda t: write(t / "p.toml", 'name = "default"\nreplicaz = 2\n'),
         lambda t, m: ts.Scale.from_preset(t / "p.toml"), ConfigError, ("unknown key", "replicaz", "replicas")),
    Case("Scale.auto-TF_CONFIG-bad-json", None, lambda t, m: ts.Scale.auto(), ClusterError,
         ("TF_CONFIG is not valid JSON",), env=tf_config("{'cluster': ")),
    Case("Scale.auto-TF_CONFIG-missing-task", None, lambda t, m: ts.Scale.auto(), ClusterError,
         ("no 'task'", '"task": {"type": "worker", "index": 0}'), env=tf_config({"cluster": TWO_WORKERS})),
    Case("info-TF_CONFIG-bad-json", None, ("info",), ClusterError, ("TF_CONFIG is not valid JSON",),
         env=tf_config("not json")),
    Case("info-TF_CONFIG-index-out-of-range", None, ("info", "--json"), ClusterError,
         ("task index 2 is out of range", "TF_CONFIG.task.index", "0 to 1"),
         env=tf_config({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 2}})),
    Case("info-TF_CONFIG-unknown-job", None, ("info",), ClusterError, ("unknown job 'trainer'",),
         env=tf_config({"cluster": {"trainer": ["127.0.0.1:1"]}, "task": {"type": "trainer", "index": 0}})),
    Case("demo-zero-replicas", None, ("demo", "--replicas", "0", "--out", "{tmp}/demo"), ConfigError,
         ("replicas must be at least 1",), out="demo"),

    # ---- training: ts.fit and Scale.distribute
    Case("fit-unknown-option", None, lambda t, m: ts.fit(lambda: m.model, (m.x, m.y), epochz=2, global_batch_size=4),
         ConfigError, ("epochz", "epochs")),
    Case("fit-zero-batch", None, lambda t, m: ts.fit(lambda: m.model, (m.x, m.y), global_batch_size=0), ConfigError,
         ("global_batch_size must be at least 1, got 0",)),
    Case("distribute-no-batch-size", None, lambda t, m: ts.Scale("default", cluster="none").distribute((m.x, m.y)),
         ConfigError, ("no batch size given",)),
    Case("distribute-zero-batch", None,
         lambda t, m: ts.Scale("default", cluster="none").distribute((m.x, m.y), global_batch_size=0), ConfigError,
         ("global batch size must be at least 1, got 0",)),

    # ---- ts.data factories
    Case("image_folder-missing", None, lambda t, m: ts.data.image_folder(str(t / "photos"), (8, 8)), DataError,
         ("photos", "does not exist")),
    Case("image_folder-is-a-file", lambda t: write(t / "photos", png(8, 8)),
         lambda t, m: ts.data.image_folder(str(t / "photos"), (8, 8)), DataError, ("photos", "is a file")),
    Case("image_folder-empty", lambda t: (t / "photos" / "cats").mkdir(parents=True),
         lambda t, m: ts.data.image_folder(str(t / "photos"), (8, 8)), DataError, ("no image files found",)),
    Case("image_folder-no-images-only-other-files",
         lambda t: (write(t / "photos" / "cats" / "notes.txt", "meow"), write(t / "photos" / "dogs" / "a.csv", "1")),
         lambda t, m: ts.data.image_folder(str(t / "photos"), (8, 8)), DataError, ("no image files found", ".png")),
    Case("image_folder-text-named-png", lambda t: photos(t, ("dogs/fake.png", "this is text")),
         lambda t, m: list(ts.data.image_folder(str(t / "photos"), (8, 8))), DataError,
         ("corrupt or truncated image", "fake.png")),
    Case("image_folder-truncated-png", lambda t: photos(t, ("cats/cut.png", png(8, 8)[:40])),
         lambda t, m: list(ts.data.image_folder(str(t / "photos"), (8, 8))), DataError,
         ("corrupt or truncated image", "cut.png")),
    Case("image_folder-decompression-bomb", lambda t: photos(t, ("dogs/bomb.png", BOMB)),
         lambda t, m: list(ts.data.image_folder(str(t / "photos"), (8, 8))), DataError,
         ("image too large", "bomb.png")),
    Case("image_folder-decompression-bomb-any-size", lambda t: photos(t, ("dogs/bomb.png", BOMB)),
         lambda t, m: list(ts.data.image_folder(str(t / "photos"))), DataError, ("image too large", "bomb.png")),
    Case("image_folder-unknown-class", photos,
         lambda t, m: ts.data.image_folder(str(t / "photos"), (8, 8), class_names=["cats", "birds"]), DataError,
         ("['birds'] not found", "cats")),
    Case("image_folder-bad-size", photos, lambda t, m: ts.data.image_folder(str(t / "photos"), (0, 8)), ConfigError,
         ("image_size",)),
    Case("image_folder-bad-on_error", photos,
         lambda t, m: ts.data.image_folder(str(t / "photos"), (8, 8), on_error="ignore"), ConfigError,
         ("on_error='ignore'", "'skip'")),
    Case("csv-without-the-label-column", csv_file, lambda t, m: ts.data.csv(str(t / "rows.csv"), label="target"),
         DataError, ("['target']", "label", "['id', 'x', 'label']")),
    Case("csv-missing", None, lambda t, m: ts.data.csv(str(t / "rows.csv")), DataError, ("rows.csv", "does not exist")),
    Case("csv-empty", lambda t: write(t / "rows.csv", ""), lambda t, m: ts.data.csv(str(t / "rows.csv")), DataError,
         ("CSV file is empty",)),
    Case("csv-empty-folder", lambda t: (t / "tables").mkdir(), lambda t, m: ts.data.csv(str(t / "tables")),
         DataError, ("no csv files found",)),
    Case("csv-unknown-columns", csv_file, lambda t, m: ts.data.csv(str(t / "rows.csv"), columns=["x", "price"]),
         DataError, ("columns names unknown column(s) ['price']", "rows.csv")),
    Case("csv-malformed-row", lambda t: csv_file(t, "id,x,label\nr0,0.5,1\nr1,oops,2\n"),
         lambda t, m: list(ts.data.csv(str(t / "rows.csv"), column_types={"x": "float"})), DataError,
         ("malformed CSV row", "rows.csv:3")),
    Case("csv-two-character-delimiter", csv_file, lambda t, m: ts.data.csv(str(t / "rows.csv"), delimiter=";;"),
         ConfigError, ("delimiter must be one character",)),
    Case("tfrecord-missing", None, lambda t, m: ts.data.tfrecord(str(t / "a.tfrecord"), {"v": "int64"}), DataError,
         ("a.tfrecord", "does not exist")),
    Case("text_lines-missing", None, lambda t, m: ts.data.text_lines(str(t / "corpus.txt")), DataError,
         ("corpus.txt", "does not exist")),
    Case("from_numpy-uneven-lengths", None, lambda t, m: ts.data.from_numpy(np.zeros(3), np.zeros(4)), DataError,
         ("different lengths [3, 4]",)),
    Case("from_pandas-without-the-label-column", None,
         lambda t, m: ts.data.from_pandas(__import__("pandas").DataFrame({"x": [1.0, 2.0]}), label="y"), DataError,
         ("label column 'y' not found", "['x']")),
    Case("from_numpy-nothing", None, lambda t, m: ts.data.from_numpy(), ConfigError, ("at least one array",)),
    Case("from_dask-not-a-frame", None, lambda t, m: ts.data.from_dask([1, 2]), ConfigError,
         ("needs a dask DataFrame",)),
    Case("tfds-not-prepared" if TFDS else "tfds-not-installed", None,
         lambda t, m: ts.data.tfds("mnist", data_dir=str(t / "tfds")), DataError if TFDS else ConfigError,
         ("mnist", "never downloads") if TFDS else ("tensorflow-datasets", "pip install")),

    # ---- tfscale data convert / inspect / serve
    Case("data-convert-missing-source", None, ("data", "convert", "{tmp}/photos", "--out", "{tmp}/shards",
                                               "--shards", "2"), DataError, ("does not exist", "photos"), out="shards"),
    Case("data-convert-zero-shards", photos, ("data", "convert", "{tmp}/photos", "--out", "{tmp}/shards",
                                              "--shards", "0"), ConfigError, ("--shards must be >= 1",), out="shards"),
    Case("data-convert-no-images", lambda t: write(t / "photos" / "cats" / "notes.txt", "meow"),
         ("data", "convert", "{tmp}/photos", "--out", "{tmp}/shards", "--shards", "2"), DataError,
         ("no image files found",), out="shards"),
    Case("data-convert-truncated-png", lambda t: photos(t, ("cats/cut.png", png(8, 8)[:40])),
         ("data", "convert", "{tmp}/photos", "--out", "{tmp}/shards", "--shards", "1"), DataError,
         ("corrupt or truncated image", "cut.png"), out="shards"),
    Case("data-convert-decompression-bomb", lambda t: photos(t, ("dogs/bomb.png", BOMB)),
         ("data", "convert", "{tmp}/photos", "--out", "{tmp}/shards", "--shards", "2"), DataError,
         ("image too large", "bomb.png"), out="shards"),
    Case("data-convert-csv-without-the-label-column", csv_file,
         ("data", "convert", "{tmp}/rows.csv", "--out", "{tmp}/shards", "--shards", "2", "--label", "target"),
         DataError, ("target",), out="shards"),
    Case("data-inspect-missing", None, ("data", "inspect", "{tmp}/nothing"), DataError,
         ("nothing to inspect", "nothing")),
    Case("data-inspect-zero-batch", photos, ("data", "inspect", "{tmp}/photos", "--batch-size", "0"), ConfigError,
         ("batch",)),
    Case("data-serve-worker-without-dispatcher", None, ("data", "serve", "--worker"), ConfigError,
         ("--worker needs --dispatcher-address",)),

    # ---- tfscale export and quantize, ts.export.*
    Case("export-missing-model", None, ("export", "{tmp}/nope.keras", "--format", "tflite", "--out", "{tmp}/m.tflite"),
         ConfigError, ("nope.keras", "does not exist"), out="m.tflite"),
    Case("export-model-is-a-folder", lambda t: (t / "m.keras").mkdir(),
         ("export", "{tmp}/m.keras", "--format", "tflite", "--out", "{tmp}/m.tflite"), ConfigError,
         ("m.keras", "is a folder"), out="m.tflite"),
    Case("export-keras-that-is-text", lambda t: write(t / "m.keras", "not a model"),
         ("export", "{tmp}/m.keras", "--format", "tflite", "--out", "{tmp}/m.tflite"), ConfigError,
         ("m.keras", "not a .keras model"), out="m.tflite"),
    Case("export-keras-zip-without-a-model", lambda t: zipfile.ZipFile(t / "m.keras", "w").close(),
         ("export", "{tmp}/m.keras", "--format", "tflite", "--out", "{tmp}/m.tflite"), ConfigError,
         ("m.keras", "not a .keras model"), out="m.tflite"),
    Case("export-lambda-layer-refused", None,
         ("export", "{models}/lambda.keras", "--format", "tflite", "--out", "{tmp}/m.tflite"), ConfigError,
         ("Lambda", "--unsafe-deserialization"), out="m.tflite"),
    Case("export-target-exists", lambda t: write(t / "m.tflite", "previous"),
         ("export", "{models}/model.keras", "--format", "tflite", "--out", "{tmp}/m.tflite"), ExportError,
         ("already exists", "--overwrite"), out="m.tflite"),
    Case("export-saved-model-target-exists", lambda t: write(t / "sm" / "saved_model.pb", "previous"),
         ("export", "{models}/model.keras", "--format", "saved_model", "--out", "{tmp}/sm"), ExportError,
         ("already exists",), out="sm"),
    Case("export-unknown-quantize-mode", None, ("export", "{models}/model.keras", "--format", "tflite", "--quantize",
                                                "int3", "--out", "{tmp}/m.tflite"), ConfigError,
         ("'int3'", "int8"), out="m.tflite"),
    Case("export-quantize-for-saved-model", None, ("export", "{models}/model.keras", "--format", "saved_model",
                                                   "--quantize", "int8", "--out", "{tmp}/sm"), ConfigError,
         ("--quantize applies to tflite and keras only",), out="sm"),
    Case("export-int8-without-calibration", None, ("export", "{models}/model.keras", "--format", "tflite",
                                                   "--quantize", "int8", "--out", "{tmp}/m.tflite"), DataError,
         ("calibration",), out="m.tflite"),
    Case("export-keras-not-ending-in-keras", None, ("export", "{models}/model.keras", "--format", "keras", "--out",
                                                    "{tmp}/m.h5"), ConfigError, ("must end in .keras",), out="m.h5"),
    Case("export-eval-wrong-shape", None, ("export", "{models}/model.keras", "--format", "tflite", "--out",
                                           "{tmp}/m.tflite", "--eval", "{models}/wrong.npz"), DataError,
         ("shape (6, 5)", "(N, 4)"), out="m.tflite"),
    Case("export-eval-without-x", None, ("export", "{models}/model.keras", "--format", "tflite", "--out",
                                         "{tmp}/m.tflite", "--eval", "{models}/no_x.npz"), DataError,
         ("not an array named x",), out="m.tflite"),
    Case("export-eval-not-npz", lambda t: write(t / "e.npz", "text"),
         ("export", "{models}/model.keras", "--format", "tflite", "--out", "{tmp}/m.tflite", "--eval", "{tmp}/e.npz"),
         DataError, ("e.npz is not an .npz file",), out="m.tflite"),
    Case("quantize-eval-missing", None, ("quantize", "{models}/model.keras", "--eval", "{tmp}/none.npz", "--out",
                                         "{tmp}/q"), DataError, ("none.npz does not exist",), out="q"),
    Case("quantize-eval-wrong-shape", None, ("quantize", "{models}/model.keras", "--eval", "{models}/wrong.npz",
                                             "--out", "{tmp}/q"), DataError, ("shape (6, 5)",), out="q"),
    Case("quantize-eval-image-folder-with-a-bomb", lambda t: photos(t, ("dogs/bomb.png", BOMB)),
         ("quantize", "{models}/images.keras", "--eval", "{tmp}/photos", "--out", "{tmp}/q"), DataError,
         ("image too large", "bomb.png"), out="q"),
    Case("quantize-unknown-mode", None, ("quantize", "{models}/model.keras", "--eval", "{models}/eval.npz", "--modes",
                                         "int8,int2", "--out", "{tmp}/q"), ConfigError, ("'int2'",), out="q"),
    Case("quantize-lambda-layer-refused", None, ("quantize", "{models}/lambda.keras", "--eval", "{models}/eval.npz",
                                                 "--out", "{tmp}/q"), ConfigError,
         ("Lambda", "--unsafe-deserialization"), out="q"),
    Case("quantize-report-exists", lambda t: write(t / "q" / "report.png", "previous"),
         ("quantize", "{models}/model.keras", "--eval", "{models}/eval.npz", "--out", "{tmp}/q"), ExportError,
         ("already exists",), out="q"),
    Case("export.tflite-target-exists", lambda t: write(t / "m.tflite", "previous"),
         lambda t, m: ts.export.tflite(m.model, t / "m.tflite"), ExportError, ("already exists",), out="m.tflite"),
    Case("export.tflite-not-a-model", None, lambda t, m: ts.export.tflite("model.keras", t / "m.tflite"), ExportError,
         ("expected a Keras 3 model, got str",), out="m.tflite"),
    Case("export.tflite-calibration-wrong-shape", None,
         lambda t, m: ts.export.tflite(m.model, t / "m.tflite", quantize="int8", calibration=np.zeros((6, 5))),
         DataError, ("shape (6, 5)",), out="m.tflite"),
    Case("export.saved_model-over-a-file", lambda t: write(t / "sm", "previous"),
         lambda t, m: ts.export.saved_model(m.model, t / "sm", overwrite=True), ExportError,
         ("is a file, not a directory",), out="sm"),
    Case("export.keras_quantized-unknown-mode", None,
         lambda t, m: ts.export.keras_quantized(m.model, t / "q.keras", mode="int2"), ConfigError, ("'int2'",),
         out="q.keras"),
    Case("export.quantize_all-eval-wrong-shape", None,
         lambda t, m: ts.export.quantize_all(m.model, t / "q", eval_data=(np.zeros((6, 5)), np.zeros(6))), DataError,
         ("shape (6, 5)",), out="q"),
    Case("export.validate-missing-file", None,
         lambda t, m: ts.export.validate(t / "none.tflite", m.model, (m.x, m.y), latency_runs=1), ExportError,
         ("none.tflite",)),

    # ---- tfscale tune
    Case("tune-missing-run-file", None, ("tune", "{tmp}/none.toml"), ConfigError, ("none.toml", "does not exist")),
    Case("tune-unknown-key", lambda t: tune_file(t, 'tuner = "random"\nmax_trial = 2'), ("tune", "{tmp}/tune.toml"),
         ConfigError, ("unknown key 'tune.max_trial'", "max_trials")),
    Case("tune-zero-trials", lambda t: tune_file(t, 'tuner = "random"\nmax_trials = 0'), ("tune", "{tmp}/tune.toml"),
         ConfigError, ("max_trials must be at least 1",)),

    # ---- tfscale launch and ts.launch
    Case("launch-zero-workers", None, ("launch", "-n", "0", "--", sys.executable, "-c", "pass"), ConfigError,
         ("workers must be at least 1, got 0", "-n")),
    Case("launch-zero-workers-fresh-process", None, ("launch", "-n", "0", "--", sys.executable, "-c", "pass"),
         ConfigError, ("workers must be at least 1, got 0", "-n"), fresh=True),
    Case("launch-command-not-found", None, ("launch", "-n", "1", "--", "{tmp}/no-such-command"), ClusterError,
         ("cannot start worker w0", "no-such-command")),
    Case("launch-no-command", None, ("launch", "-n", "2"), ConfigError, ("no command to launch", "--")),
    Case("launch-port-in-use", taken_port, ("launch", "-n", "1", "--hosts", "127.0.0.1:{port}", "--",
                                            sys.executable, "-c", "pass"), ClusterError,
         ("port {port} on this host is not free",)),
    Case("launch-missing-hosts-file", None, ("launch", "--hosts-file", "{tmp}/hosts.txt", "--", "true"), ConfigError,
         ("cannot read the hosts file", "hosts.txt")),
    Case("launch-negative-restarts", None, ("launch", "-n", "1", "--max-restarts", "-1", "--", "true"), ConfigError,
         ("max_restarts must be >= 0",)),
    Case("launch-nnodes-without-hosts", None, ("launch", "--nnodes", "2", "--", "true"), ConfigError,
         ("--nnodes/--node-rank need the hosts",)),
    Case("launch.fn-zero-workers", None, lambda t, m: ts.launch(print, n=0), ConfigError,
         ("workers must be at least 1, got 0",)),
]

assert len({case.id for case in CASES}) == len(CASES), "case ids must be unique"


# --------------------------------------------------------------------------- shared model files


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny saved models and arrays the export cases read: never changed by a case."""
    folder = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.save(folder / "model.keras")
    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Dense(3)]).save(
        folder / "lambda.keras")
    keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]).save(
        folder / "images.keras")
    x, y = np.random.default_rng(0).random((6, 4), dtype=np.float32), np.arange(6) % 3
    np.savez(folder / "eval.npz", x=x, y=y)
    np.savez(folder / "wrong.npz", x=np.zeros((6, 5), "float32"), y=y)
    np.savez(folder / "no_x.npz", inputs=x)
    return type("Models", (), {"dir": folder, "model": model, "x": x, "y": y})


def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` (Python's byte-code caches aside): name -> content digest."""
    found = {}
    for base, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in dirs:
            found[os.path.relpath(os.path.join(base, name), folder) + "/"] = "folder"
        for name in files:
            path = os.path.join(base, name)
            try:
                with open(path, "rb") as f:
                    found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
            except PermissionError:
                found[os.path.relpath(path, folder)] = "unreadable"
    return found


@pytest.fixture
def created(monkeypatch):
    """Every TfscaleError made while the test runs, so the one the command line printed can be typed."""
    made: list[TfscaleError] = []
    original = TfscaleError.__init__

    def recording(self, *args, **kwargs):
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(TfscaleError, "__init__", recording)
    return made


# uid and gid 65534 (nobody, nogroup) for an unprivileged case, where this process is root; else it runs as is.
AS_NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] if os.geteuid() == 0 else []


@pytest.fixture
def folder(case: Case, tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """The case's folder: tmp_path, but for an unprivileged case run as nobody (pytest's tmp_path is private to
    root) a folder under /tmp that nobody can reach, and beside it a HOME and TMPDIR that nobody can write."""
    if not (case.unprivileged and AS_NOBODY):
        yield tmp_path
        return
    top = Path(tempfile.mkdtemp(prefix="tfscale-nobody-"))
    top.chmod(0o755)
    for name in ("case", "home"):
        (top / name).mkdir()
        (top / name).chmod(0o777)
    monkeypatch.setenv("HOME", str(top / "home"))
    monkeypatch.setenv("TMPDIR", str(top / "home"))
    yield top / "case"
    shutil.rmtree(top, ignore_errors=True)


# A fresh process: `python -m tfscale ...`, also naming the class of the error it printed.
_FRESH = ("import atexit, json, runpy, sys\n"
          "import tfscale.errors as errors\n"
          "made, original = [], errors.TfscaleError.__init__\n"
          "def recording(self, *a, **k):\n"
          "    original(self, *a, **k)\n"
          "    made.append(self)\n"
          "errors.TfscaleError.__init__ = recording\n"
          "atexit.register(lambda: print('tfscale errors:', json.dumps([[type(e).__name__, str(e)] for e in made])))\n"
          "sys.argv = ['tfscale', *sys.argv[1:]]\n"
          "runpy.run_module('tfscale', run_name='__main__', alter_sys=True)\n")


def _fresh(argv: list[str], env: dict[str, str], cwd: Path, unprivileged: bool = False):
    import subprocess

    as_user = AS_NOBODY if unprivileged else []
    proc = subprocess.run([*as_user, sys.executable, "-c", _FRESH, *argv], env=procs.base_env(**env), cwd=cwd,
                          capture_output=True, text=True, timeout=240)
    out, _, made = proc.stdout.rpartition("tfscale errors: ")
    return proc.returncode, out, proc.stderr, [(name, text) for name, text in json.loads(made or "[]")]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, folder, models, created, capsys, monkeypatch):
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if "TF_CONFIG" not in case.env:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.chdir(folder)  # anything written relative to the working directory is seen below
    monkeypatch.setattr(sys, "path", list(sys.path))  # `tfscale train` adds the run file's folder

    def launched(code):  # `tfscale launch` ends its process after the workers: a bad input never gets there
        raise AssertionError(f"the launcher ran its workers (exit code {code})")

    # private: tfscale's `launch_cli._exit_now` (the launcher's hard exit after its workers). If it is renamed,
    # setattr raises AttributeError (monkeypatch's raising=True), so every case errors rather than passes
    monkeypatch.setattr(launch_cli, "_exit_now", launched)
    made = case.make(folder) if case.make else None
    made = made if isinstance(made, dict) else {}
    values = {"tmp": str(folder), "models": str(models.dir), **{k: v for k, v in made.items() if k != "_close"}}
    before = tree(folder)
    try:
        if callable(case.run):
            with pytest.raises(TfscaleError) as raised:
                case.run(folder, models)
            error, message = raised.value, str(raised.value)
            assert isinstance(error, case.error), f"{type(error).__name__}: {error}"
            assert error.where and error.fix, f"the error lacks where or fix: {error}"
        else:
            argv = [part.format(**values) for part in case.run]
            if case.fresh:
                code, out, err, made_there = _fresh(argv, case.env, folder, case.unprivileged)
            else:
                code = main(argv)
                out, err = capsys.readouterr()
                made_there = [(type(e).__name__, str(e)) for e in created]
            assert code == 2, f"exit code {code}\nstdout:\n{out}\nstderr:\n{err}"
            assert "Traceback" not in err + out, err
            lines = [line for line in err.splitlines() if line.startswith(f"tfscale {case.command}: ")]
            assert len(lines) == 1, f"not one tfscale error line:\n{err}"
            message = lines[0].split(": ", 1)[1]
            assert " Where: " in message and " Fix: " in message, message
            printed = [name for name, text in made_there if text == message]
            assert printed and printed[-1] == case.error.__name__, f"printed a {printed}, not a {case.error.__name__}"
        for words in case.says:
            words = words.replace("{port}", values.get("port", "{port}"))
            assert words in message, f"{words!r} not in: {message}"
    finally:
        for thing in made.get("_close", ()):
            thing.close()
    after = tree(folder)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"
    if case.out and case.out + "/" not in before and case.out not in before:
        assert not (folder / case.out).exists()


# --------------------------------------------------------------------------- the same inputs, allowed


def test_skip_mode_counts_a_decompression_bomb_and_a_truncated_image_as_bad_records(tmp_path):
    photos(tmp_path, ("dogs/bomb.png", BOMB), ("cats/cut.png", png(8, 8)[:40]))
    for size in ((8, 8), None):  # decoded per batch (a fixed size), or one by one
        pipe = ts.data.image_folder(str(tmp_path / "photos"), size, on_error="skip")
        kept = sum(len(images) for images, _ in pipe.dataset(batch_size=3)) if size else len(list(pipe.dataset()))
        assert kept == 4
        assert pipe.skipped == {"corrupt or truncated image": 1, TOO_LARGE: 1}, size


def test_convert_in_skip_mode_leaves_a_decompression_bomb_out_and_counts_it(tmp_path, capsys):
    photos(tmp_path, ("dogs/bomb.png", BOMB))
    assert main(["data", "convert", str(tmp_path / "photos"), "--out", str(tmp_path / "shards"), "--shards", "2",
                 "--on-error", "skip", "--quiet"]) == 0
    assert "4 records in 2 shards" in capsys.readouterr().out
    assert json.loads((tmp_path / "shards" / "dataset.json").read_text())["skipped"] == {TOO_LARGE: 1}


def test_a_lambda_layer_loads_when_the_user_opts_in(models, tmp_path, capsys):
    out = tmp_path / "copy.keras"
    assert main(["export", str(models.dir / "lambda.keras"), "--format", "keras", "--out", str(out),
                 "--unsafe-deserialization"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and zipfile.is_zipfile(out)
