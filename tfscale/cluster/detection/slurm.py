"""A Slurm job step's cluster from its SLURM_* variables: standard library only.

The launcher (`tfscale launch` under srun) and `Topology` detection both read
it; the parsers follow TensorFlow's SlurmClusterResolver (port_base + the
task's index on its host), so a CPU-only job step gets its cluster spec
without importing TensorFlow. Ranks are placed as Slurm placed the tasks: in
SLURM_STEP_NODELIST's order (Slurm's, numeric: h9 before h10; TensorFlow's
resolver sorts the names as text), in blocks, or round-robin for
``--distribution=cyclic``; a task that finds itself elsewhere
(SLURMD_NODENAME, SLURM_LOCALID) is a ClusterError, not a hang.
GPU nodes go through TensorFlow's resolver (`environment.slurm_cluster`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tfscale.errors import ClusterError
from tfscale.worker_env import PORT, SLURM_DEFAULT_PORT


def expand_hostlist(hostlist: str) -> list[str]:
    """'n[1-2],m5,o[03-04,6]' -> ['n1', 'n2', 'm5', 'o03', 'o04', 'o06'] (order kept, no dedup).

    Raises:
        ValueError: a malformed host list.
    """
    parts, current, depth = [], "", 0
    for c in hostlist:
        if c == "[":
            if depth:
                raise ValueError(f"invalid host list {hostlist!r}: nested '['")
            depth = 1
        elif c == "]":
            depth = 0
        elif c == "," and not depth:
            if not current:
                raise ValueError(f"invalid host list {hostlist!r}: empty host")
            parts.append(current)
            current = ""
            continue
        current += c
    if current:
        parts.append(current)
    hosts = []
    for part in parts:
        m = re.fullmatch(r"([^,\[\]]*)(?:\[([^\]]+)\])?", part)
        if m is None:
            raise ValueError(f"invalid host list {hostlist!r}: {part!r}")
        prefix, ranges = m.group(1), m.group(2)
        if ranges is None:
            hosts.append(prefix)
            continue
        for item in ranges.split(","):
            bounds = item.split("-")
            if len(bounds) not in (1, 2) or not all(b.isdigit() for b in bounds):
                raise ValueError(f"invalid host list {hostlist!r}: range {item!r}")
            first, last = bounds[0], bounds[-1]
            hosts.extend(prefix + str(i).zfill(len(first)) for i in range(int(first), int(last) + 1))
    return hosts


def expand_tasks_per_node(tasks_per_node: str) -> list[int]:
    """'3(x2),2,1' -> [3, 3, 2, 1].

    Raises:
        ValueError: a malformed list.
    """
    result = []
    for part in tasks_per_node.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if m is None:
            raise ValueError(f"invalid tasks-per-node list {tasks_per_node!r}: {part!r}")
        result.extend([int(m.group(1))] * int(m.group(2) or 1))
    return result


def reserved_ports(environ: Mapping[str, str]) -> list[int] | None:
    """The ports Slurm reserved for this job step on each of its nodes, or None.

    `srun --resv-ports` (with ``MpiParams=ports=12000-12999`` in slurm.conf) reserves ports for a step and
    sets SLURM_STEP_RESV_PORTS ("12000-12003" or "12000,12002-12003"): two steps on one node never get the
    same ones, where a fixed port base makes them collide.

    Raises:
        ValueError: a malformed value.
    """
    text = environ.get("SLURM_STEP_RESV_PORTS", "").strip()
    if not text:
        return None
    ports = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        if not first.strip().isdigit() or (last and not last.strip().isdigit()):
            raise ValueError(f"SLURM_STEP_RESV_PORTS={text!r} is not a list of ports and ranges")
        ports.extend(range(int(first), int(last or first) + 1))
    return ports


def step_ports(environ: Mapping[str, str], port_base: int | None, per_node: int) -> list[int]:
    """The port of each task index on a node: `port_base` + index when given (`worker_env.PORT`), else Slurm's
    reserved ports (`reserved_ports`), else `worker_env.SLURM_DEFAULT_PORT` + index.

    Raises:
        ClusterError: fewer ports reserved than tasks on a node, or a malformed SLURM_STEP_RESV_PORTS.
    """
    if port_base is None:
        try:
            reserved = reserved_ports(environ)
        except ValueError as e:
            raise ClusterError(str(e), where="SLURM_STEP_RESV_PORTS", fix="let srun set it (--resv-ports)") from None
        if reserved is not None:
            if len(reserved) < per_node:
                raise ClusterError(f"Slurm reserved {len(reserved)} port(s) for this step "
                                   f"(SLURM_STEP_RESV_PORTS={environ['SLURM_STEP_RESV_PORTS']}) but a node runs "
                                   f"{per_node} of its tasks", where="srun --resv-ports",
                                   fix=f"reserve one port per task on a node: srun --resv-ports={per_node}, or set "
                                       f"{PORT}")
            return reserved[:per_node]
        port_base = SLURM_DEFAULT_PORT
    return [port_base + i for i in range(per_node)]


def cpu_cluster(environ: Mapping[str, str], *, port_base: int | None = None):
    """(cluster_spec, task_index) of a job step without GPUs, or None outside a Slurm job step.

    Each task listens on its node's `step_ports` by its index there: `worker_env.PORT` (`port_base`) + index,
    else the ports Slurm reserved for the step, else 8888 + index.

    Raises:
        ClusterError: SLURM_* variables that cannot be read or disagree.
    """
    if "SLURM_PROCID" not in environ or "SLURM_STEP_NODELIST" not in environ:
        return None
    try:
        rank = int(environ["SLURM_PROCID"])
        hosts = expand_hostlist(environ["SLURM_STEP_NODELIST"])
        per_node = expand_tasks_per_node(environ.get("SLURM_STEP_TASKS_PER_NODE", "1"))
        if len(per_node) != len(hosts):
            raise ValueError(f"{len(hosts)} host(s) but tasks for {len(per_node)}")
        placed = placement(hosts, per_node, environ.get("SLURM_DISTRIBUTION", "block"))
        ports = step_ports(environ, port_base, max(per_node))
        tasks = [f"{host}:{ports[local]}" for host, local in placed]
    except ValueError as e:
        raise ClusterError(f"the Slurm environment could not be read: {e}", where="SLURM_* variables",
                           fix="run under `srun` (one task per worker), or pass cluster='none'") from None
    expected = int(environ.get("SLURM_STEP_NUM_TASKS", len(tasks)))
    if expected != len(tasks) or not 0 <= rank < len(tasks):
        raise ClusterError(f"Slurm reports {expected} tasks and rank {rank}, but its node list gives {len(tasks)}",
                           where="SLURM_STEP_NUM_TASKS / SLURM_STEP_TASKS_PER_NODE / SLURM_PROCID",
                           fix="start one task per worker with `srun --ntasks-per-node=...`")
    node, local = environ.get("SLURMD_NODENAME"), environ.get("SLURM_LOCALID", "")
    if node and local.isdigit() and placed[rank] != (node, int(local)):
        raise ClusterError(f"task {rank} runs on {node} as its task {local}, but the layout Slurm reports "
                           f"(SLURM_DISTRIBUTION={environ.get('SLURM_DISTRIBUTION', 'block')}) puts it on "
                           f"{placed[rank][0]} as task {placed[rank][1]}",
                           where="SLURMD_NODENAME / SLURM_LOCALID / SLURM_DISTRIBUTION",
                           fix="start the step with `srun --distribution=block` (the default) or cyclic")
    return {"worker": tasks}, rank


def placement(hosts: list[str], per_node: list[int], distribution: str = "block") -> list[tuple[str, int]]:
    """Each rank's (host, index among that host's tasks), as Slurm lays out a step's tasks.

    "block" (Slurm's default): ranks fill the first node, then the next, in the node list's order;
    "cyclic": one rank per node in turn, while a node has tasks left. The node level of
    SLURM_DISTRIBUTION is the part before ":" ("cyclic:block" is cyclic over nodes).
    """
    if len(per_node) != len(hosts):
        raise ValueError(f"{len(hosts)} host(s) but tasks for {len(per_node)}")
    if distribution.split(":")[0].split(",")[0] != "cyclic":
        return [(host, i) for host, n in zip(hosts, per_node) for i in range(n)]
    placed, given = [], [0] * len(hosts)
    while len(placed) < sum(per_node):
        for i, host in enumerate(hosts):
            if given[i] < per_node[i]:
                placed.append((host, given[i]))
                given[i] += 1
    return placed
