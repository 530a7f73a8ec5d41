"""Elastic membership (``--nnodes MIN:MAX``): after a host is lost, the hosts that remain agree on who goes on,
without a central store.

Each host's launcher listens, for the whole launch, on its *launcher port*: the host's first worker port minus 1
(`launcher_port`: ``--hosts a:7100`` -> 7099), on the host's address. A connection there carries one JSON line
each way:

    ask     {"cluster": KEY, "node": i, "round": r}               KEY: the host list, the same on every host
    answer  {"cluster": KEY, "node": j, "round": r', "members": [...] or null, "agreed": true/false}

Round 0 is the start, with every named host. When this host's workers fail, or a member announces a later round
in an ask (`Rendezvous.check`, polled while the workers run, then stops them), the launcher starts the next round
(`Rendezvous.agree`):

1. it waits `SETTLE_SECONDS`, so that the other members notice the failure too;
2. it asks every member of the current membership (which announces the round to them); the live set is this host
   and the members whose launcher answers within `ASK_SECONDS`;
3. its candidate is `membership(MIN, members, live)`: the live members in host-list order, or a ClusterError naming
   the hosts lost and MIN; it answers asks with that candidate;
4. it repeats 2-3 every `POLL_SECONDS` until every member of its candidate answers with the same round and the same
   candidate: agreement. Each host then plans the new cluster (`plan.hosts_plan`: ranks renumbered in host-list
   order, TF_CONFIG rebuilt, each host on the ports its launcher holds) and restarts its workers, which resume from
   the last checkpoint by themselves. Without agreement within `AGREE_SECONDS`: a ClusterError (below MIN: the one
   naming the lost hosts, else what each host answered).

A host that lost its own link sees no one and, below MIN alone, ends with that ClusterError. A host the others
agreed to go on without (cut off, then back) is told so by their answers and stops: a host lost once stays out,
and no host joins a running launch. A launcher that ends (done, out of restarts, an error) closes its port at once,
so the others stop counting it. Every round is a restart (``--max-restarts``) on every host, whoever started it, so
the hosts' rounds stay in step.

The port has no authentication, as TensorFlow's gRPC servers have none: run only on a trusted network.
Standard library only (the launcher never imports TensorFlow).
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Collection, Sequence

from tfscale.cluster.launch import plan as plan_lib
from tfscale.cluster.launch.hosts import Host
from tfscale.cluster.launch.plan import LaunchOptions, LaunchPlan
from tfscale.errors import ClusterError, ConfigError

log = logging.getLogger("tfscale")

SETTLE_SECONDS = 2.0   # before a round's first ask: the other hosts notice the failure too
ASK_SECONDS = 2.0      # one ask: connect, send, answer
POLL_SECONDS = 0.5     # between asks while the hosts disagree
AGREE_SECONDS = 30.0   # a round's agreement, then a ClusterError
_MAX_LINE = 4096


def launcher_port(host: Host) -> int:
    """The port `host`'s launcher listens on for the agreement: the host's first worker port minus 1."""
    return host.port - 1


def check_launcher_ports(nodes: Sequence[Host], workers: int) -> None:
    """Every host's launcher port is a port, and not a worker port of an entry with the same host name.

    Raises:
        ConfigError: naming the host entry.
    """
    used = {(h.name, h.port + i) for h in nodes for i in range(workers)}
    for host in nodes:
        port = launcher_port(host)
        if port < 1 or (host.name, port) in used:
            raise ConfigError(f"host {host.name}:{host.port}: its launcher port {port} (its first worker port - 1) "
                              + ("is not a TCP port" if port < 1 else "is a worker port of another entry"),
                              where="--hosts (with --nnodes MIN:MAX)",
                              fix="leave the port below each host's first worker port free, e.g. "
                                  "--hosts a:7100,a:7200 instead of a:7100,a:7101")


def membership(min_nodes: int, hosts: Sequence[str], answered: Collection[str]) -> list[str]:
    """The hosts that go on: the current members `hosts` (in host-list order) whose launcher answered.

    Raises:
        ClusterError: fewer than `min_nodes` answered; it names the hosts lost and MIN.

    Example:
        membership(2, ["a:7100", "b:7100", "c:7100"], {"b:7100", "a:7100"})   # -> ["a:7100", "b:7100"]
        membership(2, ["a:7100", "b:7100", "c:7100"], {"c:7100"})             # ClusterError: lost a:7100, b:7100
    """
    kept = [h for h in hosts if h in answered]
    if len(kept) >= min_nodes:
        return kept
    lost = [h for h in hosts if h not in answered]
    raise ClusterError(f"{len(kept)} of {len(hosts)} host(s) remain ({', '.join(kept) or 'none'}), fewer than the "
                       f"{min_nodes} an elastic launch goes on with; lost: {', '.join(lost)} (their launcher does not "
                       "answer)", where=f"--nnodes {min_nodes}:MAX (MIN = {min_nodes})",
                       fix="a host that sees no other host has lost its own network: check it; bring the lost hosts "
                           "back and launch again on every host (training resumes from the last checkpoint), or "
                           "lower MIN")


class Regroup(ClusterError):
    """Another host's launcher started a new round; this host's workers were stopped to join it.

    Attributes:
        round: the round announced.
    """

    def __init__(self, round_: int, by: str):
        self.round = round_
        super().__init__(f"{by} started membership round {round_} (a host failed or was lost)",
                         where="the launcher port", fix="nothing: this host joins the round")


def _read_json(sock: socket.socket) -> dict:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(_MAX_LINE)
        if not chunk:
            break
        data += chunk
        if len(data) > _MAX_LINE:
            raise ValueError("line too long")
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _listen(host: Host) -> socket.socket:
    """A listening socket on `host`'s launcher port, on its address (all interfaces where that is not local)."""
    port = launcher_port(host)
    family, address = socket.AF_INET, ("", port)
    try:
        family, _, _, _, address = socket.getaddrinfo(host.name, port, type=socket.SOCK_STREAM)[0]
    except OSError:
        pass
    for attempt in (address, ("::" if family == socket.AF_INET6 else "", port)):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of an earlier launch: no matter
            sock.bind(attempt)
            sock.listen(16)
            return sock
        except OSError as e:
            sock.close()
            if e.errno != errno.EADDRNOTAVAIL:  # the name is not an address of this host (NAT): all interfaces
                raise ClusterError(f"the launcher port {port} of {host.name} cannot be opened: {e.strerror or e}",
                                   where="--hosts (with --nnodes MIN:MAX)",
                                   fix=f"free port {port} (`ss -ltnp`), or give this host a first worker port whose "
                                       "port below is free") from None
    raise AssertionError("unreachable")


