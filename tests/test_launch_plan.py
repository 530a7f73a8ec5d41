"""What `tfscale launch` would start: --dry-run locally, on several hosts, under Slurm; manifests; ports."""

import json
import os
import shlex
import socket
import subprocess
import sys

import pytest
import yaml

from procs import base_env
from tfscale import StrategyConfig
from tfscale.cli import main
from tfscale.cluster.launch import plan as plan_lib
from tfscale.cluster.launch.hosts import node_rank, parse_hosts
from tfscale.cluster.launch.ports import PortReservation
from tfscale.cluster.detection.topology import detect
from tfscale.config import with_launch_environment
from tfscale.errors import ClusterError, ConfigError

# A faked Slurm job step: 4 tasks on 2 nodes, this process task 1 (node1's second task).
SLURM = {"SLURM_PROCID": "1", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_STEP_NUM_TASKS": "4",
         "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_NODEID": "0", "SLURM_LOCALID": "1", "SLURM_CPUS_PER_TASK": "3"}


@pytest.fixture
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("SLURM_", "TFSCALE_")) or key in ("TF_CONFIG", "CUDA_VISIBLE_DEVICES"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a host without GPUs, whatever this one has
    return monkeypatch


def dry_run(capsys, *args: str) -> list[tuple[str, dict, str]]:
    """Runs `tfscale launch --dry-run ARGS`; returns (worker name, its variables, its command) per worker."""
    assert main(["launch", "--dry-run", *args]) == 0
    workers = []
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("[w"):
            name, rest = line.split(" env ", 1)
            words = shlex.split(rest)
            env = dict(w.split("=", 1) for w in words if "=" in w and w.split("=", 1)[0].isupper())
            command = " ".join(w for w in words if not ("=" in w and w.split("=", 1)[0].isupper()))
            workers.append((name, env, command))
    return workers


def test_dry_run_locally_gives_each_worker_its_task_on_distinct_loopback_ports(clean_env, capsys):
    workers = dry_run(capsys, "-n", "3", "--replicas-per-worker", "2", "--", "python", "train.py", "--epochs", "3")
    assert [w[0] for w in workers] == ["[w0]", "[w1]", "[w2]"]
    configs = [json.loads(env["TF_CONFIG"]) for _, env, _ in workers]
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.1:") for a in addresses)
    for rank, (config, (_, env, command)) in enumerate(zip(configs, workers)):
        assert config == {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}}
        assert (env["TFSCALE_RANK"], env["TFSCALE_WORLD_SIZE"], env["TFSCALE_LOCAL_RANK"]) == (str(rank), "3", str(rank))
        assert env["TFSCALE_REPLICAS_PER_WORKER"] == "2" and env["TF_GRPC_REUSE_PORT"] == "1"
        assert "CUDA_VISIBLE_DEVICES" not in env
        assert command == "python train.py --epochs 3"


def test_dry_run_for_several_hosts(clean_env, capsys, caplog):
    workers = dry_run(capsys, "-n", "2", "--nnodes", "3", "--node-rank", "1",
                      "--hosts", "node-a:2222,10.1.2.3:3333,node-c", "--", "python", "train.py")
    expected = ["node-a:2222", "node-a:2223", "10.1.2.3:3333", "10.1.2.3:3334", "node-c:12345", "node-c:12346"]
    assert [w[0] for w in workers] == ["[w2]", "[w3]"]
    for rank, (_, env, _) in zip((2, 3), workers):
        assert json.loads(env["TF_CONFIG"]) == {"cluster": {"worker": expected},
                                                "task": {"type": "worker", "index": rank}}
        assert (env["TFSCALE_WORLD_SIZE"], env["TFSCALE_NODE_RANK"]) == ("6", "1")
    assert "no authentication" in caplog.text


def test_hosts_file_and_node_rank(tmp_path, clean_env, capsys):
    hosts = tmp_path / "hosts"
    hosts.write_text("# the cluster\nnode0:2000\n\nnode1:2000  # second\n")
    workers = dry_run(capsys, "--hosts-file", str(hosts), "--node-rank", "1", "--", "python", "t.py")
    assert json.loads(workers[0][1]["TF_CONFIG"])["cluster"]["worker"] == ["node0:2000", "node1:2000"]
    assert [h.name for h in parse_hosts(hosts_file=hosts)] == ["node0", "node1"]
    with pytest.raises(ConfigError, match="--node-rank"):
        node_rank(parse_hosts("no-such-host-a,no-such-host-b"), None)
    with pytest.raises(ConfigError, match="named twice"):
        parse_hosts("a:1,a:1")
    with pytest.raises(ConfigError, match="--nnodes 3 but 2 host"):
        plan_lib.build(plan_lib.LaunchOptions(nnodes=3, hosts="a,b", node_rank=0), {})


def test_dry_run_under_a_faked_slurm_job_step(clean_env, capsys):
    for key, value in SLURM.items():
        clean_env.setenv(key, value)
    workers = dry_run(capsys, "--", "python", "train.py")
    assert len(workers) == 1
    name, env, command = workers[0]
    assert name == "[w1]" and command == "python train.py"
    assert json.loads(env["TF_CONFIG"]) == {
        "cluster": {"worker": ["node1:8888", "node1:8889", "node2:8888", "node2:8889"]},
        "task": {"type": "worker", "index": 1}}
    assert (env["TFSCALE_RANK"], env["TFSCALE_WORLD_SIZE"], env["TFSCALE_LOCAL_RANK"]) == ("1", "4", "1")
    assert env["TF_NUM_INTRAOP_THREADS"] == "3"  # --cpus-per-task
    assert "TF_GRPC_REUSE_PORT" not in env  # nothing reserved: Slurm placed the task
    assert main(["launch", "-n", "2", "--dry-run", "--", "python", "train.py"]) == 2
    assert "each Slurm task is one worker" in capsys.readouterr().err


