"""Streams the held-out tweets through the scoring service and reports accuracy, throughput and latency.

Starts a Redis server on 127.0.0.1 (unless --broker names one) and N Celery
workers that hold the int8 TFLite model, submits every held-out tweet as one
Celery task (at --rate messages/s, or as fast as possible), reads each result
back by its task id, then stops everything it started.

    python examples/sentiment/stream.py --model-dir saved_models/sentiment --workers 2 --json stream.json

Latency is measured per message from its submission (client clock) to its
result being stored (worker clock; both on this host), so it covers the
broker, queueing, micro-batching and scoring. Throughput is messages over the
time from the first submission to the last result.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import fetch_data  # noqa: E402
from client import ScoringClient  # noqa: E402
import services  # noqa: E402
import tweets  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", default="saved_models/sentiment", help="folder written by train.py")
    p.add_argument("--data", help="tweets_GroundTruth.txt (default: from the fetch_data.py cache)")
    p.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    p.add_argument("--concurrency", type=int, default=32, help="threads per worker (messages in flight)")
    p.add_argument("--max-batch", type=int, default=32, help="messages per micro-batch at most")
    p.add_argument("--max-wait-ms", type=float, default=5, help="how long a micro-batch stays open")
    p.add_argument("--rate", type=float, default=0, help="messages/s to submit (0: as fast as possible)")
    p.add_argument("--limit", type=int, default=0, help="stream only the first N held-out tweets (0: all)")
    p.add_argument("--visibility-timeout", type=float, default=60, help="seconds before redelivery")
    p.add_argument("--resend-after", type=float, default=0,
                   help="seconds without a result before a message is sent again (default: visibility timeout + 30)")
    p.add_argument("--broker", help="redis://HOST:PORT/DB of a running Redis (default: start one here)")
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for all results")
    p.add_argument("--json", dest="json_path", help="also write the report here")
    p.add_argument("--per-tweet", dest="per_tweet_path", metavar="PATH",
                   help="also write one JSON line per tweet here: its id, task id, the worker that scored it, "
                        "P(positive), label and whether it was redelivered")
    p.add_argument("--log-dir", help="folder for the Redis and worker logs (default: a temporary one)")
    return p.parse_args(argv)


def summarize(values: list[dict], sent_at: list[float], labels: list[int], args: argparse.Namespace) -> dict:
    """The report: accuracy, messages/s, latency percentiles and how the messages were served."""
    latency_ms = np.array([v["done_at"] - s for v, s in zip(values, sent_at)]) * 1000
    predicted = [int(v["label"] == "positive") for v in values]
    wall = max(v["done_at"] for v in values) - min(sent_at)
    workers: dict[str, int] = {}
    for v in values:
        workers[v["worker"]] = workers.get(v["worker"], 0) + 1
    return {
        "messages": len(values), "workers": args.workers, "concurrency": args.concurrency,
        "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "offered_rate": args.rate or None,
        "accuracy": round(float(np.mean(np.array(predicted) == np.array(labels))), 4),
        "messages_per_s": round(len(values) / wall, 1), "wall_seconds": round(wall, 3),
        "latency_ms": {q: round(float(np.percentile(latency_ms, p)), 2)
                       for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "mean_batch": round(float(np.mean([v["batch"] for v in values])), 2),
        "redelivered": sum(bool(v["redelivered"]) for v in values), "per_worker": workers,
    }


def table(report: dict) -> str:
    lat = report["latency_ms"]
    rows = [("messages", report["messages"]), ("accuracy", f"{report['accuracy']:.2%}"),
            ("messages/s", report["messages_per_s"]), ("latency p50", f"{lat['p50']} ms"),
            ("latency p90", f"{lat['p90']} ms"), ("latency p99", f"{lat['p99']} ms"),
            ("latency max", f"{lat['max']} ms"),
            ("mean batch", report["mean_batch"]), ("redelivered", report["redelivered"]), ("resent", report["resent"]),
            ("workers", f"{report['workers']} x {report['concurrency']} threads"),
            ("offered rate", report["offered_rate"] or "as fast as possible")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def run(args: argparse.Namespace, log_dir: Path) -> dict:
    """Starts Redis (unless given) and the workers, streams the held-out tweets, stops what it started."""
    _, held_out = tweets.split(tweets.load(args.data or fetch_data.fetch_or_exit()))
    held_out = held_out[: args.limit] if args.limit else held_out
    started = []
    try:
        broker = args.broker
        if not broker:
            redis_proc, broker = services.start_redis(log_file=log_dir / "redis.log")
            started.append(redis_proc)
        names = [f"scorer{i}" for i in range(args.workers)]
        workers = [services.start_worker(name, broker=broker, model_dir=args.model_dir,
                                         concurrency=args.concurrency, max_batch=args.max_batch,
                                         max_wait_ms=args.max_wait_ms, visibility_timeout=args.visibility_timeout,
                                         log_file=log_dir / f"{name}.log") for name in names]
        started[:0] = workers
        client = ScoringClient(broker, resend_after=args.resend_after or args.visibility_timeout + 30)
        services.wait_for_workers(client.app, names, workers)
        results, sent_at = client.submit_all([t.text for t in held_out], args.rate)
        values = client.collect(results, timeout=args.timeout)
        if args.per_tweet_path:
            write_per_tweet(Path(args.per_tweet_path), held_out, results, values)
        return summarize(values, sent_at, [t.label for t in held_out], args) | {"resent": client.resent}
    finally:
        services.stop(started)


def write_per_tweet(path: Path, held_out: list, results: list, values: list[dict]) -> None:
    """One JSON line per tweet, in the order sent: what each tweet's own task came back with."""
    with open(path, "w") as f:
        for tweet, result, value in zip(held_out, results, values, strict=True):
            f.write(json.dumps({"id": tweet.id, "task_id": result.id, "worker": value["worker"],
                                "positive": value["positive"], "label": value["label"],
                                "redelivered": value["redelivered"]}) + "\n")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sentiment-logs-") as tmp:
        log_dir = Path(args.log_dir or tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            report = run(args, log_dir)
        except BaseException:
            for log in sorted(log_dir.glob("*.log")):
                print(f"--- {log.name} (last lines)\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
    print(table(report))
    print(json.dumps(report, indent=2))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
