"""Transforms of tfscale.data pipelines: sampling, balance, maps, images, text, cache, shuffle, sharding choice."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from test_data_helpers import contexts, values, write_csv, write_images

import tfscale as ts
from tfscale.data.core import Build, Op
from tfscale.data.images.codecs import jpeg_ratio_for
from tfscale.data.transforms import batches_last
from tfscale.errors import ConfigError


def test_sample_is_deterministic_fractional_and_the_same_under_sharding():
    pipe = ts.data.from_numpy(np.arange(2000))
    picked = sorted(values(pipe.sample(0.25, seed=3)))
    assert picked == sorted(values(pipe.sample(0.25, seed=3)))
    assert 400 < len(picked) < 600
    assert picked != sorted(values(pipe.sample(0.25, seed=4)))
    sharded = sorted(v.numpy().item() for c in contexts(2) for v in pipe.sample(0.25, seed=3).dataset_for(c))
    assert sharded == picked
    with pytest.raises(ConfigError, match="fraction"):
        pipe.sample(1.5)
    with pytest.raises(ConfigError, match="cannot come after take"):
        pipe.take(10).sample(0.5)


def test_image_folder_sample_filters_files_before_decoding(tmp_path):
    write_images(tmp_path, per_class=(20, 20))
    folder = ts.data.image_folder(str(tmp_path), image_size=(8, 8))
    files = sorted(values(ts.data.image_folder(str(tmp_path), scale=None).sample(0.5, seed=1).map(
        lambda x, y: x[0, 0, 0]), None))
    kept = sorted(int(round(float(x[0, 0, 0]) * 255)) for x, _ in folder.sample(0.5, seed=1).dataset())
    # the draw depends on TensorFlow's global seed, which other tests in this process may have set: some, not all
    assert kept == [int(v) for v in files] and 0 < len(kept) < 40


def test_balance_evens_out_classes():
    labels = np.array([0] * 900 + [1] * 100)
    pipe = ts.data.from_numpy(np.arange(1000), labels).balance(seed=0)
    counts = np.bincount([int(y) for _, y in pipe.dataset()])
    assert counts[1] == 100 and 70 < counts[0] < 130
    by_key = ts.data.from_numpy({"y": labels, "v": np.arange(1000)}).balance(label="y", counts={0: 900, 1: 100})
    assert 170 < len(values(by_key, "v")) < 230


def test_take_skip_repeat_filter_and_map():
    pipe = ts.data.from_numpy(np.arange(10)).deterministic()
    assert values(pipe.skip(2).take(3)) == [2, 3, 4]
    assert values(pipe.take(2).repeat(3)) == [0, 1] * 3
    assert values(pipe.filter(lambda x: x % 2 == 0).map(lambda x: x * 10)) == [0, 20, 40, 60, 80]


def test_vectorized_maps_run_once_per_batch():
    seen_ranks = []

    def double(x):
        seen_ranks.append(x.shape.rank)
        return x * 2

    pipe = ts.data.from_numpy(np.arange(8, dtype="float32")).deterministic().map(double, vectorized=True)
    batches = [b.numpy().tolist() for b in pipe.dataset(batch_size=4)]
    assert batches == [[0, 2, 4, 6], [8, 10, 12, 14]] and seen_ranks == [1]
    ops = [Op("a", None), Op("v1", None, vectorized=True), Op("v2", None, vectorized=True), Op("b", None, payload="batch")]
    assert [o.name for o in batches_last(tuple(ops))] == ["a", "b", "v1", "v2"]
    with pytest.raises(ConfigError, match="already batched"):
        pipe.batch(2).batched_dataset_for(tf.distribute.InputContext(), 2, True)


def test_cache_in_memory_and_in_files(tmp_path):
    calls = tf.Variable(0)

    def count(x):
        calls.assign_add(1)
        return x

    pipe = ts.data.from_numpy(np.arange(5)).map(count).cache().deterministic()
    ds = pipe.dataset()
    assert [int(v) for v in ds] == [int(v) for v in ds] == [0, 1, 2, 3, 4]
    assert int(calls.numpy()) == 5
    on_disk = ts.data.from_numpy(np.arange(5)).cache(str(tmp_path / "cache"))
    assert sorted(values(on_disk)) == [0, 1, 2, 3, 4]
    assert any(f.startswith("cache") for f in os.listdir(tmp_path))


def test_shuffle_with_seed_and_deterministic_order(tmp_path):
    files = [write_csv(tmp_path / f"p{i}.csv", 20, start=20 * i) for i in range(3)]
    def ids(pipe):
        return [r["id"].numpy() for r in pipe.dataset()]

    shuffled = ids(ts.data.csv(files).shuffle(64, seed=5).deterministic())
    assert sorted(shuffled) == sorted(f"r{i}".encode() for i in range(60))
    assert shuffled != ids(ts.data.csv(files).deterministic())
    assert shuffled == ids(ts.data.csv(files).shuffle(64, seed=5).deterministic())


def test_image_folder_decodes_resizes_normalizes_and_labels(tmp_path):
    write_images(tmp_path, per_class=(3, 2), size=(40, 30), kinds=("png", "jpg", "bmp"))
    pipe = ts.data.image_folder(str(tmp_path), image_size=(16, 12))
    assert [p.read_bytes()[:2] for p in sorted(tmp_path.glob("*/*.bmp"))] == [b"BM"]  # a real BMP, not a JPEG
    images, labels = next(iter(pipe.dataset(batch_size=5)))
    assert images.shape == (5, 16, 12, 3) and images.dtype == tf.float32
    assert sorted(labels.numpy().tolist()) == [0, 0, 0, 1, 1]
    # image n is filled with n (0..4): resized, each is still uniform, and normalized it is n / 255
    images = images.numpy()
    values = sorted(float(im.flat[0]) * 255 for im in images)
    assert all(float(np.ptp(im)) < 1e-6 for im in images)
    np.testing.assert_allclose(values, [0, 1, 2, 3, 4], atol=255 * 1e-6)
    assert pipe.source.class_names == ["class_0", "class_1"]
    # unresized: the float images are the decoded uint8 pixels / 255, file by file (png, jpg and bmp)
    raw = [im.numpy() for im, _ in ts.data.image_folder(str(tmp_path), scale=None).deterministic().dataset()]
    scaled = [im.numpy() for im, _ in ts.data.image_folder(str(tmp_path)).deterministic().dataset()]
    assert len(raw) == len(scaled) == 5 and sorted(int(im[0, 0, 0]) for im in raw) == [0, 1, 2, 3, 4]
    for r, f in zip(raw, scaled, strict=True):
        assert f.dtype == np.float32
        np.testing.assert_allclose(f, r / 255, atol=1e-6)
    # one channel: PNG and JPEG only (a BMP cannot yet: test_a_bmp_decodes_to_one_channel)
    for bmp in tmp_path.glob("*/*.bmp"):
        bmp.rename(bmp.with_suffix(".bmp.off"))
    # (30, 24) keeps the JPEGs at full scale, so they decode to the PNGs' 40 x 30, as same_size promises
    grey = ts.data.image_folder(str(tmp_path), image_size=(30, 24), channels=1, scale=None, same_size=True)
    batch, _ = next(iter(grey.dataset(batch_size=4)))
    assert batch.shape == (4, 30, 24, 1) and float(tf.reduce_max(batch)) > 1.0
    for bmp in tmp_path.glob("*/*.bmp.off"):
        bmp.rename(bmp.with_suffix(""))
    native = ts.data.image_folder(str(tmp_path), scale=None)
    first, _ = next(iter(native.dataset()))
    assert first.shape == (40, 30, 3) and first.dtype == tf.uint8


def test_a_bmp_decodes_to_one_channel(tmp_path):
    """TensorFlow's BMP decoder refuses channels=1; tfscale decodes a BMP in colour and makes it grey."""
    write_images(tmp_path, per_class=(2,), size=(10, 10), kinds=("bmp",))
    grey = ts.data.image_folder(str(tmp_path), image_size=(8, 8), channels=1, scale=None)
    batch, _ = next(iter(grey.dataset(batch_size=2)))
    assert batch.shape == (2, 8, 8, 1) and sorted(float(im[0, 0, 0]) for im in batch) == [0, 1]


