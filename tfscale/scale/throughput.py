"""How fast training goes: examples/s, steps/s, per replica, and the share of time spent waiting for input."""

from __future__ import annotations

import logging
import time

import keras

log = logging.getLogger("tfscale")


class InputTimer:
    """Measures how long the training loop waits for its next batch.

    `wrap(dataset)` goes at the very end of an input pipeline (after prefetch): each
    request first takes a timestamp, then pulls the next element (blocking while the
    pipeline is behind), then adds the time blocked to a counter. When the pipeline
    keeps up, the prefetch buffer answers at once and the counter stays near zero.

    It times tf.data input only (TensorFlow is imported on the first `wrap`); its
    counter is a plain local variable, created outside any strategy's scope (a
    wrap inside one leaves the dataset as it is).
    """

    def __init__(self):
        self.seconds = None

    def wrap(self, dataset):
        """`dataset` (a tf.data.Dataset) with the same elements, timing how long each one is waited for."""
        import tensorflow as tf

        if self.seconds is None:
            if tf.distribute.has_strategy():  # a variable made here would be a distributed one
                return dataset
            self.seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name="tfscale_input_wait")
        stamps = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat().map(lambda _: tf.timestamp())

        def measure(requested, element):
            with tf.control_dependencies([self.seconds.assign_add(tf.timestamp() - requested)]):
                return tf.nest.map_structure(tf.identity, element)

        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False  # keep the timing at the consumer
        # Zip pulls its inputs in order: the timestamp first, then the (possibly blocking) element.
        return tf.data.Dataset.zip(stamps, dataset).map(measure).with_options(options)

    @property
    def active(self) -> bool:
        """It wrapped an input, so `read` measures something."""
        return self.seconds is not None

    def read(self) -> float:
        return float(self.seconds.numpy()) if self.seconds is not None else 0.0


class Throughput(keras.callbacks.Callback):
    """Logs examples/s, steps/s, per-replica examples/s and input-wait share, once per epoch.

    The first step of each epoch is left out (it includes tracing and the first fill of
    the input pipeline). Figures are kept in `history` (one dict per epoch) on every
    worker; the chief logs them.

    Args:
        global_batch_size: examples per step over all replicas (None: steps/s only).
        num_replicas: replicas in sync, for the per-replica figure.
        timer: an `InputTimer` wrapped around this run's input (None: no input-wait figure).
        verbose: log each epoch's figures (set on the chief only).
    """

    def __init__(self, global_batch_size: int | None, num_replicas: int = 1, *, timer: InputTimer | None = None,
                 verbose: bool = True):
        super().__init__()
        self.global_batch_size = global_batch_size
        self.num_replicas = max(1, num_replicas)
        self.timer = timer
        self.verbose = verbose
        self.history: list[dict[str, float]] = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = None
        self._last = None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._start is None:
            self._start = (now, batch, self.timer.read() if self.timer else 0.0)
        else:
            self._last = (now, batch)

    def on_epoch_end(self, epoch, logs=None):
        if self._start is None or self._last is None:
            return
        figures = self._figures(epoch)
        self.history.append(figures)
        if self.verbose:
            log.info("%s", describe(figures))

    def _figures(self, epoch: int) -> dict[str, float]:
        (t0, batch0, wait0), (t1, batch1) = self._start, self._last
        elapsed, steps = max(t1 - t0, 1e-9), batch1 - batch0
        figures = {"epoch": epoch + 1, "steps": steps, "seconds": elapsed, "steps_per_second": steps / elapsed}
        if self.global_batch_size:
            figures["examples_per_second"] = steps * self.global_batch_size / elapsed
            figures["examples_per_second_per_replica"] = figures["examples_per_second"] / self.num_replicas
        if self.timer and self.timer.active:
            figures["input_wait_fraction"] = min(1.0, max(0.0, (self.timer.read() - wait0) / elapsed))
        return figures

    @property
    def summary(self) -> dict[str, float]:
        """The last epoch's figures ({} before the first epoch of two steps or more)."""
        return self.history[-1] if self.history else {}


def describe(figures: dict[str, float]) -> str:
    """One line: 'epoch 2: 5120 examples/s (2560 per replica), 80.0 steps/s, input wait 3%'."""
    parts = [f"epoch {figures['epoch']}:"]
    if "examples_per_second" in figures:
        parts.append(f"{figures['examples_per_second']:.0f} examples/s "
                     f"({figures['examples_per_second_per_replica']:.0f} per replica),")
    parts.append(f"{figures['steps_per_second']:.1f} steps/s")
    if "input_wait_fraction" in figures:
        parts[-1] += ","
        parts.append(f"input wait {100 * figures['input_wait_fraction']:.0f}% of the time")
    return " ".join(parts)
