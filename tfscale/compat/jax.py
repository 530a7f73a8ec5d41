"""JAX's private APIs that tfscale uses (the JAX quarantine; see `tfscale.compat`).

Checked on jax 0.10.2.

1. `backends_started` (`jax._src.xla_bridge.backends_are_initialized`): whether JAX has initialized its devices,
   after which the number of host devices can no longer change; JAX offers no public test. Gone: `UpstreamError`.
2. `key_value_client` (`jax._src.distributed.global_state.client`, a `DistributedRuntimeClient` with
   `key_value_set`, `blocking_key_value_get` and `key_value_delete`): JAX has no public key-value store
   (`jax.experimental.multihost_utils` only broadcasts arrays, a collective on every device); the JAX engine
   exchanges preemption flags through it. Gone: None, and `JaxEngine.exchange` reports that it cannot exchange.
3. `avoid_cpu_collective_deadlock` (not a private API: an XLA flag set for a bug): with several host devices in
   one process on a machine of few cores, XLA:CPU's concurrency-optimized scheduler runs independent collectives
   of one device side by side on the intra-op thread pool; when they fill it, the other device's part of the
   all-reduce never gets a thread and the rendezvous aborts the process after 40 s ("Termination timeout for
   `all reduce RendezvousKey{... num_local_participants=2 ...}`", rendezvous.cc; SIGABRT). Seen on 2 cores with
   2 host devices, 1 run in 3 while other processes kept the cores busy (tests/test_examples_model_parallel.py,
   a model_parallel transformer-style MLP); with `--xla_cpu_enable_concurrency_optimized_scheduler=false`
   0 in 5. Set in XLA_FLAGS before JAX starts, only where tfscale makes 2+ host devices and the user's
   XLA_FLAGS do not name the flag. Checked on jax/jaxlib 0.10.2.
4. `announce_cpu_collectives_at` (`jax._src.xla_bridge.register_backend_factory` and `make_cpu_client`,
   `jaxlib._jax.make_gloo_tcp_collectives(..., hostname=)`, `jax._src.distributed.global_state.client`): JAX's
   CPU collectives (gloo, the default of `jax_cpu_collectives_implementation`) listen on, and announce to the other
   processes, the address that the machine's hostname resolves to (gloo's `tcp::attr` without a hostname). Where
   that is not the address the other hosts reach (a hostname that resolves to 127.0.0.1 or 127.0.1.1, as Debian's
   /etc/hosts writes it; hosts sharing one hostname), a multi-host JAX run fails in its first collective: "Gloo
   context initialization failed: ... Connection refused, remote=[127.0.0.1]:PORT". JAX has no public way to give
   gloo its address (no flag, no variable; jax-ml/jax's `make_cpu_client(collectives=...)` is its seam), so the CPU
   backend's factory is registered again, before JAX starts its devices, as JAX's own (`make_cpu_client`) with the
   gloo collectives made for the worker's own address, which the launcher's plan gives (TFSCALE_ADDRESS). Gone or
   changed: `UpstreamError`. Checked on jax/jaxlib 0.10.2.
"""

from __future__ import annotations

import os

from tfscale import compat

CHECKED_TEXT = "0.10.2"


def backends_started() -> bool:
    """JAX has initialized its devices (1.)."""
    try:
        from jax._src import xla_bridge  # private: see 1. in the module docstring

        return xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        raise compat.changed("JAX", compat.version_of("jax"), "jax._src.xla_bridge.backends_are_initialized",
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


def announce_cpu_collectives_at(host: str) -> bool:
    """JAX's CPU collectives (gloo) listen on and announce `host` (4.); False where they are not gloo (MPI, or
    none configured), and nothing is changed. Must run after `jax.distributed.initialize`, before JAX starts its
    devices.

    Raises:
        UpstreamError: JAX no longer has the seams this uses.
    """
    import jax

    if jax.config.jax_cpu_collectives_implementation != "gloo":
        return False
    try:
        from jax._src import distributed, xla_bridge  # private: see 4. in the module docstring
        from jaxlib import _jax

        make_client, make_gloo, register = (xla_bridge.make_cpu_client, _jax.make_gloo_tcp_collectives,
                                            xla_bridge.register_backend_factory)
    except (ImportError, AttributeError):
        raise compat.changed("JAX", compat.version_of("jax"), "jax._src.xla_bridge.make_cpu_client / "
                             "jaxlib._jax.make_gloo_tcp_collectives", CHECKED_TEXT,
                             needed_for="giving JAX's CPU collectives this worker's own address") from None

    def cpu_client():
        client = distributed.global_state.client
        collectives = None if client is None else make_gloo(distributed_client=client, hostname=host)
        return make_client(collectives=collectives)

    register("cpu", cpu_client, priority=0, fail_quietly=False)
    return True


CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


def avoid_cpu_collective_deadlock() -> None:
    """Turns XLA:CPU's concurrency-optimized scheduler off for this process's host devices (3.), unless the user's
    XLA_FLAGS set it. Must run before JAX starts its devices."""
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_SCHEDULER_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_SCHEDULER_FLAG}=false".strip()