def test_resized_images_are_decoded_per_batch_in_both_modes_and_checked_before_batching_when_sliced(tmp_path):
    write_images(tmp_path, per_class=(4, 3), size=(20, 24), kinds=("png", "jpg"))
    raising = ts.data.image_folder(str(tmp_path), image_size=(10, 12)).deterministic()
    skipping = raising.errors("skip")
    batch = Op("batch", None, payload="batch")
    for build in (Build(on_error="raise"), Build(on_error="skip"), Build(on_error="raise", sliced=True)):
        assert [o.name for o in batches_last(raising.ops + (batch,), build)][0] == "batch"
    order = [o.name for o in batches_last(skipping.ops + (batch,), Build(on_error="skip", sliced=True))]
    assert order[:2] == ["check_images", "batch"] and order[2].startswith("decode_images")  # equal steps
    per_batch = [(x.numpy(), y.numpy()) for x, y in raising.dataset(batch_size=4)]
    per_image = [(x.numpy(), y.numpy()) for x, y in skipping.dataset(batch_size=4)]
    assert [x.shape for x, _ in per_batch] == [(4, 10, 12, 3), (3, 10, 12, 3)]
    for (a, la), (b, lb) in zip(per_batch, per_image, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert la.tolist() == lb.tolist()


def test_a_batch_of_pngs_of_one_size_is_resized_at_once_to_the_same_pixels(tmp_path):
    from tfscale.data.images.codecs import one_png_size

    paths = write_images(tmp_path, per_class=(4, 3), size=(20, 24), kinds=("png",))
    odd = str(tmp_path / "class_1" / "9999.png")  # another size: the second batch mixes sizes
    tf.io.write_file(odd, tf.io.encode_png(np.full((30, 18, 3), 77, np.uint8)))
    read = [tf.io.read_file(p) for p in paths[:4] + [odd]]
    assert bool(one_png_size(tf.stack(read[:4]))) and not bool(one_png_size(tf.stack(read[1:])))
    raising = ts.data.image_folder(str(tmp_path), image_size=(10, 12)).deterministic()
    per_batch = [(x.numpy(), y.numpy()) for x, y in raising.dataset(batch_size=4)]  # at once, then per image
    per_image = [(x.numpy(), y.numpy()) for x, y in raising.errors("skip").dataset(batch_size=4)]
    assert [x.shape for x, _ in per_batch] == [(4, 10, 12, 3), (4, 10, 12, 3)]
    for (a, la), (b, lb) in zip(per_batch, per_image, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert la.tolist() == lb.tolist()
    assert np.allclose(per_batch[1][0][-1], 77 / 255)


def test_large_jpeg_is_decoded_at_reduced_scale_to_the_same_picture(tmp_path):
    os.makedirs(tmp_path / "a")
    image = np.zeros((256, 256, 3), np.uint8)
    image[:, 128:] = 200
    tf.io.write_file(str(tmp_path / "a" / "big.jpg"), tf.io.encode_jpeg(image, quality=95))
    pipe = ts.data.image_folder(str(tmp_path), image_size=(32, 32), scale=None)
    # 256 / 32 = 8: libjpeg decodes at 1/8 scale (its DCT), then nothing is left to resize
    assert jpeg_ratio_for([(tmp_path / "a" / "big.jpg").read_bytes()], (32, 32)) == 8
    assert "decode_images((32, 32), jpeg 1/8)" in [op.name for op in pipe.ops], [op.name for op in pipe.ops]
    small, _ = next(iter(pipe.dataset()))
    assert small.shape == (32, 32, 3)
    assert float(tf.reduce_mean(small[:, :14])) < 10 and float(tf.reduce_mean(small[:, 18:])) > 190


def test_augment_flips_some_images_of_a_batch_and_keeps_shapes():
    x = np.tile(np.arange(4, dtype="float32")[None, None, :, None], (64, 2, 1, 1))
    out = next(iter(ts.data.from_numpy(x).augment(seed=1).dataset(batch_size=64))).numpy()
    flipped = (out[:, 0, 0, 0] == 3).sum()
    assert out.shape == (64, 2, 4, 1) and 10 < flipped < 54
    assert set(out[:, 0, 0, 0].tolist()) <= {0.0, 3.0}


def test_text_standardize_and_vectorize_adapted_on_a_sample():
    texts = np.array(["The cat sat.", "<b>A dog</b> ran!", "the CAT ran", "a cat"] * 2 + ["a bird"] * 12)
    pipe = ts.data.from_numpy({"text": texts, "y": np.arange(20)}).deterministic()
    pipe = pipe.standardize(key="text").vectorize(max_tokens=20, output_sequence_length=4, sample=8, key="text")
    vocab = pipe.vectorizer.get_vocabulary()
    assert "cat" in vocab and "dog" in vocab and "bird" not in vocab and "b" not in vocab
    batches = list(pipe.dataset(batch_size=10))
    assert batches[0]["text"].shape == (10, 4) and batches[0]["text"].dtype == tf.int64
    last = batches[-1]["text"][-1].numpy().tolist()
    assert last == [vocab.index("a"), 1, 0, 0]  # "a bird": "bird" was not in the sample, so it is [UNK] (1)


def _functions_of(ds: tf.data.Dataset) -> dict:
    """name -> FunctionDef of every function in the dataset's graph.

    `ds._variant_tensor` is TensorFlow's private handle on a dataset (checked on 2.21; tf.data has no public way to
    its graph): if a release renames it, both cases of the test below fail with an AttributeError, none passes."""
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(tf.raw_ops.DatasetToGraphV2(input_dataset=ds._variant_tensor).numpy())
    return {f.signature.name: f for f in graph.library.function}


def _set_up_on_cpu(function_def) -> bool:
    from tfscale.data.functions import ATTRIBUTE

    return ATTRIBUTE in function_def.attr and function_def.attr[ATTRIBUTE].b


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_tfscale_functions_skip_grappler_at_set_up_and_the_users_do_not(tmp_path, on_error):
    write_images(tmp_path, per_class=(5, 4), kinds=("png",))

    def users_double(x, y):
        return x * 2.0, y

    pipe = ts.data.image_folder(str(tmp_path), image_size=(8, 8), on_error=on_error).map(users_double)
    functions = _functions_of(pipe.dataset(batch_size=4))
    decoders = [f for f in functions.values() if any(n.op == "ReadFile" for n in f.node_def)]
    users = [f for name, f in functions.items() if "users_double" in name]
    outer = [f for name, f in functions.items() if name.startswith("__inference") and "users_double" not in name]
    assert decoders and users and outer
    assert not any(_set_up_on_cpu(f) for f in users)  # the user's function: TensorFlow's default set-up
    assert all(_set_up_on_cpu(f) for f in outer)  # tfscale's: decode call, rebatch, end-of-pass report
    if on_error == "skip":
        assert any("tail" in name for name in functions)  # the end-of-pass report is one of them
    plain = ts.data.image_folder(str(tmp_path), image_size=(8, 8), on_error=on_error)
    doubled = [x for x, _ in pipe.dataset(batch_size=4)]
    assert sum(int(x.shape[0]) for x in doubled) == 9  # every image read, and the user's map ran on each
    total = sum(float(tf.reduce_sum(x)) for x, _ in plain.dataset(batch_size=4))
    assert total > 0 and sum(float(tf.reduce_sum(x)) for x in doubled) == pytest.approx(2 * total, rel=1e-5)
