"""What JAX needs before it starts its devices, and the devices it then has.

Both effects must come before anything asks JAX for a device:

- `replicas=N` on a CPU: N host devices (``jax_num_cpu_devices``, as
  ``XLA_FLAGS=--xla_force_host_platform_device_count`` does), the JAX
  counterpart of TensorFlow's logical CPU devices; without `replicas`, a
  `mesh` asks for as many as it has positions per process;
- several processes (from `tfscale launch --backend jax`, TF_CONFIG, Slurm or
  Kubernetes through `Topology`; a multi-host TPU slice from its own
  environment): `jax.distributed.initialize` with the Topology's coordinator,
  process count and rank. `collective_timeout` becomes the heartbeat timeout,
  after which a dead peer is an error on the others. Where the launcher's
  plan gives the worker its own address (TFSCALE_ADDRESS), JAX's CPU
  collectives listen on and announce that host (`tfscale.compat.jax`, 4.),
  not the address the machine's hostname resolves to.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import socket
import threading

from tfscale import worker_env
from tfscale.compat import jax as jax_compat
from tfscale.config.strategy import DEFAULT_JOIN_TIMEOUT
from tfscale.errors import ClusterError
from tfscale.strategy import backend

log = logging.getLogger("tfscale")

_PLATFORMS = {"tpu": "TPU", "gpu": "GPU", "cuda": "GPU", "rocm": "GPU"}


def backends_started() -> bool:
    """JAX has initialized its devices (JAX offers no public test: `tfscale.compat.jax`)."""
    return jax_compat.backends_started()


def set_cpu_devices(n: int) -> None:
    """N host (CPU) devices, so that N replicas run on one CPU.

    Raises:
        ClusterError: JAX already started its devices with another count.
    """
    import jax

    if backends_started():
        have = len(jax.local_devices(backend="cpu"))
        if have != n:
            raise ClusterError(f"{n} CPU replicas were asked for, but JAX has already started its devices "
                               f"({have} CPU device(s))", where="tfscale.Scale(..., replicas=...)",
                               fix="create the Scale before any JAX operation runs or any model is built (first thing "
                                   "in the script), or restart the Python process / notebook kernel")
        return
    jax.config.update("jax_num_cpu_devices", n)
    if n > 1:
        jax_compat.avoid_cpu_collective_deadlock()  # XLA:CPU on few cores (tfscale.compat.jax, 3.)
        log.info("JAX: %d host (CPU) devices", n)


def initialize(topology, timeout: float | None, join_timeout: float | None = None,
               address: str | None = None) -> None:
    """`jax.distributed.initialize` for the Topology's processes, then one Keras seed on all of them.

    `address`: this worker's own "host:port" in the cluster (TFSCALE_ADDRESS); its host is where JAX's CPU
    collectives listen and what they announce to the other processes. None: what the hostname resolves to.

    Raises:
        ClusterError: the coordinator could not be reached, or JAX was initialized for another cluster.
    """
    import jax

    if jax.distributed.is_initialized():
        if jax.process_count() != topology.num_workers:
            raise ClusterError(f"JAX is already initialized for {jax.process_count()} process(es), but the cluster "
                               f"has {topology.num_workers}", where=topology.manager,
                               fix="let tfscale initialize JAX (do not call jax.distributed.initialize yourself)")
        return
    if backends_started():
        raise ClusterError("JAX started its devices before its distributed runtime", where="tfscale.Scale(...)",
                           fix="create the Scale first thing in the script, before any JAX operation")
    kwargs = {"initialization_timeout": max(1, int(join_timeout or timeout or DEFAULT_JOIN_TIMEOUT))}
    if timeout:
        kwargs["heartbeat_timeout_seconds"] = max(1, int(timeout))
    log.info("JAX: process %d of %d, coordinator %s", topology.rank, topology.num_workers, topology.coordinator)
    try:
        jax.distributed.initialize(coordinator_address=topology.coordinator, num_processes=topology.num_workers,
                                   process_id=topology.rank, **kwargs)
    except (RuntimeError, ValueError) as e:
        raise ClusterError(f"JAX's distributed runtime did not start: {str(e).splitlines()[0]}",
                           where=f"coordinator {topology.coordinator} ({topology.manager})",
                           fix="check that every process was started with the same cluster, and that process 0 "
                               "runs and its port is reachable") from None
    if address:
        host = _host_of(address)
        if jax_compat.announce_cpu_collectives_at(host):
            log.info("JAX: CPU collectives on %s", host)
    _one_seed()


def _host_of(address: str) -> str:
    """The host of "host:port" or "[v6]:port" (a bare host as it is)."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.rpartition(":")[0] if address.count(":") == 1 else address


