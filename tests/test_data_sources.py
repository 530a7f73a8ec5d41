"""Sources of tfscale.data: CSV, text lines, TFRecord, NumPy, pandas, generators, Dask, local TFDS."""

from __future__ import annotations


import numpy as np
import pytest
import tensorflow as tf
from test_data_helpers import contexts, values, write_csv, write_tfrecord

import tfscale as ts
from tfscale.errors import ConfigError, DataError


def test_csv_types_defaults_label_and_columns(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("id,x,name,label\nr0,0.5,a,1\nr1,,b,2\n\nr2,1.5,,0\n")
    pipe = ts.data.csv(str(path), label="label", defaults={"x": -1.0}).deterministic()
    rows = [(f["id"].numpy(), float(f["x"]), f["name"].numpy(), int(y)) for f, y in pipe.dataset()]
    assert rows == [(b"r0", 0.5, b"a", 1), (b"r1", -1.0, b"b", 2), (b"r2", 1.5, b"", 0)]
    picked = ts.data.csv(str(path), columns=["x"], column_types={"x": "string"}).deterministic()
    assert [r["x"].numpy() for r in picked.dataset()] == [b"0.5", b"", b"1.5"]
    with pytest.raises(DataError, match="unknown column"):
        ts.data.csv(str(path), label="nope")


def test_csv_files_are_sharded_by_file_and_stream_in_batches(tmp_path):
    files = [write_csv(tmp_path / f"part{i}.csv", 10, start=10 * i) for i in range(3)]
    pipe = ts.data.csv(str(tmp_path / "*.csv"))
    assert len(pipe.source.units) == 3
    shards = [sorted(r["id"].numpy() for r in pipe.dataset_for(c)) for c in contexts(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(f"r{i}".encode() for i in range(30))
    # Fewer files than pipelines: records are dealt out (DATA sharding), still disjoint and complete.
    one = ts.data.csv(files[0])
    parts = [sorted(r["id"].numpy() for r in one.dataset_for(c)) for c in contexts(2)]
    assert len(parts[0]) == len(parts[1]) == 5 and not set(parts[0]) & set(parts[1])
    batch = next(iter(pipe.dataset(batch_size=8)))
    assert batch["x"].shape == (8,)


def test_text_lines_numbered_and_blank_lines_left_out(tmp_path):
    (tmp_path / "a.txt").write_text("Hello World!\n\nsecond line\n")
    pipe = ts.data.text_lines(str(tmp_path / "a.txt")).deterministic()
    assert values(pipe) == [b"Hello World!", b"second line"]
    assert values(pipe.standardize()) == [b"hello world", b"second line"]


def test_tfrecord_with_feature_spec(tmp_path):
    write_tfrecord(tmp_path / "a.tfrecord", range(5))
    write_tfrecord(tmp_path / "b.tfrecord", range(5, 9))
    pipe = ts.data.tfrecord(str(tmp_path / "*.tfrecord"), {"v": "int64"}).deterministic()
    assert sorted(values(pipe, "v")) == list(range(9))
    raw = ts.data.tfrecord(str(tmp_path / "a.tfrecord"))
    assert len(values(raw)) == 5
    with pytest.raises(ConfigError, match="unknown feature type"):
        ts.data.tfrecord(str(tmp_path / "a.tfrecord"), {"v": "complex"})


def test_from_numpy_and_pandas():
    import pandas as pd

    x, y = np.arange(12, dtype="float32").reshape(6, 2), np.arange(6)
    pipe = ts.data.from_numpy(x, y).deterministic()
    pairs = [(a.numpy().tolist(), int(b)) for a, b in pipe.dataset()]
    assert pairs[2] == ([4.0, 5.0], 2) and len(pairs) == 6
    halves = [[int(b) for _, b in pipe.dataset_for(c)] for c in contexts(2)]
    assert sorted(halves[0] + halves[1]) == list(range(6)) and len(halves[0]) == 3
    frame = pd.DataFrame({"a": [1, 2, 3], "s": ["x", "y", "z"], "label": [0, 1, 0]})
    rows = list(ts.data.from_pandas(frame, label="label").deterministic().dataset())
    assert [(int(f["a"]), f["s"].numpy(), int(y)) for f, y in rows] == [(1, b"x", 0), (2, b"y", 1), (3, b"z", 0)]
    with pytest.raises(DataError, match="different lengths"):
        ts.data.from_numpy(x, y[:3])


def test_from_generator_is_called_for_each_pass():
    def gen():
        yield from range(4)

    pipe = ts.data.from_generator(gen, tf.TensorSpec([], tf.int64)).deterministic()
    assert values(pipe) == [0, 1, 2, 3]
    assert values(pipe.repeat(2)) == [0, 1, 2, 3] * 2


def test_from_dask_spreads_partitions_over_workers():
    import dask.dataframe as dd
    import pandas as pd

    frame = dd.from_pandas(pd.DataFrame({"a": np.arange(40), "label": np.arange(40) % 2}), npartitions=4)
    pipe = ts.data.from_dask(frame, label="label", chunk_rows=7)
    assert len(pipe.source.units) == 4
    shards = [sorted(int(f["a"]) for f, _ in pipe.dataset_for(c)) for c in contexts(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(40))
    assert len(shards[0]) == 20  # two whole partitions of 10 rows each


def test_tfds_reads_a_local_builder_and_never_downloads(tmp_path):
    import tensorflow_datasets as tfds

    class Tiny(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
                {"x": tfds.features.Tensor(shape=(2,), dtype=np.float32), "y": tfds.features.ClassLabel(num_classes=2)}),
                supervised_keys=("x", "y"))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(10)}

        def _generate_examples(self, n):
            for i in range(n):
                yield i, {"x": np.array([i, i], np.float32), "y": i % 2}

    builder = Tiny(data_dir=str(tmp_path))
    builder.download_and_prepare()
    pipe = ts.data.tfds(builder_dir=builder.data_dir).deterministic()
    xs = sorted(float(x[0]) for x, _ in pipe.dataset())
    assert xs == [float(i) for i in range(10)]
    with pytest.raises(DataError, match="not"):
        ts.data.tfds("tiny_missing", data_dir=str(tmp_path / "empty"))
