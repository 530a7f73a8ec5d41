"""Exported files follow the umask, like a plain `open()`: 0644 under umask 022, so others can read the deliverable."""

from __future__ import annotations

import contextlib
import os
import stat

import keras
import numpy as np
import pytest

import tfscale as ts
from tfscale.export import files


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_exports_get_the_mode_open_would_give(model, tmp_path, mask, file_mode, dir_mode):
    x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32")
    y = np.arange(64) % 3
    out = tmp_path / "out"
    with umask(mask):
        written = [ts.export.tflite(model, out / "m.tflite"),
                   ts.export.tflite(model, out / "int8.tflite", quantize="int8", calibration=x),
                   ts.export.keras(model, out / "m.keras"),
                   files.write_text(out / "notes.txt", "hello\n")]
        report = ts.export.quantize_all(model, out / "variants", eval_data=(x, y), modes=["int8"], latency_runs=5,
                                        progress=False)
        written += [out / "variants" / "float32.tflite", out / "variants" / "int8.tflite",
                    out / "variants" / "report.json", report.plot(out / "variants" / "report.png")]
        saved = ts.export.saved_model(model, out / "saved_model")
        with open(out / "plain.txt", "w") as f:  # what open() gives, for comparison
            f.write("x")
    assert {p.name: oct(mode(p)) for p in written} == {p.name: oct(file_mode) for p in written}
    assert mode(out / "plain.txt") == file_mode
    assert mode(saved) == dir_mode and mode(saved / "saved_model.pb") == file_mode
