"""examples/sentiment end to end: tokenizer parity, training + int8 export, the Celery service, a killed worker.

Real everything: the tweets from the vaderSentiment sdist (fetched once into
the user cache by fetch_data.py), TensorFlow training, tfscale's int8 TFLite
export, a throw-away redis-server on 127.0.0.1 and Celery worker processes.
CI needs the Debian package redis-server and the `examples` extra (celery, redis).
"""

from __future__ import annotations

import collections
import json
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import procs

EXAMPLE = procs.REPO / "examples" / "sentiment"
sys.path.insert(0, str(EXAMPLE))

import fetch_data  # noqa: E402
import services  # noqa: E402
import tweets  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data() -> Path:
    """The tweets, fetched once per machine into ~/.cache/tfscale/sentiment (or $TFSCALE_CACHE)."""
    try:
        return fetch_data.fetch()
    except fetch_data.FetchError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="module")
def redis_server():
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (CI: apt-get install -y redis-server)")
    proc, url = services.start_redis()
    yield url
    services.stop([proc])


@pytest.fixture(scope="module")
def model_dir(data, tmp_path_factory) -> Path:
    """A small model trained by train.py (3 epochs) and exported to int8 TFLite by tfscale."""
    out = tmp_path_factory.mktemp("sentiment")
    done = procs.run_one([str(EXAMPLE / "train.py"), "--data", str(data), "--out", str(out), "--epochs", "3"],
                         timeout=400)
    report = json.loads((out / "train_report.json").read_text())
    assert report["train_examples"] == 3357, done.stdout[-2000:]
    return out


def test_normalize_keeps_emoticons_and_masks_users_and_links():
    assert tweets.normalize("@bob LOVED it!!! :-) http://t.co/x &amp; 2:30pm :D") == \
        "<user> loved it !!! :-) <url> & 2 : 30pm :D"
    assert tweets.normalize("Worst. Day. Ever :(") == "worst . day . ever :("


def test_numpy_encoding_matches_the_text_vectorization_layer(data):
    """The workers' NumPy encoder gives exactly the ids the training pipeline's TextVectorization gives."""
    import tensorflow as tf

    import train

    texts = [t for t in tweets.load(data)][:800]
    vectorizer, _ = train.text_pipeline(texts[:500], max_tokens=1000, sequence_length=12, seed=0)
    vocabulary = tweets.Vocabulary(tuple(vectorizer.get_vocabulary()), 12)
    expected = vectorizer(tf.constant([tweets.normalize(t.text) for t in texts])).numpy()
    got = vocabulary.encode([t.text for t in texts])
    assert vocabulary.size == 1000
    assert (got == 1).any(), "the last 300 tweets should hold out-of-vocabulary tokens"
    np.testing.assert_array_equal(got, expected)


def test_split_is_seeded_and_disjoint(data):
    all_tweets = tweets.load(data)
    train, held_out = tweets.split(all_tweets)
    assert (len(all_tweets), len(train), len(held_out)) == (4196, 3357, 839)
    assert not {t.id for t in train} & {t.id for t in held_out}
    assert [t.id for t in tweets.split(all_tweets)[1]] == [t.id for t in held_out]


def test_micro_batcher_groups_messages_and_reports_failures():
    import scoring

    seen = []

    def score(texts):
        seen.append(len(texts))
        if "boom" in texts:
            raise ValueError("cannot score")
        return [len(t) / 100 for t in texts]

    batcher = scoring.MicroBatcher(score, max_batch=4, max_wait=1.0)
    try:
        futures = [batcher.submit("x" * n) for n in range(10)]
        answers = [f.result(timeout=30) for f in futures]
        failed = batcher.submit("boom")
        with pytest.raises(ValueError, match="cannot score"):
            failed.result(timeout=30)
    finally:
        batcher.close()
    assert [p for p, _ in answers] == pytest.approx([n / 100 for n in range(10)])
    # grouped, never past max_batch, every message in exactly one batch (the last one holds "boom" alone or
    # with others); how the 10 split depends on timing (4, 4, 2 when submitting is fast): printed, not asserted
    print("batches:", seen)
    assert all(1 <= n <= 4 for n in seen) and max(seen) > 1 and sum(seen) == 11, seen
    sizes = [b for _, b in answers]
    assert all(sizes.count(n) % n == 0 for n in set(sizes)) and set(sizes) <= set(seen), (sizes, seen)


def test_int8_tflite_is_as_accurate_as_keras(model_dir):
    report = json.loads((model_dir / "train_report.json").read_text())
    majority = 570 / 839  # positive share of the held-out tweets
    assert report["keras_accuracy"] > majority + 0.08
    assert abs(report["tflite_int8_accuracy"] - report["keras_accuracy"]) <= 0.01
    assert report["tflite_int8_bytes"] < 0.3 * report["vocabulary_size"] * 32 * 4  # int8 embedding, not float


