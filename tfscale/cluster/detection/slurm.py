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


def cpu_cluster(environ: Mapping[str, str], *, port_base: int):
    """(cluster_spec, task_index) of a job step without GPUs, or None outside a Slurm job step.

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
        tasks = [f"{host}:{port_base + local}" for host, local in placed]
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
