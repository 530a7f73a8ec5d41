"""The other hosts of a ``--hosts`` launch, as this host's launcher sees them: names that resolve, and who answers.

TensorFlow reports a dead or unreachable peer as a collective error on a healthy worker
("Connection reset by peer", "Collective has timed out"), or not at all: a chief whose peer never
comes waits for it until ``--timeout``. The launcher of each host knows the cluster, so it says which
peer it is:

- before starting anything, every host name of the cluster must resolve (`check_names`), else a
  ConfigError naming it (TensorFlow would retry the lookup until the job's timeout);
- when a worker here fails because it lost a peer (exit code 75, `worker_env.PEER_LOST_EXIT`, or
  TensorFlow's abort or crash while tearing down), or the job times out, every worker of the other hosts is probed (`probe`: a TCP
  connection, then the start of an HTTP/2 exchange, which a worker's gRPC server answers), and the
  error names those that do not answer and why (`Peers.explain`, `Peers.explain_timeout`). Every
  failure names this host too: "worker w1 (node 1, 10.0.0.2) was killed by SIGKILL".

JAX workers (``--backend jax``) have one gRPC server in the cluster, the coordinator (process 0, JAX's
distributed service); every other JAX worker accepts connections at its own address and closes them
(`tfscale.strategy.jax.runtime.answer_at`), so the same probe tells a running worker (it accepts) from a gone
one (refused) or an unreachable host, and a timeout's report speaks of the coordinator and the workers.

Standard library only: the launcher never imports TensorFlow.
"""

from __future__ import annotations

import concurrent.futures
import signal
import socket
from collections.abc import Sequence

from tfscale.cluster.launch.group import GroupTimeout, WorkerFailure
from tfscale.cluster.launch.hosts import parse_host
from tfscale.cluster.launch.plan import LaunchPlan
from tfscale.errors import ConfigError
from tfscale.worker_env import PEER_LOST_EXIT

PROBE_SECONDS = 2.0
RESOLVE_SECONDS = 10.0
GRPC, OTHER, REFUSED = "grpc", "other", "refused"
# The client's HTTP/2 connection preface and an empty SETTINGS frame: a gRPC server replies with SETTINGS.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x4
# How a worker whose peer is gone ends: its collective's error (tf_engine), TensorFlow's abort (SIGABRT) when its
# coordination service finds a peer's heartbeats stopped, or a crash (SIGSEGV: seen once in CI, a collective timed
# out with the link down). Other failures are this worker's own; a probe costs at most 2 s per host.
PEER_LOST = (PEER_LOST_EXIT, -signal.SIGABRT, -signal.SIGSEGV)


def _resolve(name: str) -> str | None:
    """None when `name` resolves, else why not."""
    try:
        socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
        return None
    except OSError as e:
        return e.strerror or str(e)


def check_names(names: Sequence[str], timeout: float = RESOLVE_SECONDS) -> None:
    """Every host name resolves, within `timeout` seconds together.

    Raises:
        ConfigError: naming the first host that does not resolve, and why.
    """
    unique = list(dict.fromkeys(names))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(unique)) or 1)
    try:
        futures = {name: pool.submit(_resolve, name) for name in unique}
        done, _ = concurrent.futures.wait(futures.values(), timeout=timeout)
        for name, future in futures.items():
            reason = future.result() if future in done else f"no answer from the resolver within {timeout:g} s"
            if reason:
                raise ConfigError(f"host {name!r} does not resolve: {reason}", where="--hosts / --hosts-file",
                                  fix=f"check the name (`getent hosts {name}` on this host), or give its IP address")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def probe(address: str, timeout: float = PROBE_SECONDS) -> str:
    """What answers at "host:port": GRPC (a gRPC server: a worker), OTHER (a program that is not one),
    REFUSED (the host is up, nothing listens), or why nothing answers ("no answer within 2 s", ...)."""
    host = parse_host(address, where="the cluster")
    try:
        with socket.create_connection((host.name, host.port), timeout=timeout) as sock:
            sock.sendall(_H2_PREFACE)
            try:
                head = sock.recv(9)
            except OSError:  # connected, but no reply in time (a program that does not speak HTTP/2)
                return OTHER
            return GRPC if len(head) >= 4 and head[3] == _H2_SETTINGS else OTHER
    except ConnectionRefusedError:
        return REFUSED
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return (e.strerror or str(e)).lower()


