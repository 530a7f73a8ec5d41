"""Scoring with the int8 TFLite model in micro-batches: what each Celery worker holds.

`Scorer` encodes texts with the vocabulary (NumPy, no TensorFlow) and runs the
TFLite file with `ai_edge_litert.interpreter`. `MicroBatcher` lets many
threads submit one message each and scores them together: a batch closes when
it holds `max_batch` messages or `max_wait` seconds after its first message
arrived, whichever comes first. The Celery tasks (celery_app.py) run in a
thread pool and block on the future they get back, so one message stays one
task with its own id, acknowledged only after its result is stored.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from tweets import Vocabulary

log = logging.getLogger("sentiment")

MODEL_FILE, VOCABULARY_FILE = "sentiment_int8.tflite", "vocabulary.json"


class Scorer:
    """P(positive) for texts, from the files train.py writes into one folder.

    Args:
        model_dir: folder with sentiment_int8.tflite and vocabulary.json.
        max_batch: largest batch one interpreter call takes; larger inputs are cut into pieces.
        num_threads: LiteRT threads per call (1 keeps workers from competing for cores).

    Interpreters are kept per batch size, rounded up to a power of two, so a
    call never reallocates tensors: a batch of 5 runs padded to 8.
    """

    def __init__(self, model_dir: str | Path, *, max_batch: int = 64, num_threads: int = 1,
                 model_file: str = MODEL_FILE):
        self.model_path = Path(model_dir) / model_file
        self.vocabulary = Vocabulary.load(Path(model_dir) / VOCABULARY_FILE)
        self.model_bytes = self.model_path.read_bytes()
        self.max_batch = max_batch
        self.num_threads = num_threads
        self._interpreters: dict[int, object] = {}

    def _interpreter(self, batch: int):
        if batch not in self._interpreters:
            from ai_edge_litert.interpreter import Interpreter

            interpreter = Interpreter(model_content=self.model_bytes, num_threads=self.num_threads)
            inp = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(inp["index"], [batch, self.vocabulary.sequence_length])
            interpreter.allocate_tensors()
            self._interpreters[batch] = interpreter
        return self._interpreters[batch]

    def _run(self, ids: np.ndarray) -> np.ndarray:
        bucket = 1 << max(0, len(ids) - 1).bit_length()
        padded = np.zeros((bucket, ids.shape[1]), dtype=np.int32)
        padded[: len(ids)] = ids
        interpreter = self._interpreter(bucket)
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.set_tensor(inp["index"], padded.astype(inp["dtype"]))
        interpreter.invoke()
        probs = interpreter.get_tensor(out["index"])[: len(ids)]
        scale, zero_point = out["quantization"]
        if scale:  # int8 / uint8 output: back to probabilities
            probs = (probs.astype(np.float32) - zero_point) * scale
        return probs[:, 1].astype(np.float32)

    def score(self, texts: list[str]) -> np.ndarray:
        """P(positive) for each text, float32, shape (len(texts),)."""
        ids = self.vocabulary.encode(texts)
        parts = [self._run(ids[i:i + self.max_batch]) for i in range(0, len(ids), self.max_batch)]
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


class MicroBatcher:
    """Collects messages from many threads into batches for one scoring function.

    Args:
        score: texts → one float per text; called from the batcher's own thread only.
        max_batch: messages per batch at most.
        max_wait: seconds a batch stays open after its first message.

    Example:
        batcher = MicroBatcher(Scorer("saved_models/sentiment").score, max_batch=32, max_wait=0.005)
        probability, batch_size = batcher.submit("what a day :)").result()
    """

    _STOP = object()

    def __init__(self, score, *, max_batch: int = 32, max_wait: float = 0.005):
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait >= 0, got {max_batch} and {max_wait}")
        self._score, self.max_batch, self.max_wait = score, max_batch, max_wait
        self._queue: queue.Queue = queue.Queue()
        self.batches = 0
        self._thread = threading.Thread(target=self._loop, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, text: str) -> Future:
        """A future for (P(positive), size of the batch the message was scored in)."""
        future: Future = Future()
        self._queue.put((text, future))
        return future

    def close(self) -> None:
        self._queue.put(self._STOP)
        self._thread.join()

    def _collect(self, first) -> tuple[list, bool]:
        batch, deadline = [first], time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is self._STOP:
                return batch, True
            batch.append(item)
        return batch, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is self._STOP:
                break
            batch, stop = self._collect(first)
            try:
                probs = self._score([text for text, _ in batch])
            except Exception as error:  # noqa: BLE001 - every waiting message learns why
                log.exception("scoring a batch of %d failed", len(batch))
                for _, future in batch:
                    future.set_exception(error)
                continue
            self.batches += 1
            for (_, future), prob in zip(batch, probs):
                future.set_result((float(prob), len(batch)))
