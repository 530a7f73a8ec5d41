"""Environment detection: TF_CONFIG, Slurm, Kubernetes, TPU, CPU — with faked environments only."""

import json

import pytest

from tfscale.cluster import detect
from tfscale.cluster.detection.tf_config import make
from tfscale.config import StrategyConfig
from tfscale.errors import ClusterError
from tfscale.strategy import choose


def _tf_config(n=2, index=0, task_type="worker", **cluster):
    cluster = cluster or {"worker": [f"127.0.0.1:{2000 + i}" for i in range(n)]}
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


def test_no_cluster_is_a_single_cpu_process():
    topo = detect(environ={}, gpus=0)
    assert (topo.manager, topo.num_workers, topo.is_chief, topo.accelerator) == ("none", 1, True, "CPU")
    assert any("single process" in r for r in topo.reasons)
    assert choose(topo, StrategyConfig()) == ("default", "one process, no accelerator, one replica")
    assert choose(topo, StrategyConfig(replicas=2))[0] == "mirrored"


def test_tf_config_worker_roles():
    topo = detect(environ={"TF_CONFIG": _tf_config(3, 2)}, gpus=0)
    assert (topo.manager, topo.num_workers, topo.task_index, topo.is_chief) == ("tf_config", 3, 2, False)
    assert choose(topo, StrategyConfig())[0] == "multi_worker"
    chief = detect(environ={"TF_CONFIG": _tf_config(3, 0)}, gpus=0)
    assert chief.is_chief and chief.rank == 0
    with_chief = detect(environ={"TF_CONFIG": _tf_config(
        task_type="worker", index=0, chief=["127.0.0.1:1"], worker=["127.0.0.1:2"])}, gpus=0)
    assert not with_chief.is_chief and with_chief.rank == 1 and with_chief.num_workers == 2
    assert json.loads(make({"worker": ["a:1"]}, "worker", 0))["task"] == {"type": "worker", "index": 0}


@pytest.mark.parametrize("value, message", [
    ("{not json", "not valid JSON"),
    ('{"task": {"type": "worker", "index": 0}}', "no 'cluster'"),
    (_tf_config(2, 5), "out of range"),
    (_tf_config(2, 0, task_type="chief"), "not a job of the cluster"),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "no 'task'"),
    ('{"cluster": {"wrker": ["127.0.0.1:1"]}, "task": {"type": "wrker", "index": 0}}', "unknown job"),
    ('{"cluster": {"worker": ["nohost"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
])
def test_malformed_tf_config_is_a_clear_error(value, message):
    with pytest.raises(ClusterError, match=message) as e:
        detect(environ={"TF_CONFIG": value}, gpus=0)
    assert "Fix:" in str(e.value)


def test_slurm_environment():
    env = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "node[01-02]",
           "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "TFSCALE_PORT": "9000"}
    topo = detect(environ=env, gpus=0)
    assert topo.manager == "slurm" and topo.num_workers == 4 and topo.task_index == 3
    assert topo.cluster["worker"] == ("node01:9000", "node01:9001", "node02:9000", "node02:9001")
    with pytest.raises(ClusterError, match="not a Slurm job step"):
        detect("slurm", environ={}, gpus=0)


def test_tf_config_wins_over_slurm():
    env = {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1", "SLURM_STEP_NODELIST": "n1",
           "SLURM_STEP_TASKS_PER_NODE": "1", "TF_CONFIG": _tf_config(2, 1)}
    assert detect(environ=env, gpus=0).manager == "tf_config"
    assert detect("slurm", environ=env, gpus=0).manager == "slurm"
    assert detect("none", environ=env, gpus=0).manager == "none"


def test_kubernetes_indexed_job():
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "1", "TFSCALE_K8S_JOB": "train",
           "TFSCALE_K8S_SERVICE": "train-svc", "TFSCALE_NUM_WORKERS": "3", "TFSCALE_PORT": "2222"}
    topo = detect(environ=env, gpus=0)
    assert topo.manager == "kubernetes" and topo.task_index == 1
    assert topo.cluster["worker"][2] == "train-2.train-svc:2222"
    plain_pod = detect(environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, gpus=0)
    assert plain_pod.manager == "none"


@pytest.mark.parametrize("env, address", [
    ({"TPU_NAME": "my-tpu"}, "my-tpu"),
    ({"COLAB_TPU_ADDR": "127.0.0.1:8470"}, "grpc://127.0.0.1:8470"),
    ({"TPU_ACCELERATOR_TYPE": "v3-8", "KAGGLE_KERNEL_RUN_TYPE": "Interactive"}, ""),
])
def test_tpu_environments(env, address):
    topo = detect(environ=env, gpus=0)
    assert topo.manager == "tpu" and topo.accelerator == "TPU" and topo.tpu == address
    assert choose(topo, StrategyConfig()) == ("tpu", "a TPU was found")


def test_gpus_pick_mirrored_or_one_device():
    assert choose(detect(environ={}, gpus=4), StrategyConfig()) == ("mirrored", "4 local GPUs")
    assert choose(detect(environ={}, gpus=1), StrategyConfig())[0] == "one_device"
    assert choose(detect(environ={"TF_CONFIG": _tf_config(2)}, gpus=4), StrategyConfig())[0] == "multi_worker"
