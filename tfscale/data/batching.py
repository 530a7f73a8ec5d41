"""The batch contract: global and per-replica batch sizes, one derived from the other.

No TensorFlow here: both engines (tf.distribute and keras.distribution on JAX) use it.
"""

from __future__ import annotations

from tfscale.errors import ConfigError


def batch_sizes(num_replicas: int, global_batch_size: int | None = None,
                per_replica_batch_size: int | None = None) -> tuple[int, int]:
    """Returns (global, per-replica) batch sizes from either one of them.

    Raises:
        ConfigError: neither or both (inconsistently) given, or the global batch
            does not divide by the number of replicas.
    """
    if global_batch_size is None and per_replica_batch_size is None:
        raise ConfigError("no batch size given", where="global_batch_size / per_replica_batch_size",
                          fix="give global_batch_size=... (or per_replica_batch_size=...)")
    if per_replica_batch_size is not None:
        if per_replica_batch_size < 1:
            raise ConfigError(f"per_replica_batch_size must be >= 1, got {per_replica_batch_size}",
                              where="per_replica_batch_size", fix="give a positive whole number")
        derived = per_replica_batch_size * num_replicas
        if global_batch_size is not None and global_batch_size != derived:
            raise ConfigError(f"global_batch_size={global_batch_size} contradicts per_replica_batch_size="
                              f"{per_replica_batch_size} x {num_replicas} replicas = {derived}",
                              where="batch sizes", fix="give only one of the two")
        return derived, per_replica_batch_size
    if global_batch_size < 1:
        raise ConfigError(f"global batch size must be at least 1, got {global_batch_size}",
                          where="global_batch_size", fix=f"give a positive multiple of {num_replicas} (the replicas)")
    if global_batch_size % num_replicas:
        lower = max(num_replicas, global_batch_size // num_replicas * num_replicas)
        raise ConfigError(f"global batch size {global_batch_size} does not divide evenly over {num_replicas} replicas",
                          where="global_batch_size",
                          fix=f"use a multiple of {num_replicas}, e.g. {lower} or {lower + num_replicas}")
    return global_batch_size, global_batch_size // num_replicas
