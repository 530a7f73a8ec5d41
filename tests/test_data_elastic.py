"""An elastic pipeline (`Pipeline.elastic()`): global batch k holds the same records on any number of workers, each
epoch in its own order, the same in every process and run; `starting_at` resumes an epoch at the exact batch.

Workers are input pipelines here (`tf.distribute.InputContext`), read one after the other in this process; the
end-to-end case (2 TensorFlow workers preempted, resumed in 1 process) is in test_checkpoints_cluster.py.
"""

import numpy as np
import pytest
import tensorflow as tf

import tfscale as ts
from tfscale.data import epochs
from tfscale.data.convert import convert
from tfscale.errors import ConfigError

GLOBAL = 12
RECORDS = 203  # 16 whole global batches, 11 records left out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("elastic")
    with open(folder / "t.csv", "w") as f:
        f.write("a,label\n")
        f.writelines(f"{i},{i % 3}\n" for i in range(RECORDS))
    convert(str(folder / "t.csv"), str(folder / "out"), 5, label="label")
    return str(folder / "out")


def _pipeline(shards, *, filtered=False):
    pipe = ts.data.tfrecord(shards, label="label").map(lambda f, y: (f["a"], y))
    if filtered:  # the count is unknown: every worker runs the whole pipeline and slices the global batches
        pipe = pipe.filter(lambda a, y: a % 7 != 0)
    return pipe.shuffle(50, seed=4).elastic()


def _global_batches(pipe, workers: int, epoch: int):
    """Global batches as the workers' rows put together, in worker order (as tf.distribute does)."""
    rows = []
    for w in range(workers):
        context = tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=w,
                                             num_replicas_in_sync=workers)
        epochs.set_epoch(epoch)
        rows.append([a.numpy() for a, _ in pipe.batched_dataset_for(context, GLOBAL // workers, True)])
    assert len({len(r) for r in rows}) == 1, [len(r) for r in rows]  # every worker runs as many steps
    return [np.concatenate([r[k] for r in rows]).tolist() for k in range(len(rows[0]))]


@pytest.mark.parametrize("filtered", [False, True], ids=["rows-picked-before-parsing", "slices-of-the-whole"])
def test_global_batches_hold_the_same_records_on_1_2_3_and_4_workers(shards, filtered):
    pipe = _pipeline(shards, filtered=filtered)
    one = _global_batches(pipe, 1, epoch=2)
    kept = RECORDS - (RECORDS // 7 + 1 if filtered else 0)
    assert len(one) == kept // GLOBAL and all(len(b) == GLOBAL for b in one)
    assert len({a for b in one for a in b}) == len(one) * GLOBAL  # each record at most once
    assert one[0] != sorted(one[0])  # shuffled
    for workers in (2, 3, 4):
        assert _global_batches(pipe, workers, epoch=2) == one, workers


def test_each_epoch_has_its_own_order_the_same_in_a_new_pipeline_and_under_another_global_seed(shards):
    first = _global_batches(_pipeline(shards), 1, epoch=1)
    assert _global_batches(_pipeline(shards), 1, epoch=2) != first
    tf.random.set_seed(99)  # tfscale.fit sets the user's seed between building one input and another
    try:
        assert _global_batches(_pipeline(shards), 2, epoch=1) == first
    finally:
        tf.random.set_seed(None)


def test_starting_at_resumes_the_epoch_at_the_exact_batch_on_another_worker_count(shards):
    pipe = _pipeline(shards)
    whole = _global_batches(pipe, 1, epoch=3)
    rest = _global_batches(pipe.starting_at(5 * GLOBAL), 3, epoch=3)
    assert rest == whole[5:]
    context = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=0, num_replicas_in_sync=3)
    assert int(pipe.starting_at(5 * GLOBAL).batched_dataset_for(context, GLOBAL // 3, True).cardinality()) == \
        len(whole) - 5  # Keras reads the steps of the resumed epoch from it


def test_image_shards_decode_only_their_rows_in_the_same_global_order(tmp_path):
    """Converted image shards (and an image folder): rows are picked from the serialized records (the files),
    decoding comes after, per batch."""
    for label in ("a", "b"):
        (tmp_path / "img" / label).mkdir(parents=True)
        for i in range(20):  # every image one flat colour: its value names it
            pixels = np.full((8, 8, 3), i * 5 + (120 if label == "b" else 0), np.uint8)
            tf.io.write_file(str(tmp_path / "img" / label / f"{i}.png"), tf.io.encode_png(pixels))
    convert(str(tmp_path / "img"), str(tmp_path / "out"), 3)
    pipe = ts.data.image_folder(str(tmp_path / "out"), image_size=(8, 8), scale=None).shuffle(16, seed=1).elastic()
    one, two = _image_batches(pipe, 1), _image_batches(pipe, 2)
    assert len(one) == 40 // GLOBAL and one == two
    assert len({v for b in one for v in b}) == len(one) * GLOBAL
    folder = ts.data.image_folder(str(tmp_path / "img"), image_size=(8, 8), scale=None).shuffle(16, seed=1).elastic()
    assert _image_batches(folder, 1) == _image_batches(folder, 4)


def _image_batches(pipe, workers):
    """Each global batch as the first pixel value of each image."""
    rows = []
    for w in range(workers):
        context = tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=w,
                                             num_replicas_in_sync=workers)
        epochs.set_epoch(0)
        batches = pipe.batched_dataset_for(context, GLOBAL // workers, True)
        rows.append([np.asarray((b[0] if isinstance(b, tuple) else b)).reshape(GLOBAL // workers, -1)[:, 0]
                     for b in batches])
    return [np.concatenate([r[k] for r in rows]).tolist() for k in range(len(rows[0]))]


def test_what_cannot_keep_one_order_is_refused_naming_the_fix(shards):
    pipe = ts.data.tfrecord(shards, label="label")
    with pytest.raises(ConfigError, match="cache"):
        pipe.elastic().cache()
    with pytest.raises(ConfigError, match="service"):
        pipe.service("grpc://127.0.0.1:1").elastic()
    with pytest.raises(ConfigError, match=r"\.elastic\(\)"):
        pipe.starting_at(24)
