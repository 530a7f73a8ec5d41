"""`tfscale data convert` / `inspect`: sharded TFRecords, index lookups, resumable runs, dataset stats."""

from __future__ import annotations

import json
import os
import re

import pytest
import tensorflow as tf
from test_data_helpers import write_csv, write_images

import tfscale as ts
from tfscale.cli import main
from tfscale.data.convert import convert
from tfscale.data.records.index import find_offset, index_file, shard_of
from tfscale.errors import DataError


def test_csv_to_shards_with_index_lookup_and_reading_back(tmp_path, capsys):
    src = write_csv(tmp_path / "rows.csv", 300)
    out = str(tmp_path / "out")
    assert main(["data", "convert", src, "--out", out, "--shards", "4", "--key", "id", "--label", "label"]) == 0
    assert "300 records in 4 shards" in capsys.readouterr().out
    meta = json.load(open(os.path.join(out, "dataset.json")))
    assert sum(s["records"] for s in meta["shards"]) == 300 and meta["class_counts"] == {"0": 100, "1": 100, "2": 100}
    assert ts.data.lookup(out, "r123") == {"id": b"r123", "x": 61.5, "name": b"n123", "label": 0}
    with pytest.raises(DataError, match="not in the index"):
        ts.data.lookup(out, "r999")
    shard = os.path.join(out, meta["shards"][shard_of("r7", 4)]["file"])
    assert find_offset(index_file(shard), "r7") is not None and find_offset(index_file(shard), "r7x") is None
    pipe = ts.data.tfrecord(out)
    assert len(pipe.source.units) == 4
    rows = list(pipe.dataset())
    assert len(rows) == 300 and sorted(int(y) for _, y in rows) == sorted(i % 3 for i in range(300))


def test_interrupted_run_leaves_no_half_shard_and_rerun_finishes_missing_ones(tmp_path):
    src = write_csv(tmp_path / "rows.csv", 1200)
    out = str(tmp_path / "out")

    def stop(records, share):
        if records >= 500:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(src, out, 3, key="id", progress=stop)
    assert os.listdir(out) == ["manifest.json"]  # no shard, index or temporary file left behind; what to resume
    assert convert(src, out, 3, key="id")["shards_written"] == 3
    done = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".tfrecord")}
    os.remove(os.path.join(out, "part-00001-of-00003.tfrecord"))
    summary = convert(src, out, 3, key="id")
    assert (summary["shards_written"], summary["shards_kept"], summary["records"]) == (1, 2, 1200)
    assert os.path.getmtime(os.path.join(out, "part-00000-of-00003.tfrecord")) == done["part-00000-of-00003.tfrecord"]
    assert ts.data.lookup(out, "r1100")["id"] == b"r1100"
    assert sum(1 for _ in ts.data.tfrecord(out).dataset()) == 1200