class Rendezvous:
    """This host's side of the agreement (see the module docstring); holds the launcher port until `close`.

    Args:
        nodes: every named host, in host-list order (the same list on every host).
        node: this host's index in `nodes`.
        min_nodes: the fewest hosts the launch goes on with (MIN).

    Example:
        with Rendezvous(nodes, node=1, min_nodes=2) as rendezvous:
            group.wait(check=rendezvous.check)            # raises Regroup when another host starts a round
            round_, hosts = rendezvous.agree(1)           # the hosts that go on, this one among them
    """

    def __init__(self, nodes: Sequence[Host], node: int, min_nodes: int, *, settle: float = SETTLE_SECONDS,
                 ask_timeout: float = ASK_SECONDS, agree_timeout: float = AGREE_SECONDS):
        self.nodes, self.node, self.min_nodes = list(nodes), node, min_nodes
        self.names = [f"{h.name}:{h.port}" for h in self.nodes]
        self.key = ",".join(self.names)
        self.settle, self.ask_timeout, self.agree_timeout = settle, ask_timeout, agree_timeout
        self.round = 0
        self.members: list[int] = list(range(len(self.nodes)))  # the agreed membership (indices into nodes)
        self._said: list[int] | None = list(self.members)      # what asks are answered: members, or the candidate
        self._agreed = True
        self._announced = (0, self.node)  # the latest round a member announced, and that member
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listener = _listen(self.nodes[node])
        self._thread = threading.Thread(target=self._serve, daemon=True, name="tfscale-launcher-port")
        self._thread.start()

    def describe(self, index: int) -> str:
        return f"node {index} ({self.names[index]})"

    # ------------------------------------------------------------------ the launcher port

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True, name="tfscale-launcher-ask").start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(self.ask_timeout)
            try:
                ask = _read_json(conn)
            except (OSError, ValueError):
                return
            if ask.get("cluster") != self.key:
                return  # another launch on this port number: no answer
            node, round_ = ask.get("node"), ask.get("round")
            with self._lock:
                if (type(node) is int and node != self.node and node in self.members and type(round_) is int
                        and round_ > self._announced[0]):
                    self._announced = (round_, node)
                answer = {"cluster": self.key, "node": self.node, "round": self.round, "members": self._said,
                          "agreed": self._agreed}
            try:
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except OSError:
                pass

    def _ask(self, index: int, round_: int) -> dict | None:
        """Host `index`'s answer to an ask for round `round_`, or None when its launcher does not answer."""
        host = self.nodes[index]
        try:
            with socket.create_connection((host.name, launcher_port(host)), timeout=self.ask_timeout) as sock:
                sock.sendall(json.dumps({"cluster": self.key, "node": self.node, "round": round_}).encode() + b"\n")
                answer = _read_json(sock)
        except (OSError, ValueError):
            return None
        members = answer.get("members")
        well_formed = (answer.get("cluster") == self.key and answer.get("node") == index
                       and type(answer.get("round")) is int
                       and (members is None or (isinstance(members, list) and all(type(m) is int for m in members))))
        return answer if well_formed else None

    def _ask_members(self, round_: int) -> dict[int, dict | None]:
        others = [i for i in self.members if i != self.node]
        if not others:
            return {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(others))) as pool:
            return dict(zip(others, pool.map(lambda i: self._ask(i, round_), others)))

    # ------------------------------------------------------------------ rounds

    def check(self) -> None:
        """Raises `Regroup` when a member announced a round later than this host's (poll it while workers run)."""
        with self._lock:
            announced, by = self._announced
        if announced > self.round:
            raise Regroup(announced, self.describe(by))

    def agree(self, round_: int) -> tuple[int, list[Host]]:
        """Agrees with the members that answer on who goes on in round `round_` (or a later round one is in).

        Returns:
            The round agreed, and its hosts in host-list order (this host among them).

        Raises:
            ClusterError: fewer than MIN remain (`membership`'s, naming the hosts lost), the others agreed to go on
                without this host, or no agreement within `agree_timeout` seconds.
        """
        with self._lock:
            self.round, self._said, self._agreed = max(round_, self._announced[0]), None, False
        time.sleep(self.settle)
        deadline = time.monotonic() + self.agree_timeout
        while True:
            answers = self._ask_members(self.round)
            self._check_kept(answers)
            ahead = max([a["round"] for a in answers.values() if a] + [self.round])
            candidate, below = self._candidate(answers)
            if ahead > self.round:  # a member is in a later round: join it
                with self._lock:
                    self.round, self._said = ahead, None
            else:
                with self._lock:
                    self._said = candidate
                if candidate is not None and all(self._agrees(answers[i], candidate)
                                                 for i in candidate if i != self.node):
                    with self._lock:
                        self.members, self._agreed = candidate, True
                    return self.round, [self.nodes[i] for i in candidate]
            if time.monotonic() > deadline:
                raise below or self._disagreement(candidate, answers)
            time.sleep(POLL_SECONDS)

    def regroup(self, round_: int, options: LaunchOptions, max_restarts: int) -> tuple[int, LaunchPlan]:
        """Round `round_` (a restart): agrees on who goes on (`agree`), and returns the round and this host's plan
        among them (`plan.hosts_plan`).

        Raises:
            ClusterError: as `agree`, or the round agreed is beyond this host's `max_restarts`.
        """
        started = time.monotonic()
        round_, hosts = self.agree(round_)
        if round_ > max_restarts:
            raise ClusterError(f"the hosts agreed on membership round {round_}, beyond this host's restarts",
                               where="--max-restarts", fix="raise --max-restarts (each round is a restart)")
        node = hosts.index(self.nodes[self.node])
        kept = [f"{h.name}:{h.port}" for h in hosts]
        lost = [self.describe(i) for i, name in enumerate(self.names) if name not in kept]
        log.warning("membership round %d agreed in %.1f s: going on with %d of %d host(s) (%s)%s; this host is now "
                    "node %d", round_, time.monotonic() - started, len(hosts), len(self.nodes), ", ".join(kept),
                    f"; lost: {', '.join(lost)}" if lost else "", node)
        return round_, plan_lib.hosts_plan(options, os.environ, hosts, node)

    def _agrees(self, answer: dict | None, candidate: list[int]) -> bool:
        return answer is not None and answer["round"] == self.round and answer["members"] == candidate

    def _candidate(self, answers: dict[int, dict | None]) -> tuple[list[int] | None, ClusterError | None]:
        live = {self.names[self.node]} | {self.names[i] for i, a in answers.items() if a is not None}
        try:
            kept = membership(self.min_nodes, [self.names[i] for i in self.members], live)
        except ClusterError as below:
            return None, below
        return [self.names.index(name) for name in kept], None

    def _check_kept(self, answers: dict[int, dict | None]) -> None:
        """Raises when a member has agreed on a membership of this round or a later one without this host."""
        for index, answer in answers.items():
            if (answer and answer.get("agreed") and answer["round"] >= self.round and answer["members"] is not None
                    and self.node not in answer["members"]):
                kept = ", ".join(self.describe(i) for i in answer["members"])
                raise ClusterError(f"the other hosts went on without this host ({self.describe(self.node)}): "
                                   f"{self.describe(index)} answers round {answer['round']} with {kept}",
                                   where=f"launcher port {launcher_port(self.nodes[self.node])}",
                                   fix="this host was cut off from them for a while (its network); a lost host does "
                                       "not join a running launch: the run goes on without it")

    def _disagreement(self, candidate: list[int] | None, answers: dict[int, dict | None]) -> ClusterError:
        said = "; ".join(f"{self.describe(i)}: " + ("no answer" if a is None else
                                                    f"round {a['round']}, members {a['members']}")
                         for i, a in answers.items())
        return ClusterError(f"the hosts did not agree on who goes on within {self.agree_timeout:g} s: this host "
                            f"({self.describe(self.node)}) proposes round {self.round}, members {candidate}; {said}",
                            where="--nnodes MIN:MAX (the launcher ports)",
                            fix="check that the hosts reach each other on the launcher ports (each host's first "
                                "worker port - 1) and see every host's launcher output; launch again on every host "
                                "(training resumes from the last checkpoint)")

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Closes the launcher port: the other hosts stop counting this one."""
        self._closed.set()
        self._listener.close()
        self._thread.join(timeout=2.0)

    def __enter__(self) -> "Rendezvous":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