def test_stream_scores_every_held_out_tweet(model_dir, data, tmp_path):
    """stream.py starts its own Redis and 2 workers, streams 300 held-out tweets and reports."""
    out, rows = tmp_path / "stream.json", tmp_path / "per_tweet.jsonl"
    procs.run_one([str(EXAMPLE / "stream.py"), "--model-dir", str(model_dir), "--data", str(data), "--workers", "2",
                   "--concurrency", "8", "--max-batch", "8", "--limit", "300", "--json", str(out),
                   "--per-tweet", str(rows)], timeout=300)
    report = json.loads(out.read_text())
    per_tweet = [json.loads(line) for line in rows.read_text().splitlines()]
    _, held_out = tweets.split(tweets.load(data))
    import scoring

    direct = scoring.Scorer(model_dir).score([t.text for t in held_out[:300]])
    expected_accuracy = np.mean((direct >= 0.5) == np.array([t.label for t in held_out[:300]]))
    assert report["messages"] == 300
    # every one of the 300 held-out tweets came back once, by its own task, with its own score
    assert [r["id"] for r in per_tweet] == [t.id for t in held_out[:300]]
    assert len({r["task_id"] for r in per_tweet}) == 300
    np.testing.assert_allclose([r["positive"] for r in per_tweet], direct, atol=1e-4)
    # both workers scored: one count per worker name (celery's scorer<i>@host), each > 0, and the counts are
    # those of the tweets each worker scored
    per_worker = report["per_worker"]
    assert sorted(name.split("@")[0] for name in per_worker) == ["scorer0", "scorer1"], per_worker
    assert all(n > 0 for n in per_worker.values()), per_worker
    assert collections.Counter(r["worker"] for r in per_tweet) == per_worker, per_worker
    # each tweet scored once: none redelivered by the broker, none sent again by the client
    assert report["redelivered"] == 0 and report["resent"] == 0, report
    assert not any(r["redelivered"] for r in per_tweet)
    assert report["accuracy"] == pytest.approx(expected_accuracy, abs=1e-4)
    assert 1 <= report["mean_batch"] <= 8
    print(f"stream: {report['messages_per_s']} messages/s, latency {report['latency_ms']}")  # reported only


def _count_results(client) -> int:
    return sum(1 for _ in client.scan_iter("celery-task-meta-*", count=1000))


def test_killed_worker_loses_no_message(model_dir, data, redis_server, tmp_path):
    """SIGKILL a worker mid-stream: every task id still gets its result.

    The messages the killed worker had received come back through the broker
    (visibility timeout, flagged redelivered); one it had popped but not yet
    recorded, if any, through the client's resend (client.py explains the gap).
    """
    import redis

    import scoring
    from client import ScoringClient

    texts = [t.text for t in tweets.load(data)[:600]]
    client = ScoringClient(redis_server, resend_after=10)
    results, _ = client.submit_all(texts)
    store = redis.Redis.from_url(redis_server)
    options = dict(broker=redis_server, model_dir=model_dir, concurrency=8, max_batch=8, visibility_timeout=4)
    doomed = services.start_worker("doomed", log_file=tmp_path / "doomed.log", **options)
    survivor = None
    try:
        deadline = time.monotonic() + 120
        while _count_results(store) < 30:
            assert doomed.poll() is None and time.monotonic() < deadline, (tmp_path / "doomed.log").read_text()
            time.sleep(0.01)
        services.kill(doomed, signal.SIGKILL)
        done_by_doomed = _count_results(store)
        assert done_by_doomed < len(texts), "the worker finished before it was killed: nothing to recover"
        survivor = services.start_worker("survivor", log_file=tmp_path / "survivor.log", **options)
        values = client.collect(results, timeout=240)
    finally:
        services.stop([p for p in (doomed, survivor) if p is not None])
    direct = scoring.Scorer(model_dir).score(texts)
    assert len(values) == len(texts)
    assert [v["label"] for v in values] == ["positive" if p >= 0.5 else "negative" for p in direct]
    np.testing.assert_allclose([v["positive"] for v in values], direct, atol=1e-4)
    # What the killed worker held comes back by the broker (flagged redelivered) or, for a message caught in
    # kombu's BRPOP gap, by the client's resend: which path a run takes depends on when the kill lands.
    redelivered = [v for v in values if v["redelivered"]]
    assert redelivered or client.resent, "nothing came back: the killed worker held no message in flight"
    assert {v["worker"].split("@")[0] for v in redelivered} <= {"survivor"}
    assert {v["worker"].split("@")[0] for v in values} == {"doomed", "survivor"}
    assert max(v["batch"] for v in values) > 1, "messages were never scored together"


def test_train_under_tfscale_launch_n_2_trains_one_model_on_two_workers(data, model_dir, tmp_path):
    """README: the example trains under `tfscale launch -n 2` as it does alone: Scale.auto() picks multi_worker
    over the 2 workers, the chief alone exports, and the model is as good as the one-process run's (3 epochs,
    the same global batch; the pipeline's shuffle makes the runs differ slightly)."""
    out = tmp_path / "two"
    done = procs.run_one(["-m", "tfscale", "launch", "-n", "2", "--", sys.executable, str(EXAMPLE / "train.py"),
                          "--data", str(data), "--out", str(out), "--epochs", "3"], timeout=400)
    report = json.loads((out / "train_report.json").read_text())
    alone = json.loads((model_dir / "train_report.json").read_text())
    assert "multi_worker" in report["scale"] and "2 worker(s)" in report["scale"], report["scale"]
    assert report["train_examples"] == alone["train_examples"] == 3357
    assert abs(report["keras_accuracy"] - alone["keras_accuracy"]) <= 0.03, (report, alone)
    assert abs(report["tflite_int8_accuracy"] - report["keras_accuracy"]) <= 0.01
    assert done.stdout.count('"train_examples"') == 1, done.stdout[-3000:]  # only the chief reports and exports