def answer_at(address: str) -> None:
    """Accepts (and closes) connections at the port of this worker's own "host:port" until the process ends.

    A JAX worker other than the coordinator (process 0, whose port JAX's distributed service holds) has no
    server at the address the launcher's plan gives it: JAX talks through the coordinator, gloo through ports
    of its own. This listener lets the other hosts' launchers tell a worker that runs (it accepts) from one that
    is gone (refused) or a host that is unreachable (no answer), as they do for TensorFlow's servers
    (`tfscale.cluster.launch.peers`). Like those servers and the launcher's reservation of the port, with which
    it shares the port (SO_REUSEPORT), it listens on every interface; so only for a worker of several hosts (not
    at a loopback address: a local launch, where no other host asks). Where the port cannot be bound, a warning
    says so and training goes on (the other launchers then see a refused port).
    """
    host = _host_of(address)
    if host == "localhost" or host.startswith("127.") or host == "::1":
        return
    try:
        port = int(address.rpartition(":")[2])
        if socket.has_dualstack_ipv6():
            server = socket.create_server(("", port), family=socket.AF_INET6, dualstack_ipv6=True, reuse_port=True)
        else:
            server = socket.create_server(("0.0.0.0", port), reuse_port=True)
    except (OSError, ValueError) as e:
        log.warning("JAX: cannot listen at %s (%s): other hosts' launchers cannot tell whether this worker "
                    "runs", address, e)
        return

    def accept_forever():
        while True:
            try:
                server.accept()[0].close()
            except OSError:
                return

    threading.Thread(target=accept_forever, name="tfscale-answer", daemon=True).start()


def _one_seed() -> None:
    """The same Keras seed on every process, so replicated variables start equal (as keras.distribution.initialize
    does; a seed the script sets later still wins)."""
    import numpy as np
    from jax.experimental import multihost_utils

    seed = int(multihost_utils.broadcast_one_to_all(np.uint32(np.random.SeedSequence().generate_state(1)[0])))
    backend.set_random_seed(seed)


def start(topology, config, environ=None) -> None:
    """The effects that precede any device query (see the module docstring)."""
    environ = os.environ if environ is None else environ
    host_devices = config.replicas or (math.prod(config.mesh) // topology.num_workers if config.mesh else None)
    if host_devices and topology.accelerator != "TPU":  # only the CPU platform: GPUs and TPUs are what they are
        set_cpu_devices(max(1, host_devices))
    elif topology.accelerator != "TPU" and _forced_host_devices(environ) > 1 and not backends_started():
        jax_compat.avoid_cpu_collective_deadlock()  # host devices made by the user's XLA_FLAGS (compat.jax, 3.)
    if topology.num_workers > 1:
        address = worker_env.WorkerEnv.from_environ(environ).address
        if address and topology.rank > 0:
            answer_at(address)
        initialize(topology, config.collective_timeout, config.join_timeout, address=address)


def _forced_host_devices(environ) -> int:
    """The host devices XLA_FLAGS's --xla_force_host_platform_device_count asks for (0: none)."""
    found = re.search(r"--xla_force_host_platform_device_count=(\d+)", environ.get("XLA_FLAGS", ""))
    return int(found.group(1)) if found else 0


def probe(topology):
    """The Topology with the devices JAX sees: TPU devices first, then GPUs, then the CPU."""
    import jax

    platform = jax.default_backend()
    accelerator = _PLATFORMS.get(platform, "CPU")
    local = jax.local_device_count() if accelerator != "CPU" else 0
    # the first reason of `detect` is about GPUs, which it did not ask for: JAX's devices replace it
    reasons = (f"JAX: {jax.device_count()} {platform} device(s), {jax.local_device_count()} in this process",
               *topology.reasons[1:])
    if topology.accelerator == "TPU" and accelerator != "TPU":
        return dataclasses.replace(topology, reasons=reasons)  # a TPU was announced: `tpu` says none is here
    return dataclasses.replace(topology, accelerator=accelerator, local_accelerators=local, reasons=reasons)


def key_value_client():
    """The distributed runtime's key-value client of this process, or None (one process, not initialized, or
    JAX changed its private API: `tfscale.compat.jax`; `JaxEngine.exchange` then reports that it cannot).
    """
    return jax_compat.key_value_client()
