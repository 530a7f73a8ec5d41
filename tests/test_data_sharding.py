"""Pipelines under scale.distribute: FILE sharding by worker, for real over 2 processes on 127.0.0.1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from procs import REPO, run_workers
from test_data_helpers import contexts

import tfscale as ts


def _csv_files(folder, count, rows):
    for i in range(count):
        with open(folder / f"part{i}.csv", "w") as f:
            f.write("id,x,label\n")
            f.writelines(f"{n},{n * 0.1},{n % 3}\n" for n in range(i * rows, (i + 1) * rows))


def test_pipeline_options_turn_off_tf_auto_sharding_and_pick_file_or_data():
    pipe = ts.data.from_numpy(np.arange(10))
    ds = pipe.dataset_for(contexts(2)[0])
    assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF
    assert pipe.source.units is None  # in-memory: DATA sharding
    assert [int(v) for v in ds] == [0, 2, 4, 6, 8]


def test_distribute_batches_a_pipeline_per_replica():
    scale = ts.Scale("one_device")
    dist = scale.distribute(ts.data.from_numpy(np.arange(10)).deterministic().map(lambda x: x * 2, vectorized=True),
                            global_batch_size=4)
    assert [b.numpy().tolist() for b in dist] == [[0, 2, 4, 6], [8, 10, 12, 14]]


@pytest.mark.slow
def test_two_workers_read_disjoint_files_and_fit(tmp_path):
    _csv_files(tmp_path, 4, 10)
    outs = run_workers(2, [str(REPO / "tests" / "workers" / "data_multiworker.py"), str(tmp_path),
                           str(tmp_path / "part*.csv")], env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    ids = [json.load(open(tmp_path / f"ids.{i}.json")) for i in range(2)]
    assert len(ids[0]) == len(ids[1]) == 20
    assert sorted(ids[0] + ids[1]) == list(range(40))
    assert {n // 10 for n in ids[0]} == {0, 2} and {n // 10 for n in ids[1]} == {1, 3}  # whole files per worker
    for out in outs:
        assert "fit loss=" in out.stdout
        assert "sharding policy" not in out.stdout.lower() and "unshardable" not in out.stdout.lower()
