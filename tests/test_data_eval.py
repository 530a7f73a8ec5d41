"""Evaluation data for export from tfscale.data: `tfscale quantize --eval <converted folder>`, pipelines, paths."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from test_data_shards import write_folder

import tfscale as ts
from tfscale.cli import main
from tfscale.data.convert import convert


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained on an image folder (8x8 grey, 2 classes), its folder and its shards."""
    root = tmp_path_factory.mktemp("eval")
    src = str(root / "images")
    write_folder(src, per_class=(24, 24), size=(8, 8))
    convert(src, str(root / "shards"), 2)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(ts.data.image_folder(src, (8, 8), channels=1).dataset(batch_size=16), epochs=2, verbose=0)
    model.save(root / "model.keras")
    return root, model


def test_quantize_eval_reads_a_converted_tfrecord_folder(trained, capsys):
    root, _ = trained
    out = root / "out-cli"
    assert main(["quantize", str(root / "model.keras"), "--eval", str(root / "shards"), "--modes", "float32,dynamic",
                 "--out", str(out), "--no-progress", "--latency-runs", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["mode"]: r for r in report["rows"]}
    assert rows["float32"]["agreement"] == 1.0 and rows["float32"]["samples"] == 48


def test_quantize_all_takes_a_pipeline_or_a_folder_as_eval_data(trained):
    root, model = trained
    pipeline = ts.data.image_folder(str(root / "shards"), (8, 8), channels=1)
    for eval_data, name in ((pipeline, "pipe"), (str(root / "shards"), "path"), (str(root / "images"), "files")):
        report = ts.export.quantize_all(model, root / f"out-{name}", eval_data=eval_data, modes=("float32",),
                                        progress=False, latency_runs=5)
        row = report.to_dict()["rows"][0]
        assert row["agreement"] == 1.0 and row["samples"] == 48 and np.isfinite(row["value"])
