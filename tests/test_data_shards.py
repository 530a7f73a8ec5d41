"""Converted image shards: right (manifest, resume, shuffled classes, counts) and the same pixels as the files."""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from test_data_helpers import contexts, write_images

import tfscale as ts
from tfscale.cli import main
from tfscale.data.convert import convert
from tfscale.errors import ConfigError, DataError


def write_folder(root, per_class=(30, 20, 10), size=(12, 10), kinds=("png",), seed=0) -> list[str]:
    """Textured images (random pixels, so resizing matters) under root/c<i>/; returns the paths."""
    rng, paths = np.random.RandomState(seed), []
    for label, count in enumerate(per_class):
        os.makedirs(os.path.join(root, f"c{label}"), exist_ok=True)
        for i in range(count):
            image = rng.randint(0, 256, (*size, 1), dtype=np.uint8)
            kind = kinds[i % len(kinds)]
            data = tf.io.encode_png(image) if kind == "png" else tf.io.encode_jpeg(image, quality=90)
            path = os.path.join(root, f"c{label}", f"{i:04d}.{kind}")
            tf.io.write_file(path, data)
            paths.append(path)
    return paths


def _labels_in_shard(path) -> list[int]:
    spec = {"label": tf.io.FixedLenFeature([], tf.int64)}
    return [int(tf.io.parse_single_example(r, spec)["label"]) for r in tf.data.TFRecordDataset(path)]


def test_a_changed_source_is_refused_naming_the_change_and_overwrite_rebuilds(tmp_path, capsys):
    src, out = str(tmp_path / "images"), str(tmp_path / "shards")
    paths = write_folder(src)
    assert main(["data", "convert", src, "--out", out, "--shards", "2", "--quiet"]) == 0
    for path in paths[::3]:  # the images README's second run: fewer images per class in the same folder
        os.remove(path)
    with pytest.raises(DataError, match=r"20 source file\(s\) removed") as raised:
        convert(src, out, 2)
    assert "--overwrite" in str(raised.value)
    with pytest.raises(DataError, match="option num_shards was 2, now 3"):
        convert(src, out, 3)
    with pytest.raises(ConfigError, match="--store raw needs"):
        convert(src, out, 2, store="raw")
    with pytest.raises(ConfigError, match="--image-size is for --store raw"):
        convert(src, out, 2, image_size=(8, 8))
    capsys.readouterr()
    assert main(["data", "convert", src, "--out", out, "--shards", "2", "--quiet"]) == 2  # the CLI: message, code 2
    assert "source file(s) removed" in capsys.readouterr().err
    summary = convert(src, out, 2, overwrite=True)
    assert (summary["records"], summary["shards_written"]) == (40, 2)
    meta = json.load(open(os.path.join(out, "dataset.json")))
    assert [s["records"] for s in meta["shards"]] == [sum(1 for _ in tf.data.TFRecordDataset(
        os.path.join(out, s["file"]))) for s in meta["shards"]]
    assert sum(meta["class_counts"].values()) == 40
    assert main(["data", "inspect", out, "--probe-batches", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts_match"] is True
    # the stale-shard case: dataset.json claims other counts than its files hold
    meta["shards"][0]["records"] += 7
    with open(os.path.join(out, "dataset.json"), "w") as f:
        json.dump(meta, f)
    assert main(["data", "inspect", out, "--probe-batches", "0"]) == 1
    printed = capsys.readouterr().out
    assert "counts differ" in printed and meta["shards"][0]["file"] in printed, printed


def test_an_interrupted_image_convert_resumes_with_the_missing_shards_only(tmp_path):
    src, out = str(tmp_path / "images"), str(tmp_path / "shards")
    write_folder(src)

    def stop(records, share):
        if share > 0.5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert(src, out, 3, progress=stop)
    left = sorted(os.listdir(out))
    assert "dataset.json" not in left and not [f for f in left if "tmp" in f]
    whole = [f for f in left if f.endswith(".tfrecord")]
    assert 1 <= len(whole) < 3 and all(f[:-len("tfrecord")] + "index" in left for f in whole)
    kept = {f: os.path.getmtime(os.path.join(out, f)) for f in whole}
    summary = convert(src, out, 3)
    assert (summary["shards_kept"], summary["shards_written"], summary["records"]) == (len(whole), 3 - len(whole), 60)
    assert {f: os.path.getmtime(os.path.join(out, f)) for f in whole} == kept
    labels = sorted(int(y) for _, y in ts.data.image_folder(out, (4, 4), channels=1).dataset())
    assert labels == [0] * 30 + [1] * 20 + [2] * 10


def test_shards_mix_the_classes_from_their_first_records(tmp_path):
    src = str(tmp_path / "images")
    write_folder(src, per_class=(200, 100, 50), size=(4, 4))
    convert(src, str(tmp_path / "mixed"), 2)
    convert(src, str(tmp_path / "sorted"), 2, shuffle=False)
    for name in ("part-00000-of-00002.tfrecord", "part-00001-of-00002.tfrecord"):
        labels = _labels_in_shard(tmp_path / "mixed" / name)
        share = {c: n / len(labels) for c, n in collections.Counter(labels).items()}
        for window in (labels[:100], labels[50:150]):  # every window holds each class in its proportion
            counts = collections.Counter(window)
            assert all(abs(counts[c] / len(window) - share[c]) <= 0.1 * share[c] + 0.011 for c in share), counts
        assert _labels_in_shard(tmp_path / "sorted" / name) == sorted(labels)  # --no-shuffle: the source order
    again = str(tmp_path / "again")
    convert(src, again, 2)  # seeded: the same order every time
    assert _labels_in_shard(os.path.join(again, "part-00000-of-00002.tfrecord")) == \
        _labels_in_shard(tmp_path / "mixed" / "part-00000-of-00002.tfrecord")


def test_shards_give_the_pixels_the_files_give(tmp_path):
    src = str(tmp_path / "images")
    write_folder(src, per_class=(5, 4), size=(40, 36), kinds=("png", "jpg"))
    write_folder(str(tmp_path / "big"), per_class=(3, 3), size=(64, 64), kinds=("jpg",))  # JPEGs at 1/2 scale
    for folder in (src, str(tmp_path / "big")):
        files = ts.data.image_folder(folder, (16, 12), channels=1).deterministic()
        expected = np.concatenate([x.numpy() for x, _ in files.dataset(batch_size=4)])
        convert(folder, folder + "-enc", 1, shuffle=False)  # one shard in the source order: the files' order
        convert(folder, folder + "-raw", 1, shuffle=False, store="raw", image_size=(16, 12), channels=1)
        encoded = ts.data.image_folder(folder + "-enc", (16, 12), channels=1).deterministic()
        raw = ts.data.image_folder(folder + "-raw", (16, 12), channels=1).deterministic()
        np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in encoded.dataset(batch_size=4)]), expected)
        raw_pixels = np.concatenate([x.numpy() for x, _ in raw.dataset(batch_size=4)])
        assert np.abs(raw_pixels - expected).max() <= 0.5 / 255 + 1e-6  # raw: the same pixels rounded to uint8
        np.testing.assert_allclose(raw_pixels * 255, np.round(raw_pixels * 255), atol=1e-4)  # whole levels
        one_by_one = np.stack([x.numpy() for x, _ in raw.dataset()])  # unbatched: the same decoding per record
        np.testing.assert_array_equal(one_by_one, raw_pixels)
    assert json.load(open(src + "-raw/dataset.json"))["image"] == [16, 12, 1]


