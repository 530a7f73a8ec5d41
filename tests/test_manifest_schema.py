"""`tfscale launch --print-manifest` against the Kubernetes API's own models, and what each pod derives from it.

The official `kubernetes` client (a test dependency) carries the API's models as
pydantic classes that forbid unknown fields and require the required ones; each
printed object is validated with the camelCase names of the API only. The
manifest has not run on a live cluster here: Kubernetes itself is what cannot
exist on this machine, so a pod's environment is built from the manifest plus
what Kubernetes adds (KUBERNETES_SERVICE_HOST, JOB_COMPLETION_INDEX and the
completion-index annotation).
"""

import json
import os
import subprocess
import sys

import pytest
import yaml
from kubernetes import client as k8s

from procs import base_env
from tfscale.cli import main
from tfscale.cluster.launch import backends
from tfscale.errors import ConfigError

MODELS = {("v1", "Service"): k8s.V1Service, ("batch/v1", "Job"): k8s.V1Job}
INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def validate(doc: dict):
    """The API model of `doc`; raises pydantic's ValidationError on an unknown field or a missing required one."""
    model = MODELS[(doc["apiVersion"], doc["kind"])]
    obj = model.model_validate(doc, by_alias=True, by_name=False)
    # the API's camelCase names only, nothing dropped or coerced (the models also accept python names)
    assert obj.model_dump(by_alias=True, exclude_none=True, mode="json") == doc
    return obj


def manifest(capsys, *args: str) -> list[dict]:
    assert main(["launch", "--print-manifest", *args]) == 0
    return list(yaml.safe_load_all(capsys.readouterr().out))


@pytest.mark.parametrize("args", [
    ("--", "python", "train.py"),
    ("-n", "3", "--job-name", "mnist", "--image", "me/img:1", "--port", "2222", "--replicas-per-worker", "2",
     "--collective-timeout", "30", "--max-restarts", "2", "--backend", "jax", "--", "python", "t.py", "--epochs", "3"),
])
def test_every_printed_object_is_a_valid_kubernetes_object(capsys, args):
    docs = manifest(capsys, *args)
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [("v1", "Service"), ("batch/v1", "Job")]
    service, job = (validate(d) for d in docs)
    assert service.spec.cluster_ip == "None"  # headless: one DNS name per pod
    assert job.spec.completion_mode == "Indexed" and job.spec.completions == job.spec.parallelism
    assert job.spec.template.spec.subdomain == service.metadata.name
    assert job.spec.backoff_limit == (2 * 3 if "--max-restarts" in args else 0)  # restarts: the Job's, per pod
    assert service.spec.selector == {"batch.kubernetes.io/job-name": job.metadata.name}


def test_the_check_catches_unknown_and_missing_fields(capsys):
    from pydantic import ValidationError

    service, job = manifest(capsys, "--", "python", "train.py")
    container = job["spec"]["template"]["spec"]["containers"][0]
    bad = json.loads(json.dumps(job))
    bad["spec"]["template"]["spec"]["containers"][0]["enviroment"] = container["env"]  # a typo
    with pytest.raises(ValidationError, match="enviroment"):
        validate(bad)
    bad = json.loads(json.dumps(job))
    del bad["spec"]["template"]["spec"]["containers"][0]["name"]  # required
    with pytest.raises(ValidationError, match="name"):
        validate(bad)
    bad = json.loads(json.dumps(service))
    bad["spec"]["cluster_ip"] = bad["spec"].pop("clusterIP")  # the client's python name, not the API's
    with pytest.raises((ValidationError, AssertionError)):  # accepted by name, but the round trip differs
        validate(bad)


def pod_environ(job: dict, index: int) -> dict[str, str]:
    """A pod's environment: the manifest's variables plus what Kubernetes adds for completion index `index`."""
    environ = {}
    for var in job["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in var:
            environ[var["name"]] = var["value"]
        else:  # the downward API: only the completion-index annotation is used
            assert var["valueFrom"] == {"fieldRef": {"fieldPath": INDEX_ANNOTATION}}, var
            environ[var["name"]] = str(index)
    return {**environ, "KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": str(index)}


def test_each_pod_derives_tf_config_and_its_rank_from_its_completion_index(capsys, monkeypatch):
    _, job = manifest(capsys, "-n", "3", "--job-name", "mnist", "--replicas-per-worker", "2", "--", "python", "t.py")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["tfscale", "launch", "--"]  # the launcher in the pod execs the command
    hosts = [f"mnist-{i}.mnist-workers:12345" for i in range(3)]
    for index in range(3):
        environ = pod_environ(job, index)
        for key in list(os.environ):
            if key.startswith(("SLURM_", "TFSCALE_", "KUBERNETES_")) or key in ("TF_CONFIG", "JOB_COMPLETION_INDEX"):
                monkeypatch.delenv(key)
        for key, value in environ.items():
            monkeypatch.setenv(key, value)
        chosen = backends.choose(backends.LaunchOptions(), os.environ)
        assert chosen.name == "kubernetes" and chosen.restarts == backends.MANAGER
        plan, reservation = chosen.plan(backends.LaunchOptions(), os.environ)
        assert reservation is None and plan.manager == "kubernetes" and plan.ranks == [index]
        env = plan.env[0]
        assert json.loads(env["TF_CONFIG"]) == {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        assert (env["TFSCALE_RANK"], env["TFSCALE_WORLD_SIZE"], env["TFSCALE_NODE_RANK"]) == (str(index), "3", str(index))
        assert environ["TFSCALE_REPLICAS_PER_WORKER"] == "2" and "TFSCALE_CPUS" not in env  # the pod: its own share
        with pytest.raises(ConfigError, match="backoffLimit"):  # one owner of restarts: the Job
            chosen.plan(backends.LaunchOptions(max_restarts=1), os.environ)


def test_the_pods_launcher_becomes_the_command(capsys, tmp_path):
    """What the container runs: `tfscale launch -- CMD` execs CMD (no child, no prefix) with pod 1's TF_CONFIG."""
    _, job = manifest(capsys, "-n", "2", "--", "python", "train.py")
    environ = {k: v for k, v in base_env().items() if not k.startswith(("SLURM_", "TFSCALE_"))}
    environ.update(pod_environ(job, 1))
    code = "import os; print(os.getpid(), os.environ['TF_CONFIG'], os.environ['TFSCALE_RANK'])"
    proc = subprocess.Popen([sys.executable, "-m", "tfscale", "launch", "--", sys.executable, "-c", code], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    pid, rest = stdout.strip().split(" ", 1)
    assert int(pid) == proc.pid  # exec: CMD is the launcher's own process, not a child of it
    config, rank = rest.rsplit(" ", 1)
    assert json.loads(config)["task"] == {"type": "worker", "index": 1} and rank == "1"
    assert "[w1]" not in stdout
