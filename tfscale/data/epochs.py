"""The epoch an input pipeline is read for: what makes an elastic pipeline's shuffles a function of the epoch.

A tf.data shuffle reshuffled per iteration gives epoch k the k-th order of the
dataset object it belongs to, so a restarted job (a new object) would read
epoch k in epoch 0's order. A pipeline with `elastic()` instead asks this clock
for its epoch each time an epoch's iterator starts, and seeds its shuffles with
(seed, epoch): the order of epoch k is the same in every process and every run.

`scale.callbacks()` and `tfscale.fit` set the clock to Keras' epoch in
`on_epoch_begin` (before Keras starts the epoch's iterator); from then on every
pass reads the epoch set last. That matters: Keras also starts an iterator it
throws away (at the end of each epoch, and to build the model), whose first
read may come after the next `on_epoch_begin`. Without those callbacks the
clock counts the passes started in this process. Standard library only.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_epoch = 0
_driven = False  # set by a callback: passes read the epoch set last and never move it


def set_epoch(epoch: int) -> None:
    """The passes of elastic pipelines from now on read epoch `epoch` (Keras' 0-based epoch)."""
    global _epoch, _driven
    with _lock:
        _epoch, _driven = int(epoch), True


def next_epoch() -> int:
    """The epoch of the pass starting now (counted by passes where no callback sets it)."""
    global _epoch
    with _lock:
        epoch = _epoch
        if not _driven:
            _epoch += 1
        return epoch