def test_a_damaged_shard_is_named_with_its_record_in_raise_mode_and_counted_in_skip_mode(tmp_path):
    src, out = str(tmp_path / "images"), str(tmp_path / "shards")
    write_folder(src, per_class=(20, 20), size=(6, 6))
    convert(src, out, 2)
    shard = os.path.join(out, "part-00001-of-00002.tfrecord")
    meta = json.load(open(os.path.join(out, "dataset.json")))
    records = meta["shards"][1]["records"]
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF  # a flipped byte: a CRC that does not match, halfway through
    open(shard, "wb").write(bytes(data))
    with pytest.raises(DataError, match="truncated or corrupt TFRecord file") as raised:
        list(ts.data.image_folder(out, (4, 4), channels=1).deterministic())
    assert "part-00001-of-00002.tfrecord, after" in str(raised.value) and "good record(s)" in str(raised.value)
    good = int(str(raised.value).split("after ")[1].split(" good")[0])
    assert 0 < good < records
    skipping = ts.data.image_folder(out, (4, 4), channels=1, on_error="skip")
    assert sum(int(x.shape[0]) for x, _ in skipping.dataset(batch_size=8)) == 40 - (records - good)
    assert skipping.skipped == {"truncated or corrupt TFRecord file": records - good}
    open(shard, "wb").write(bytes(data[: len(data) // 3]))  # cut: dataset.json no longer matches the file
    assert main(["data", "inspect", out, "--probe-batches", "0"]) == 1


def _image_numbers_in_shard(path) -> set[int]:
    """The numbers of the images a shard holds (write_images encodes each image's number in its pixels)."""
    spec = {"image": tf.io.FixedLenFeature([], tf.string)}
    return {int(tf.io.decode_png(tf.io.parse_single_example(r, spec)["image"])[0, 0, 0])
            for r in tf.data.TFRecordDataset(path)}


def test_shards_are_dealt_to_workers_whole_with_equal_steps(tmp_path):
    src, out = str(tmp_path / "images"), str(tmp_path / "shards")
    write_images(src, per_class=(30, 30, 30), size=(6, 6), kinds=("png",), channels=1)  # image n: pixels all n
    convert(src, out, 4)
    pipe = ts.data.image_folder(out, (4, 4), channels=1)
    per_worker = [list(pipe.batched_dataset_for(c, 8, True)) for c in contexts(2)]
    assert len(per_worker[0]) == len(per_worker[1]) >= 4 and all(len(y) == 8 for w in per_worker for _, y in w)
    meta = json.load(open(os.path.join(out, "dataset.json")))
    assert 2 * 8 * len(per_worker[0]) <= sum(s["records"] for s in meta["shards"]) == 90
    # whole: every record a worker reads comes from a shard no other worker reads from
    seen = [{int(round(float(v) * 255)) for x, _ in w for v in x.numpy()[:, 0, 0, 0]} for w in per_worker]
    assert len(seen[0]) + len(seen[1]) == 2 * 8 * len(per_worker[0]) and not seen[0] & seen[1]
    shards = [_image_numbers_in_shard(os.path.join(out, s["file"])) for s in meta["shards"]]
    assert sorted(n for shard in shards for n in shard) == list(range(90))
    readers = [{w for w in range(2) if seen[w] & shard} for shard in shards]
    assert all(len(r) == 1 for r in readers) and {0, 1} == set().union(*readers), readers
    whole = np.concatenate([y.numpy() for _, y in pipe.dataset(batch_size=16)])
    assert sorted(whole.tolist()) == [0] * 30 + [1] * 30 + [2] * 30
