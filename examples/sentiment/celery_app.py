"""The Celery app of the scoring service: one task per message, scored in micro-batches.

Start a worker (stream.py does this for you):

    SENTIMENT_BROKER=redis://127.0.0.1:6379/0 SENTIMENT_MODEL_DIR=saved_models/sentiment \\
        celery --workdir examples/sentiment -A celery_app worker --pool threads --concurrency 32 -Q sentiment

Submit and read back by task id:

    result = score.delay("what a day :)")
    result.get()   # {"label": "positive", "positive": 0.93, "batch": 7, ...}

No message is lost when a worker dies:
- acks late: a message is acknowledged after its result is stored, not on receipt;
- with Redis as broker, a message that was received but never acknowledged
  (its worker was killed) goes back to the queue once `visibility_timeout`
  seconds have passed, flagged ``redelivered``; another worker scores it.
  The visibility timeout must be longer than any message can wait inside a
  live worker (prefetched plus scoring), or live messages are delivered twice
  (harmless here: scoring is idempotent, a result is stored under its task id);
- reject on worker lost: with the prefork pool, a killed child's message is
  requeued at once instead of failed;
- the one gap left (a message popped by a worker that dies before recording
  it as unacknowledged) is closed by the client, which resends by task id
  (client.py).

Environment:
    SENTIMENT_BROKER              Redis URL, broker and result backend (default redis://127.0.0.1:6379/0)
    SENTIMENT_MODEL_DIR           folder written by train.py (workers only)
    SENTIMENT_MAX_BATCH           messages per micro-batch at most (default 32)
    SENTIMENT_MAX_WAIT_MS         how long a batch stays open after its first message (default 5)
    SENTIMENT_VISIBILITY_TIMEOUT  seconds before an unacknowledged message is redelivered (default 60)
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

from celery import Celery, signals

sys.path.insert(0, str(Path(__file__).resolve().parent))

QUEUE = "sentiment"
BROKER = os.environ.get("SENTIMENT_BROKER", "redis://127.0.0.1:6379/0")
VISIBILITY_TIMEOUT = float(os.environ.get("SENTIMENT_VISIBILITY_TIMEOUT", "60"))

app = Celery("sentiment", broker=BROKER, backend=BROKER)
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_serializer="json", result_serializer="json", accept_content=["json"],
    result_expires=3600,
    worker_prefetch_multiplier=2,
    broker_connection_retry_on_startup=True,
    # Redelivery: unacknowledged messages older than visibility_timeout are put back; workers look every second.
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT, "unacked_restore_interval": 1,
                              "unacked_restore_throttle": 1},
)

_batcher = None
_loading = threading.Lock()


def _build_batcher():
    from scoring import MicroBatcher, Scorer

    model_dir = os.environ.get("SENTIMENT_MODEL_DIR")
    if not model_dir:
        raise RuntimeError("SENTIMENT_MODEL_DIR is not set: point it to the folder train.py wrote")
    max_batch = int(os.environ.get("SENTIMENT_MAX_BATCH", "32"))
    scorer = Scorer(model_dir, max_batch=max_batch)
    scorer.score(["warm up"])
    return MicroBatcher(scorer.score, max_batch=max_batch,
                        max_wait=float(os.environ.get("SENTIMENT_MAX_WAIT_MS", "5")) / 1000)


@signals.worker_init.connect
def load_model(**_) -> None:
    """Loads the TFLite model once per worker process, before the first message."""
    global _batcher
    with _loading:
        if _batcher is None:
            _batcher = _build_batcher()


@app.task(name="sentiment.score", bind=True)
def score(self, text: str) -> dict:
    """Scores one message; returns its label, P(positive) and how it was served."""
    if _batcher is None:
        load_model()
    probability, batch = _batcher.submit(text).result(timeout=120)
    return {"label": "positive" if probability >= 0.5 else "negative", "positive": round(probability, 6),
            "batch": batch, "worker": self.request.hostname,
            "redelivered": bool((self.request.delivery_info or {}).get("redelivered")), "done_at": time.time()}
