"""JAX's private APIs that tfscale uses (the JAX quarantine; see `tfscale.compat`).

Checked on jax 0.10.2.

1. `backends_started` (`jax._src.xla_bridge.backends_are_initialized`): whether JAX has initialized its devices,
   after which the number of host devices can no longer change; JAX offers no public test. Gone: `UpstreamError`.
2. `key_value_client` (`jax._src.distributed.global_state.client`, a `DistributedRuntimeClient` with
   `key_value_set`, `blocking_key_value_get` and `key_value_delete`): JAX has no public key-value store
   (`jax.experimental.multihost_utils` only broadcasts arrays, a collective on every device); the JAX engine
   exchanges preemption flags through it. Gone: None, and `JaxEngine.exchange` reports that it cannot exchange.
"""

from __future__ import annotations

from tfscale import compat

CHECKED_TEXT = "0.10.2"


def backends_started() -> bool:
    """JAX has initialized its devices (1.)."""
    try:
        from jax._src import xla_bridge  # private: see 1. in the module docstring

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        raise compat.changed("JAX", compat.installed("jax"), "jax._src.xla_bridge.backends_are_initialized",
                             CHECKED_TEXT, needed_for="setting the number of host devices before JAX starts") from None


def key_value_client():
    """The distributed runtime's key-value client of this process, or None (one process, not initialized, or
    JAX changed it; 2.)."""
    try:
        from jax._src import distributed  # private: see 2. in the module docstring
    except ImportError:
        return None
    client = getattr(getattr(distributed, "global_state", None), "client", None)
    return client if hasattr(client, "key_value_set") and hasattr(client, "blocking_key_value_get") else None