def test_srun_tfscale_launch_runs_the_command_with_the_slurm_tf_config():
    env = base_env(SLURM_PROCID="0", SLURM_STEP_NODELIST="localhost", SLURM_STEP_NUM_TASKS="1",
                   SLURM_STEP_TASKS_PER_NODE="1", SLURM_NODEID="0", SLURM_LOCALID="0")
    code = "import os; print(os.getpid(), os.environ['TF_CONFIG'], os.environ['TFSCALE_RANK'])"
    proc = subprocess.run([sys.executable, "-m", "tfscale", "launch", "--", sys.executable, "-c", code], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("[w0] ")  # supervised, not exec'd: the launcher stops it on scancel (test_slurm)
    config, rank = proc.stdout.strip().split(" ", 2)[2].rsplit(" ", 1)
    assert json.loads(config) == {"cluster": {"worker": ["localhost:8888"]}, "task": {"type": "worker", "index": 0}}
    assert rank == "0"


def test_print_manifest_gives_pods_the_cluster_that_detection_reads(capsys):
    assert main(["launch", "-n", "3", "--print-manifest", "--job-name", "mnist", "--image", "me/img:1",
                 "--replicas-per-worker", "2", "--", "python", "train.py"]) == 0
    service, job = yaml.safe_load_all(capsys.readouterr().out)
    assert service["kind"] == "Service" and service["spec"]["clusterIP"] == "None"
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    container = pod["containers"][0]
    assert container["command"] == ["tfscale", "launch", "--", "python", "train.py"]  # TF_CONFIG... in the pod
    assert container["image"] == "me/img:1"
    environ = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    environ.update(KUBERNETES_SERVICE_HOST="10.0.0.1", JOB_COMPLETION_INDEX="2")  # what Kubernetes adds
    topology = detect(environ=environ, gpus=0)
    assert topology.manager == "kubernetes" and topology.task_index == 2
    assert list(topology.cluster["worker"]) == [f"mnist-{i}.{service['metadata']['name']}:12345" for i in range(3)]
    assert with_launch_environment(StrategyConfig(), environ).replicas == 2


def test_strategy_config_reads_the_launcher_variables_only_where_unset():
    environ = {"TFSCALE_REPLICAS_PER_WORKER": "3", "TFSCALE_COLLECTIVE_TIMEOUT": "45"}
    config = with_launch_environment(StrategyConfig(), environ)
    assert (config.replicas, config.collective_timeout) == (3, 45.0)
    assert with_launch_environment(StrategyConfig(replicas=1), environ).replicas == 1
    with pytest.raises(ConfigError, match="TFSCALE_REPLICAS_PER_WORKER"):
        with_launch_environment(StrategyConfig(), {"TFSCALE_REPLICAS_PER_WORKER": "two"})


def test_gpus_and_threads_are_split_among_local_workers():
    assert plan_lib.split_gpus([], 2, None) is None
    assert plan_lib.split_gpus(["0", "1", "2", "3"], 2, None) == [["0", "1"], ["2", "3"]]
    assert plan_lib.split_gpus(["4", "5", "6", "7"], 4, 1) == [["4"], ["5"], ["6"], ["7"]]
    assert plan_lib.split_gpus(["0"], 2, None) == [["0"], ["0"]]
    with pytest.raises(ConfigError, match="2 worker"):
        plan_lib.split_gpus(["0", "1"], 2, 2)
    built = plan_lib.build(plan_lib.LaunchOptions(workers=2), {"CUDA_VISIBLE_DEVICES": "3,5"}, free_ports=[1, 2])
    assert [env["CUDA_VISIBLE_DEVICES"] for env in built.env] == ["3", "5"]
    cores = len(os.sched_getaffinity(0))
    assert built.env[0]["TF_NUM_INTRAOP_THREADS"] == str(max(1, cores // 2))
    assert plan_lib.build(plan_lib.LaunchOptions(workers=1), {"TF_NUM_INTRAOP_THREADS": "7"},
                          free_ports=[1]).env[0]["TF_NUM_INTRAOP_THREADS"] == "7"  # the user's choice stays


def test_reserved_ports_are_free_and_stay_taken_until_released():
    with PortReservation.free(3) as reservation:
        assert len(set(reservation.ports)) == 3
        for port in reservation.ports:
            with socket.socket() as other, pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
        with pytest.raises(ClusterError, match=f"port {reservation.ports[0]} on this host is not free"):
            PortReservation.exact([reservation.ports[0]]).close()
    with socket.socket() as other:
        other.bind(("127.0.0.1", reservation.ports[0]))  # released


def test_options_are_checked_with_the_flag_named():
    with pytest.raises(ConfigError, match=r"workers must be at least 1, got 0\. Where: --n\."):
        plan_lib.LaunchOptions(workers=0)
    with pytest.raises(ConfigError, match="--hosts"):
        plan_lib.LaunchOptions(nnodes=2)
    with pytest.raises(ConfigError, match="--max-restarts"):
        plan_lib.LaunchOptions(max_restarts=-1)
