"""The batch contract: one global batch size, the per-replica batch and the effective batch follow from it."""

from __future__ import annotations

import dataclasses

from tfscale.data.batching import batch_sizes
from tfscale.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """The batch sizes of one training run.

    Attributes:
        global_batch_size: examples per step over all replicas.
        per_replica_batch_size: examples per step on each replica.
        num_replicas: replicas in sync.
        accumulation_steps: steps whose gradients make one optimizer update.
    """

    global_batch_size: int
    per_replica_batch_size: int
    num_replicas: int
    accumulation_steps: int = 1

    @property
    def effective_batch_size(self) -> int:
        """Examples behind one optimizer update: what the learning rate must be scaled for."""
        return self.global_batch_size * self.accumulation_steps


def plan_batch(num_replicas: int, global_batch_size: int | None = None, per_replica_batch_size: int | None = None,
               accumulation_steps: int = 1) -> BatchPlan:
    """The batch plan from a global or a per-replica batch size.

    Args:
        num_replicas: replicas in sync (`scale.num_replicas`).
        global_batch_size: examples per step over all replicas.
        per_replica_batch_size: examples per step on each replica (instead of the global one).
        accumulation_steps: gradient accumulation steps per optimizer update.

    Raises:
        ConfigError: no batch size, both given inconsistently, or a global batch that does not
            divide by the number of replicas (the message proposes the nearest sizes that do).

    Example:
        plan_batch(4, global_batch_size=256).per_replica_batch_size  # 64
    """
    if accumulation_steps < 1:
        raise ConfigError(f"gradient_accumulation_steps must be >= 1, got {accumulation_steps}",
                          where="gradient_accumulation_steps", fix="give 1 (no accumulation) or more")
    global_batch, per_replica = batch_sizes(num_replicas, global_batch_size, per_replica_batch_size)
    return BatchPlan(global_batch, per_replica, num_replicas, accumulation_steps)
