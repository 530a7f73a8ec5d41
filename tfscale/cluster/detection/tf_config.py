"""TF_CONFIG: parse and check it, so a typo is a clear error and not a hang."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tfscale.errors import ClusterError

_KNOWN_JOBS = ("chief", "worker", "ps", "evaluator")


def parse(text: str, *, where: str = "TF_CONFIG") -> dict[str, Any]:
    """Parses and validates a TF_CONFIG value.

    Returns:
        The dict, with "cluster" (job -> list of "host:port") and "task"
        ({"type", "index"}).

    Raises:
        ClusterError: bad JSON, no cluster, unknown job, or a task not in the cluster.
    """
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ClusterError(f"TF_CONFIG is not valid JSON ({e.msg} at character {e.pos})", where=where,
                           fix='set it to e.g. {"cluster": {"worker": ["127.0.0.1:12345", "127.0.0.1:12346"]}, '
                               '"task": {"type": "worker", "index": 0}}, or let `tfscale launch` write it') from None
    if not isinstance(config, Mapping):
        raise ClusterError("TF_CONFIG must be a JSON object", where=where,
                           fix='give {"cluster": {...}, "task": {...}}')
    cluster = config.get("cluster")
    if not isinstance(cluster, Mapping) or not cluster:
        raise ClusterError("TF_CONFIG has no 'cluster' with at least one job", where=where,
                           fix='add "cluster": {"worker": ["host:port", ...]}')
    for job, addresses in cluster.items():
        if job not in _KNOWN_JOBS:
            raise ClusterError(f"TF_CONFIG names an unknown job {job!r}", where=f"{where}.cluster",
                               fix=f"use job names from: {', '.join(_KNOWN_JOBS)}")
        if not isinstance(addresses, list) or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise ClusterError(f"job {job!r} must list 'host:port' strings, got {addresses!r}",
                               where=f"{where}.cluster.{job}", fix='write e.g. ["10.0.0.1:2222", "10.0.0.2:2222"]')
    task = config.get("task")
    if not isinstance(task, Mapping) or "type" not in task or "index" not in task:
        raise ClusterError("TF_CONFIG has no 'task' with 'type' and 'index'", where=where,
                           fix='add "task": {"type": "worker", "index": 0} (a different index on each worker)')
    task_type, index = task["type"], task["index"]
    if task_type not in cluster:
        raise ClusterError(f"task type {task_type!r} is not a job of the cluster ({', '.join(cluster)})",
                           where=f"{where}.task.type", fix="use one of the cluster's job names")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[task_type]):
        raise ClusterError(f"task index {index!r} is out of range for job {task_type!r} "
                           f"with {len(cluster[task_type])} task(s)", where=f"{where}.task.index",
                           fix=f"use an index from 0 to {len(cluster[task_type]) - 1}")
    return {"cluster": {k: list(v) for k, v in cluster.items()}, "task": {"type": task_type, "index": index},
            **{k: v for k, v in config.items() if k not in ("cluster", "task")}}


def make(cluster: Mapping[str, list[str]], task_type: str, index: int) -> str:
    """Returns the TF_CONFIG JSON for one task of `cluster`."""
    return json.dumps({"cluster": {k: list(v) for k, v in cluster.items()},
                       "task": {"type": task_type, "index": index}})