def _probe_all(addresses: Sequence[str], timeout: float) -> list[str]:
    if not addresses:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(addresses))) as pool:
        return list(pool.map(lambda a: probe(a, timeout), addresses))


class Peers:
    """This host's view of the other hosts' workers in `plan` (a ``--hosts`` plan)."""

    def __init__(self, plan: LaunchPlan, timeout: float = PROBE_SECONDS):
        self.plan, self.timeout = plan, timeout
        workers = plan.cluster["worker"]
        per_node = len(plan.ranks) or 1
        self.local = set(plan.ranks)
        self.remote = [(rank, address, rank // per_node) for rank, address in enumerate(workers)
                       if rank not in self.local]
        here = parse_host(workers[plan.ranks[0]], where="the cluster").name if plan.ranks else "?"
        self.host = f"node {plan.node_rank}, {here}"
        self.jax = any(env.get("KERAS_BACKEND") == "jax" for env in plan.env)

    def names(self) -> list[str]:
        return [parse_host(a, where="the cluster").name for a in self.plan.cluster["worker"]]

    def explain(self, failure: WorkerFailure) -> WorkerFailure:
        """`failure`, naming this host and, when the worker here lost a peer (`PEER_LOST`), the other hosts'
        workers that no longer answer: nothing listens (refused), or no answer at all. A port that accepts
        but does not reply is not named: a peer being stopped by its own launcher looks so."""
        silent = []
        if failure.returncode in PEER_LOST:
            states = _probe_all([address for _, address, _ in self.remote], self.timeout)
            silent = [f"w{rank} on {address} (node {node}: {_said(state)})"
                      for (rank, address, node), state in zip(self.remote, states) if state not in (GRPC, OTHER)]
        return WorkerFailure(failure.name, failure.index, failure.returncode, failure.tail,
                             log_path=failure.log_path, stopped=failure.stopped, host=self.host, unanswered=silent)

    def explain_timeout(self, error: GroupTimeout) -> GroupTimeout:
        """`error`, saying what answers at each of the other hosts' workers."""
        states = _probe_all([address for _, address, _ in self.remote], self.timeout)
        said = _jax_timeout_said if self.jax else _timeout_said
        report = "; ".join(f"node {node} ({address}): {said(state, f'w{rank}')}"
                           for (rank, address, node), state in zip(self.remote, states))
        fix = ("start `tfscale launch` on every host with the same --hosts; check each host's own launcher "
               "output, that the hosts reach each other on these ports (firewalls), and raise --timeout "
               "if the training needs longer")
        return GroupTimeout(f"{error.what.rstrip('.')}. On the other hosts: {report}" if report else error.what,
                            where=f"--timeout (on {self.host})", fix=fix)


def _said(state: str) -> str:
    return "connection refused" if state == REFUSED else state


def _timeout_said(state: str, worker: str) -> str:
    if state == GRPC:
        return f"{worker} answers (a gRPC server: the worker is up)"
    if state == OTHER:
        return (f"{worker}'s port accepts connections but does not answer as a gRPC server, so {worker} never "
                "joined (is the port in use there by another program?)")
    if state == REFUSED:
        return f"{worker}'s port refuses connections: nothing listens there (is that host's launcher running?)"
    return f"{worker} does not answer ({state}): the host is down, or unreachable from here"


def _jax_timeout_said(state: str, worker: str) -> str:
    """A JAX worker's port at a timeout: w0's is the coordinator's (gRPC); the others' accept and close."""
    if worker == "w0":
        if state == GRPC:
            return "w0 runs the JAX coordinator, which answers"
        if state == OTHER:
            return ("w0's port accepts connections but no JAX coordinator answers there (is the port in use there "
                    "by another program, or is a different coordinator address given on that host?)")
        if state == REFUSED:
            return ("nothing listens at the JAX coordinator's port (w0): that host's launcher does not run, or was "
                    "given other --hosts")
        return f"the JAX coordinator (w0) does not answer ({state}): the host is down, or unreachable from here"
    if state in (GRPC, OTHER):
        return f"{worker} runs (it accepts connections): see that host's launcher output for why it waits"
    if state == REFUSED:
        return (f"{worker}'s port refuses connections: {worker} does not run, or has not started yet (is that "
                "host's launcher running?)")
    return f"{worker} does not answer ({state}): the host is down, or unreachable from here"
