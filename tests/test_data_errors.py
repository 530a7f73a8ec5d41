"""Bad records: raise names the file and line/record; skip drops, counts and reports at each epoch end."""

from __future__ import annotations

import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_data_helpers import undecodable_png, write_csv, write_images, write_tfrecord

import tfscale as ts
from tfscale.cli import main
from tfscale.errors import DataError


def test_corrupt_and_truncated_images(tmp_path, caplog):
    paths = write_images(tmp_path, per_class=(4, 4))
    (tmp_path / "class_0" / "garbage.jpg").write_bytes(b"this is not an image")
    png = open([p for p in paths if p.endswith(".png")][-1], "rb").read()
    (tmp_path / "class_1" / "cut.png").write_bytes(png[: len(png) // 2])
    with pytest.raises(DataError) as raised:
        list(ts.data.image_folder(str(tmp_path), image_size=(8, 8)).deterministic())
    assert "corrupt or truncated image" in str(raised.value)
    assert "garbage.jpg" in str(raised.value) or "cut.png" in str(raised.value)
    bad = ts.data.image_folder(str(tmp_path), image_size=(8, 8))
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(tf.errors.InvalidArgumentError) as in_keras:  # checked per batch, before decoding
        model.fit(bad.dataset(batch_size=20), epochs=1, verbose=0)
    assert "corrupt or truncated image" in str(in_keras.value) and ("garbage.jpg" in str(in_keras.value)
                                                                    or "cut.png" in str(in_keras.value))
    with pytest.raises(DataError, match="corrupt or truncated image"):  # tfscale.fit: a DataError
        ts.fit(lambda: model, bad, epochs=1, global_batch_size=5, scale=ts.Scale("default"), verbose=0)
    pipe = ts.data.image_folder(str(tmp_path), image_size=(8, 8), on_error="skip")
    with caplog.at_level(logging.WARNING, logger="tfscale"):
        assert sum(1 for _ in pipe.dataset()) == 8
    assert pipe.skipped == {"corrupt or truncated image": 2}
    assert "skipped 2 bad record(s) this epoch" in caplog.text and "cut.png" in caplog.text


def test_malformed_csv_rows(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("id,x,label\nr0,0.5,1\nr1,oops,2\nr2,1.5\nr3,2.5,0\n")
    with pytest.raises(DataError) as raised:
        list(ts.data.csv(str(path), column_types={"x": "float", "label": "int"}).deterministic())
    assert "malformed CSV row" in str(raised.value) and f"{path}:3" in str(raised.value)
    pipe = ts.data.csv(str(path), column_types={"x": "float", "label": "int"}, on_error="skip").deterministic()
    assert [r["id"].numpy() for r in pipe.dataset()] == [b"r0", b"r3"]
    assert pipe.skipped == {"malformed CSV row": 2}
    assert any(f"{path}:4" in r for r in pipe.records.recent)


def test_truncated_tfrecord(tmp_path):
    good = write_tfrecord(tmp_path / "a.tfrecord", range(5))
    data = open(write_tfrecord(tmp_path / "b.tfrecord", range(5, 10)), "rb").read()
    (tmp_path / "b.tfrecord").write_bytes(data[:-10])
    spec = {"v": "int64"}
    with pytest.raises(DataError) as raised:
        list(ts.data.tfrecord([good, str(tmp_path / "b.tfrecord")], spec).deterministic())
    assert "truncated or corrupt TFRecord" in str(raised.value)
    assert "b.tfrecord, after 4 good record(s)" in str(raised.value)
    pipe = ts.data.tfrecord([good, str(tmp_path / "b.tfrecord")], spec, on_error="skip").deterministic()
    assert sorted(int(r["v"]) for r in pipe.dataset()) == list(range(9))
    assert pipe.skipped == {"truncated or corrupt TFRecord file": 1}


def test_missing_file(tmp_path):
    good = write_csv(tmp_path / "a.csv", 4)
    missing = str(tmp_path / "gone.csv")
    with pytest.raises(DataError, match="does not exist") as raised:
        ts.data.csv([good, missing])
    assert "gone.csv" in str(raised.value)
    pipe = ts.data.csv([good, missing], on_error="skip")
    assert len(list(pipe.dataset())) == 4
    assert pipe.skipped == {"missing file": 1}
    with pytest.raises(DataError, match="does not exist"):
        ts.data.tfrecord(missing, {"v": "int64"})


def test_skips_are_reported_each_epoch_through_the_keras_callback(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i % 7},{i % 2}\n" for i in range(30)) + "1,x,0\n2,3\n")
    pipe = ts.data.csv(str(path), label="label", column_types={"b": "float"}, on_error="skip")
    pipe = pipe.map(lambda f, y: (tf.stack([tf.cast(f["a"], tf.float32), f["b"]]), y))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = pipe.callback()
    history = model.fit(pipe.dataset(batch_size=8), epochs=2, verbose=0, callbacks=[callback])
    assert history.history["skipped_records"] == [2, 2]
    assert callback.history == [{"malformed CSV row": 2}, {"malformed CSV row": 2}]
    assert pipe.skipped == {"malformed CSV row": 4}


def test_on_error_must_be_raise_or_skip():
    from tfscale.errors import ConfigError

    with pytest.raises(ConfigError, match="on_error"):
        ts.data.from_numpy(np.arange(3), on_error="ignore")


def test_an_image_that_looks_whole_but_will_not_decode(tmp_path):
    from tfscale.data.convert import convert

    paths = write_images(tmp_path / "photos", per_class=(4, 4), kinds=("png",))
    data = open(paths[0], "rb").read()
    odd = tmp_path / "photos" / "class_1" / "zeroed.png"
    odd.write_bytes(data[:40] + bytes(len(data) - 52) + data[-12:])  # signature and end kept, the middle zeroed
    with pytest.raises(DataError, match="undecodable image") as raised:  # the files: named after the failure
        list(ts.data.image_folder(str(tmp_path / "photos"), image_size=(8, 8)))
    assert "zeroed.png" in str(raised.value)
    with pytest.raises(DataError, match="zeroed.png"):  # convert decodes every image once
        convert(str(tmp_path / "photos"), str(tmp_path / "out"), 2)
    summary = convert(str(tmp_path / "photos"), str(tmp_path / "out"), 2, on_error="skip", overwrite=True)
    assert (summary["records"], summary["skipped"]) == (8, 1)


def test_skip_mode_on_several_workers_drops_before_batching_so_steps_stay_equal(tmp_path):
    from test_data_helpers import contexts

    write_images(tmp_path, per_class=(9, 9), size=(8, 8))
    (tmp_path / "class_0" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    pipe = ts.data.image_folder(str(tmp_path), image_size=(4, 4), on_error="skip")
    batches = [[y.numpy().tolist() for _, y in pipe.batched_dataset_for(c, 4, True)] for c in contexts(2)]
    assert len(batches[0]) == len(batches[1]) == 2 and all(len(b) == 4 for w in batches for b in w)
    assert pipe.skipped == {"corrupt or truncated image": 2}  # each worker reads (and drops) everything
    single = [int(x.shape[0]) for x, _ in pipe.dataset(batch_size=5)]
    assert single == [5, 5, 5, 3]  # one worker: whole batches after the drop


def _numbers_and_labels(dataset) -> list[tuple[int, int]]:
    """(image number, label) of every image: write_images gives image n the grey value n."""
    return sorted((round(float(v) * 255), int(y)) for x, labels in dataset
                  for v, y in zip(x[:, 0, 0, 0].numpy(), labels.numpy()))


def test_skip_mode_loses_no_good_image_beside_an_undecodable_one(tmp_path, caplog, capsys):
    """One undecodable PNG (signature, header and trailer intact, pixel stream garbled) in every 16 images, so in
    every part a batch is decoded in: read from the folder in skip mode, and from the shards `tfscale data
    convert` writes of it, every good image arrives once with its label, and every bad one is counted and named."""
    paths = write_images(tmp_path / "photos", per_class=(48, 48), size=(12, 12))  # image n: grey n, label n >= 48
    numbers = list(range(6, 96, 16))  # in the read order; each a PNG (kinds alternate png, jpg)
    for k, n in enumerate(numbers):
        data = open(paths[n], "rb").read()
        open(paths[n], "wb").write(undecodable_png(data, keep_crc=k % 2 == 0))
    good = [(n, int(n >= 48)) for n in range(96) if n not in numbers]
    folder, figures = str(tmp_path / "photos"), []
    for batch in (16, 64, None):  # parts of 16 images, of 64, and an unbatched pipeline (batched by tf.data after)
        pipe = ts.data.image_folder(folder, image_size=(8, 8), on_error="skip")
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tfscale"):
            batches = list(pipe.dataset(batch_size=batch) if batch else pipe.dataset().batch(7))
        got = _numbers_and_labels(batches)
        figures.append(f"folder, batch {batch}: {len(got)} images read, skipped {pipe.skipped}, "
                       f"named {sorted(r.split('/')[-1] for r in pipe.records.recent)}")
        assert got == good
        if batch:
            assert [int(x.shape[0]) for x, _ in batches][:-1] == [batch] * (len(good) // batch)  # whole batches
        assert pipe.skipped == {"undecodable image": len(numbers)}
        assert sorted(pipe.records.recent) == sorted(f"undecodable image: {paths[n]}" for n in numbers)
        assert f"skipped {len(numbers)} bad record(s) this epoch" in caplog.text

    out = str(tmp_path / "shards")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tfscale"):
        assert main(["data", "convert", folder, "--out", out, "--shards", "2", "--store", "encoded", "--on-error",
                     "skip", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"{len(good)} records in 2 shards" in printed and f"{len(numbers)} bad records skipped" in printed
    named = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped"))
    assert named == sorted(f"skipped undecodable image: {paths[n]}" for n in numbers)
    assert json.load(open(os.path.join(out, "dataset.json")))["skipped"] == {"undecodable image": len(numbers)}
    pipe = ts.data.image_folder(out, image_size=(8, 8), on_error="skip")
    got = _numbers_and_labels(pipe.dataset(batch_size=16))
    print("\n".join(figures), f"\nshards: {len(got)} images read, {len(named)} skipped and named at convert, "
          f"skipped at read {pipe.skipped}")
    assert got == good and pipe.skipped == {}


def test_skip_mode_counts_an_image_resized_after_the_pipeline_was_built(tmp_path):
    """Every image decodes to one size, so batches are resized at once; a file replaced by one of another size
    after the pipeline was built is left out and named in skip mode, and the images beside it arrive."""
    paths = write_images(tmp_path, per_class=(10, 10), size=(12, 12), kinds=("png",))
    pipe = ts.data.image_folder(str(tmp_path), image_size=(8, 8), on_error="skip")
    assert pipe.source.uniform == (12, 12)
    tf.io.write_file(paths[3], tf.io.encode_png(np.full((10, 10, 3), 3, np.uint8)))
    got = _numbers_and_labels(pipe.dataset(batch_size=16))
    print(f"{len(got)} images read, skipped {pipe.skipped}, named {list(pipe.records.recent)}")
    assert got == [(n, int(n >= 10)) for n in range(20) if n != 3]
    assert pipe.skipped == {"image size changed since the pipeline was built": 1}
    assert list(pipe.records.recent) == [f"image size changed since the pipeline was built: {paths[3]}"]


def _resized_copies(paths, every: int, size) -> None:
    """Every `every`-th image written again at `size`, same grey value and format: a folder of two sizes."""
    for path in paths[::every]:
        image = tf.fill([*size, 3], tf.io.decode_image(tf.io.read_file(path))[0, 0, 0])
        data = tf.io.encode_png(image) if path.endswith(".png") else tf.io.encode_jpeg(image, quality=95)
        tf.io.write_file(path, data)


def test_skip_mode_without_a_fixed_size_counts_and_names_an_undecodable_image(tmp_path, caplog):
    """Without image_size each image keeps its own size; one that passed the checks but would not decode was dropped
    by tf.data's ignore_errors, uncounted and unnamed. A folder of 40 images of two sizes with one undecodable PNG
    (signature, header and trailer intact, pixel stream garbled) in the middle of a 16-image part: in skip mode the
    39 good ones arrive once each, at their own size, with their labels; the bad one is counted and named; in raise
    mode the error names it."""
    paths = write_images(tmp_path, per_class=(20, 20), size=(12, 16))  # image n: grey n, label n >= 20, png/jpg
    _resized_copies(paths, 3, (7, 9))
    bad = 22  # a PNG (kinds alternate), in the second part of 16 in the read order
    data = open(paths[bad], "rb").read()
    open(paths[bad], "wb").write(undecodable_png(data))
    good = [(n, int(n >= 20), (7, 9) if n % 3 == 0 else (12, 16)) for n in range(40) if n != bad]
    pipe = ts.data.image_folder(str(tmp_path), on_error="skip").deterministic()
    with caplog.at_level(logging.WARNING, logger="tfscale"):
        got = [(round(float(x[0, 0, 0]) * 255), int(y), tuple(x.shape[:2])) for x, y in pipe.dataset()]
    print(f"{len(got)} images read, skipped {pipe.skipped}, named {list(pipe.records.recent)}")
    assert got == good  # every good one, once, in order, at its own size
    assert pipe.skipped == {"undecodable image": 1}
    assert list(pipe.records.recent) == [f"undecodable image: {paths[bad]}"]
    assert "skipped 1 bad record(s) this epoch" in caplog.text and os.path.basename(paths[bad]) in caplog.text
    with pytest.raises(DataError, match="undecodable image") as raised:
        list(ts.data.image_folder(str(tmp_path)))
    assert paths[bad] in str(raised.value)


def test_skip_mode_without_a_fixed_size_on_several_workers_reads_every_image(tmp_path):
    """Every worker reads everything and slices each global batch (skip mode): without image_size the files must
    still be read (they were decoded as if the paths were image bytes, and every image was dropped as corrupt)."""
    from test_data_helpers import contexts

    paths = write_images(tmp_path, per_class=(9, 9), size=(8, 8))
    data = open(paths[2], "rb").read()
    open(paths[2], "wb").write(undecodable_png(data))
    pipe = ts.data.image_folder(str(tmp_path), on_error="skip")
    batches = [[y.numpy().tolist() for _, y in pipe.batched_dataset_for(c, 4, True)] for c in contexts(2)]
    assert [len(b) for w in batches for b in w] == [4, 4, 4, 4]  # 17 good: 2 global batches of 8, 1 left out
    assert pipe.skipped == {"undecodable image": 2}  # each worker reads (and drops) everything


def test_skip_mode_counts_an_undecodable_image_in_elements_that_do_not_batch(tmp_path):
    """Elements with a part of varying (or no) length beside the image bytes cannot be batched into parts: each
    image is then a part of its own, and an undecodable one is still counted (tf.data 2.21's unbatch crashed on the
    empty token lists)."""
    images = [tf.io.encode_png(tf.fill([3 + n % 3, 5, 3], tf.constant(n, tf.uint8))).numpy() for n in range(20)]
    images[5] = undecodable_png(images[5])

    def rows():
        for n, image in enumerate(images):
            yield {"image": image, "tokens": np.arange(n % 3, dtype=np.int64)}

    signature = {"image": tf.TensorSpec([], tf.string), "tokens": tf.TensorSpec([None], tf.int64)}
    for size in (None, (4, 4)):
        pipe = ts.data.from_generator(rows, signature, on_error="skip").decode_images(size, key="image")
        got = [(int(tf.size(e["tokens"])), tuple(e["image"].shape)) for e in pipe.deterministic().dataset()]
        assert got == [(n % 3, (3 + n % 3, 5, 3) if size is None else (*size, 3)) for n in range(20) if n != 5]
        assert pipe.skipped == {"undecodable image": 1}