def test_image_folder_to_shards_then_decode_inspect_and_lookup(tmp_path, capsys):
    write_images(tmp_path / "photos", per_class=(5, 3))
    (tmp_path / "photos" / "class_0" / "bad.png").write_bytes(b"\x89PNG broken")
    out = str(tmp_path / "out")
    with pytest.raises(DataError, match="bad.png"):
        convert(str(tmp_path / "photos"), out, 2)
    assert main(["data", "convert", str(tmp_path / "photos"), "--out", out, "--shards", "2", "--on-error", "skip",
                 "--quiet"]) == 0
    assert "8 records in 2 shards" in capsys.readouterr().out
    record = ts.data.lookup(out, "class_1/0006.jpg")
    assert record["label"] == 1 and tf.io.decode_image(record["image"]).shape == (20, 24, 3)
    images = ts.data.tfrecord(out).map(lambda f, y: (f["image"], y)).decode_images((8, 8))
    assert sum(int(x.shape[0]) for x, _ in images.dataset(batch_size=3)) == 8
    shards = ts.data.image_folder(out, image_size=(8, 8))  # a converted folder reads its shards
    labels = sorted(int(y) for x, y in shards.dataset() if x.shape == (8, 8, 3) and float(tf.reduce_max(x)) <= 1)
    assert labels == [0] * 5 + [1] * 3
    assert main(["data", "inspect", out, "--step-time", "1000", "--probe-batches", "2", "--batch-size", "4",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 8 and report["classes"] == {"class_0": 5, "class_1": 3}
    assert report["skipped_at_convert"] == 1 and report["probe_batch_size"] == 4
    # the probe's figures agree: 4 examples a step every 1000 s need 0.004/s (0.0 rounded), and the rate keeps up
    rate = report["examples_per_second"]
    assert report["needed_per_second"] == 0.0 and report["keeps_up"] is True and rate >= 0.004
    said = re.fullmatch(r"keeps up: (\d+) examples/s >= 0 needed at 1000\.0s/step", report["verdict"])
    assert said and abs(int(said[1]) - rate) <= 1, report["verdict"]  # the verdict quotes the rate


def test_inspect_an_image_folder_says_when_input_is_too_slow(tmp_path):
    from tfscale.data.inspect import inspect

    write_images(tmp_path, per_class=(4, 2))
    report = inspect(str(tmp_path), step_time=1e-9, batch_size=2, probe_batches=2, image_size=(8, 8))
    assert report["files"] == 6 and report["classes"] == {"class_0": 4, "class_1": 2}
    assert report["keeps_up"] is False and report["verdict"].startswith("too slow")


def _shard_ids(out: str) -> list[list[int]]:
    """The `id` of each record, shard by shard, in the order the shard file holds them."""
    meta = json.load(open(os.path.join(out, "dataset.json")))
    return [[int(tf.train.Example.FromString(r.numpy()).features.feature["id"].bytes_list.value[0][1:])
             for r in tf.data.TFRecordDataset(os.path.join(out, s["file"]))] for s in meta["shards"]]


def test_no_shuffle_keeps_the_source_order_inside_each_shard(tmp_path, capsys):
    """`tfscale data convert --no-shuffle`: each shard holds its records in the CSV's order; by default the same
    records in a seeded order, stratified by label (here the CSV holds its 3 labels in blocks of 40 rows)."""
    src = tmp_path / "rows.csv"
    src.write_text("id,x,label\n" + "".join(f"r{i},{i * 0.5},{i // 40}\n" for i in range(120)))
    kept, shuffled = str(tmp_path / "kept"), str(tmp_path / "shuffled")
    for out, flags in ((kept, ["--no-shuffle"]), (shuffled, [])):
        assert main(["data", "convert", str(src), "--out", out, "--shards", "2", "--key", "id", "--label", "label",
                     "--quiet", *flags]) == 0
    assert "120 records in 2 shards" in capsys.readouterr().out
    in_order, reordered = _shard_ids(kept), _shard_ids(shuffled)
    assert [sorted(ids) for ids in in_order] == [sorted(ids) for ids in reordered]  # the same records per shard
    assert all(ids == sorted(ids) and len(ids) > 20 for ids in in_order), in_order
    assert json.load(open(os.path.join(kept, "dataset.json")))["shuffle"] is None
    assert json.load(open(os.path.join(shuffled, "dataset.json")))["shuffle"] == 0  # the seed
    # shuffled, every stretch of 12 records mixes the 3 labels; in the source order the first 12 share one
    assert all(len({i // 40 for i in ids[k:k + 12]}) == 3 for ids in reordered for k in range(0, len(ids) - 11, 12))
    assert all(len({i // 40 for i in ids[:12]}) == 1 for ids in in_order)


def test_an_unknown_on_error_is_a_config_error_before_anything_is_written(tmp_path):
    from tfscale.errors import ConfigError

    src = tmp_path / "rows.csv"
    src.write_text("x,label\n1,0\n2,1\n")
    with pytest.raises(ConfigError, match="on_error='bogus' is not accepted"):
        convert(str(src), str(tmp_path / "out"), 1, on_error="bogus")
    assert not (tmp_path / "out").exists()
