"""Kubernetes: a headless Service and an Indexed Job whose pods find their cluster by themselves.

Each pod of an Indexed Job knows its index (JOB_COMPLETION_INDEX, set by
Kubernetes) and is reachable at ``<job>-<index>.<service>`` through the headless
Service. The manifest gives every pod the shape of the job (TFSCALE_K8S_JOB,
TFSCALE_K8S_SERVICE, TFSCALE_NUM_WORKERS, TFSCALE_PORT; `tfscale.worker_env`),
from which `tfscale.cluster.detection.kubernetes.pod_cluster` builds the same
cluster on every pod. The pod's command is ``tfscale launch -- CMD``: the
launcher (`backends.KubernetesLauncher`) execs CMD with TF_CONFIG, TFSCALE_RANK,
TFSCALE_WORLD_SIZE... derived from JOB_COMPLETION_INDEX (TFSCALE_RANK is also
set from the pod's completion-index annotation, so it holds before the
launcher runs). ``Scale.auto()`` reads the same cluster without the launcher.

Restarts belong to Kubernetes: ``--max-restarts R`` sets the Job's
``backoffLimit`` to R x workers (it counts failed pods, and one worker's
failure ends its peers' collectives too, so one restart of the group costs
up to one failure per pod); the launcher in the pod restarts nothing.

Checked against the Kubernetes API's models (tests/test_manifest_schema.py);
not run on a live cluster here.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from typing import Any

from tfscale import worker_env
from tfscale.errors import ConfigError
from tfscale.worker_env import DEFAULT_PORT, WorkerEnv

INDEX_KEY = "batch.kubernetes.io/job-completion-index"  # the pod annotation holding JOB_COMPLETION_INDEX
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
    shape = WorkerEnv(world_size=workers, k8s_job=name, k8s_service=service, num_workers=workers, port=port,
                      replicas_per_worker=replicas_per_worker or None, collective_timeout=collective_timeout or None)
    env = {**shape.to_environ(), "PYTHONUNBUFFERED": "1"}
    if backend:  # on JAX, Scale.auto() makes rank 0's address the coordinator of jax.distributed
        env["KERAS_BACKEND"] = backend
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "tfscale"}
    service_doc = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": service, "labels": labels},
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                 "selector": {"batch.kubernetes.io/job-name": name},
                 "ports": [{"name": "grpc", "port": port, "targetPort": port}]},
    }
    # `tfscale launch` in the pod execs the command with TF_CONFIG, TFSCALE_RANK... from JOB_COMPLETION_INDEX
    rank = {"name": worker_env.RANK, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_KEY}']"}}}
    container = {"name": "worker", "image": image, "command": ["tfscale", "launch", "--", *argv],
                 "env": [{"name": k, "value": v} for k, v in env.items()] + [rank],
                 "ports": [{"name": "grpc", "containerPort": port}]}
    job_doc = {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": labels},
        "spec": {"completionMode": "Indexed", "completions": workers, "parallelism": workers,
                 "backoffLimit": max_restarts * workers,  # failed pods: up to one per pod per group restart
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
