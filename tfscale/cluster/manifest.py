"""Kubernetes: a headless Service and an Indexed Job whose pods find their cluster by themselves.

Each pod of an Indexed Job knows its index (JOB_COMPLETION_INDEX, set by
Kubernetes) and is reachable at ``<job>-<index>.<service>`` through the headless
Service. The manifest gives every pod the shape of the job (TFSCALE_K8S_JOB,
TFSCALE_K8S_SERVICE, TFSCALE_NUM_WORKERS, TFSCALE_PORT), from which
`tfscale.cluster.environment.kubernetes_cluster` builds the same cluster on
every pod, so ``Scale.auto()`` needs no TF_CONFIG and no launcher in the pod.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from typing import Any

from tfscale.cluster.environment import DEFAULT_PORT
from tfscale.errors import ConfigError

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$")


def documents(argv: Sequence[str], *, workers: int, name: str = "tfscale", image: str = "IMAGE_WITH_TFSCALE",
              port: int = DEFAULT_PORT, replicas_per_worker: int | None = None,
              collective_timeout: float | None = None, max_restarts: int = 0,
              backend: str | None = None) -> list[dict[str, Any]]:
    """The Service and the Job, as plain data (`backend`: the pods' KERAS_BACKEND, e.g. "jax").

    Raises:
        ConfigError: a name Kubernetes would reject, or no command.
    """
    if not _NAME.match(name):
        raise ConfigError(f"{name!r} is not a valid Kubernetes name", where="--job-name",
                          fix="use lowercase letters, digits and '-', starting and ending with a letter or digit")
    if not argv:
        raise ConfigError("no command for the pods", where="tfscale launch --print-manifest",
                          fix="put the command after `--`, e.g. -- python train.py")
    service = f"{name}-workers"
    env = {"TFSCALE_K8S_JOB": name, "TFSCALE_K8S_SERVICE": service, "TFSCALE_NUM_WORKERS": str(workers),
           "TFSCALE_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    if replicas_per_worker:
        env["TFSCALE_REPLICAS_PER_WORKER"] = str(replicas_per_worker)
    if collective_timeout:
        env["TFSCALE_COLLECTIVE_TIMEOUT"] = str(collective_timeout)
    if backend:  # on JAX, Scale.auto() makes rank 0's address the coordinator of jax.distributed
        env["KERAS_BACKEND"] = backend
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "tfscale"}
    service_doc = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "labels": labels},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {"batch.kubernetes.io/job-name": name},
                 "ports": [{"name": "grpc", "port": port, "targetPort": port}]},
    }
    container = {"name": "worker", "image": image, "command": list(argv),
                 "env": [{"name": k, "value": v} for k, v in env.items()],
                 "ports": [{"name": "grpc", "containerPort": port}]}
    job_doc = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
        "spec": {"completionMode": "Indexed", "completions": workers, "parallelism": workers,
                 "backoffLimit": max_restarts,
                 "template": {"metadata": {"labels": labels},
                              "spec": {"subdomain": service, "restartPolicy": "Never",
                                       "containers": [container]}}},
    }
    return [service_doc, job_doc]


def to_yaml(docs: list[dict[str, Any]], *, comment: str = "") -> str:
    """YAML for `docs` (strings are JSON-quoted, which YAML reads as they are)."""
    lines = [f"# {line}" for line in comment.splitlines()]
    for doc in docs:
        lines.append("---")
        lines.extend(_yaml(doc, 0))
    return "\n".join(lines) + "\n"


def _yaml(value: Any, indent: int) -> list[str]:
    pad = "  " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                lines.extend(_yaml(item, indent + 1))
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
    else:
        for item in value:
            nested = _yaml(item, indent + 1) if isinstance(item, (dict, list)) and item else [
                f"{pad}  {_scalar(item)}"]
            lines.append(f"{pad}- {nested[0].strip()}")
            lines.extend(nested[1:])
    return lines


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(str(value))


def render(argv: Sequence[str], **kwargs: Any) -> str:
    """The manifest as YAML text, ready for ``kubectl apply -f -``."""
    docs = documents(argv, **kwargs)
    name = docs[1]["metadata"]["name"]
    comment = (f"tfscale: {kwargs.get('workers')} worker pod(s) running: {shlex.join(argv)}\n"
               f"apply: kubectl apply -f this.yaml; logs: kubectl logs -f job/{name}; "
               f"delete: kubectl delete job/{name} service/{name}-workers\n"
               "Scale.auto() in the pods reads the cluster from these variables; the image needs tfscale.")
    return to_yaml(docs, comment=comment)
