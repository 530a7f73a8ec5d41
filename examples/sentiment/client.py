"""The client of the scoring service: one Celery task per message, results read back by task id.

Delivery is at least once, end to end. On the broker side (celery_app.py) a
message is acknowledged only after its result is stored, and Redis puts
unacknowledged messages back after the visibility timeout. That leaves one
gap: kombu's Redis transport takes a message off the queue with BRPOP and
only then records it as unacknowledged, so a worker killed between the two
(the reply is in its socket, not yet read) takes that message with it. The
client closes the gap: a message whose result has not arrived `resend_after`
seconds after it was sent is sent again under the same task id. Scoring is
idempotent and results are stored by task id, so a duplicate changes nothing.
`resend_after` should exceed the visibility timeout plus the longest queueing
delay expected, so resends stay rare.
"""

from __future__ import annotations

import time

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from celery.result import AsyncResult, ResultSet

TASK, QUEUE = "sentiment.score", "sentiment"


class ScoringClient:
    """Submits messages to the scoring service and collects their results.

    Args:
        broker: the Redis URL the workers use (broker and result backend).
        resend_after: seconds without a result before a message is sent again.

    Example:
        client = ScoringClient("redis://127.0.0.1:6379/0")
        results, _ = client.submit_all(["so happy :)", "worst day"])
        client.collect(results, timeout=60)   # [{"label": "positive", ...}, {"label": "negative", ...}]
    """

    def __init__(self, broker: str, *, resend_after: float = 90.0):
        self.app = Celery("sentiment-client", broker=broker, backend=broker)
        self.app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                             broker_connection_retry_on_startup=True)
        self.resend_after = resend_after
        self.resent = 0
        self._texts: dict[str, str] = {}

    def submit(self, text: str, *, task_id: str | None = None, producer=None) -> AsyncResult:
        """Sends one message; its task id is the handle to its result."""
        result = self.app.send_task(TASK, (text,), queue=QUEUE, task_id=task_id, producer=producer)
        self._texts[result.id] = text
        return result

    def submit_all(self, texts: list[str], rate: float = 0) -> tuple[list[AsyncResult], list[float]]:
        """Sends one message per text, paced at `rate`/s when given; returns (results, send times)."""
        results, sent_at = [], []
        start = time.monotonic()
        with self.app.producer_or_acquire() as producer:  # one connection for the whole stream
            for i, text in enumerate(texts):
                if rate > 0 and (delay := start + i / rate - time.monotonic()) > 0:
                    time.sleep(delay)
                sent_at.append(time.time())
                results.append(self.submit(text, producer=producer))
        return results, sent_at

    def collect(self, results: list[AsyncResult], *, timeout: float = 300) -> list[dict]:
        """Every result's value, in order; messages without a result for `resend_after` s are sent again.

        Raises:
            celery.exceptions.TimeoutError: some result is still missing after `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        pending = list(results)
        while pending:
            wait = min(self.resend_after, deadline - time.monotonic())
            try:
                ResultSet(pending, app=self.app).join_native(timeout=max(wait, 0.1), propagate=True)
                break
            except CeleryTimeout:
                pending = [r for r in pending if not r.ready()]
                if time.monotonic() >= deadline:
                    raise CeleryTimeout(f"{len(pending)} of {len(results)} results missing after {timeout} s") \
                        from None
                for r in pending:
                    self.submit(self._texts[r.id], task_id=r.id)
                self.resent += len(pending)
        return [r.get(timeout=1) for r in results]
