"""The seams of the launch side: the WorkerEnv contract, which Launcher serves which environment, one owner of
restarts, the pure Slurm parsers, and the launch side importing no framework."""

import dataclasses
import os
import subprocess
import sys
import tempfile

import pytest

from procs import base_env
from tfscale import worker_env
from tfscale.cluster.detection import slurm
from tfscale.cluster.launch import backends
from tfscale.cluster.launch.plan import LaunchOptions
from tfscale.errors import ClusterError, ConfigError
from tfscale.worker_env import WorkerEnv

SLURM = {"SLURM_PROCID": "1", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_STEP_NUM_TASKS": "4",
         "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_NODEID": "0", "SLURM_LOCALID": "1"}
POD = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "1", "TFSCALE_K8S_JOB": "j",
       "TFSCALE_K8S_SERVICE": "j-workers", "TFSCALE_NUM_WORKERS": "2"}


def test_worker_env_round_trips_every_field():
    full = WorkerEnv(rank=3, world_size=8, local_rank=1, local_world_size=2, node_rank=1, restart=2,
                     replicas_per_worker=4, collective_timeout=12.5, join_timeout=60.0, cpus=(2, 3), port=2222,
                     k8s_job="job",
                     k8s_service="job-workers", num_workers=8, function_worker="/tmp/payload",
                     verbose=False, address="10.0.0.2:2223")
    unset = [f.name for f in dataclasses.fields(WorkerEnv) if getattr(full, f.name) is None]
    assert unset == []  # the test sets every field: a new field must be added here
    environ = full.to_environ()
    assert sorted(environ) == sorted(set(worker_env.NAMES) - {worker_env.TUNE_CONTROL})
    assert all(name.startswith("TFSCALE_") for name in environ) and environ["TFSCALE_CPUS"] == "2,3"
    assert WorkerEnv.from_environ({**environ, "PATH": "/bin"}) == full
    assert WorkerEnv().to_environ() == {} and WorkerEnv.from_environ({"TFSCALE_RANK": " "}) == WorkerEnv()
    with pytest.raises(ClusterError, match="TFSCALE_WORLD_SIZE='two'"):
        WorkerEnv.from_environ({"TFSCALE_WORLD_SIZE": "two"})


def test_no_tfscale_variable_is_spelled_out_beside_the_contract():
    """Every TFSCALE_* name lives in tfscale/worker_env.py (quiet.py and notebook.py run as bare scripts and keep
    their one literal, which must match)."""
    from tfscale import quiet
    from tfscale.cluster.launch import notebook

    root = os.path.dirname(worker_env.__file__)
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path.endswith(("worker_env.py", "quiet.py", "notebook.py")):
                continue
            with open(path) as f:
                for number, line in enumerate(f, 1):
                    code = line.split("#", 1)[0]
                    if '"TFSCALE_' in code or "'TFSCALE_" in code:
                        found.append(f"{path}:{number}: {line.strip()}")
    assert found == []
    assert quiet.VERBOSE_ENV == worker_env.VERBOSE
    with open(notebook.__file__) as f:
        source = f.read()
    assert f'"{worker_env.RANK}"' in source and f'"{worker_env.RESTART}"' in source


@pytest.mark.parametrize("options, environ, name, owner", [
    (LaunchOptions(workers=2), {}, "local", backends.TFSCALE),
    (LaunchOptions(hosts="127.0.0.1:2222,127.0.0.2:2222", node_rank=0), {}, "hosts", backends.TFSCALE),
    (LaunchOptions(hosts="127.0.0.1:2222", node_rank=0), SLURM, "hosts", backends.TFSCALE),  # explicit hosts win
    (LaunchOptions(), SLURM, "slurm", backends.MANAGER),
    (LaunchOptions(), POD, "kubernetes", backends.MANAGER),
    (LaunchOptions(), {**POD, "JOB_COMPLETION_INDEX": ""}, "local", backends.TFSCALE),  # not a tfscale pod
])
def test_the_launcher_is_chosen_by_the_environment(options, environ, name, owner):
    chosen = backends.choose(options, environ)
    assert (chosen.name, chosen.restarts) == (name, owner)
    plan, reservation = chosen.plan(options, environ)
    try:
        assert plan.manager == name
        assert (reservation is None) == (owner == backends.MANAGER)  # a manager places the worker's port
    finally:
        if reservation is not None:
            reservation.close()
    printer = backends.choose(options, environ, manifest=backends.ManifestLauncher())
    assert printer.name == "manifest"


def test_one_owner_of_restarts():
    """--max-restarts where the manager restarts is refused (what, where, fix); the manifest hands it to the Job."""
    for environ, fix in ((SLURM, "sbatch --requeue"), (POD, "backoffLimit")):
        chosen = backends.choose(LaunchOptions(max_restarts=1), environ)
        with pytest.raises(ConfigError) as caught:
            chosen.plan(LaunchOptions(max_restarts=1), environ)
        assert caught.value.where == "--max-restarts" and fix in caught.value.fix
    backends.choose(LaunchOptions(), SLURM).plan(LaunchOptions(), SLURM)  # without it: fine
    printer = backends.ManifestLauncher()
    printer.check_restarts(LaunchOptions(max_restarts=2))
    job = printer.documents(["python", "t.py"], LaunchOptions(max_restarts=2))[1]
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    job = printer.documents(["python", "t.py"], LaunchOptions(workers=3, max_restarts=2))[1]
    assert job["spec"]["backoffLimit"] == 6  # pod failures: a group restart can cost one per pod
    plan, _ = printer.plan(LaunchOptions(workers=2, max_restarts=2), {})
    assert plan.manager == "kubernetes" and plan.world_size == 2  # what pod 0 will do: no restarts of its own


def test_restarted_jax_workers_and_only_they_share_a_compilation_cache_of_the_launch(monkeypatch, tmp_path):
    """The variables `supervise` gives every worker: a cache folder only for JAX with restarts, unless the user
    chose one; the folder is gone when the launch ends (test_jax_engine: the restarted chief hits it)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # TMPDIR, as read once per process
    monkeypatch.delenv(backends.JAX_CACHE_DIR, raising=False)
    monkeypatch.delenv(backends.JAX_CACHE_MIN_SECONDS, raising=False)
    local = backends.choose(LaunchOptions(workers=2), {})
    jax_plan, reservation = local.plan(LaunchOptions(workers=2, backend="jax"), {})
    tf_plan, tf_reservation = local.plan(LaunchOptions(workers=2), {})
    for held in (reservation, tf_reservation):
        if held is not None:
            held.close()
    with backends.compilation_cache(jax_plan, max_restarts=1) as env:
        folder = env[backends.JAX_CACHE_DIR]
        assert os.path.isdir(folder) and folder.startswith(str(tmp_path)) and env[backends.JAX_CACHE_MIN_SECONDS] == "0"
    assert not os.path.exists(folder)
    for plan, restarts in ((jax_plan, 0), (tf_plan, 1)):
        with backends.compilation_cache(plan, max_restarts=restarts) as env:
            assert env == {}
    monkeypatch.setenv(backends.JAX_CACHE_DIR, str(tmp_path / "mine"))
    with backends.compilation_cache(jax_plan, max_restarts=1) as env:
        assert env == {}  # the user's cache, as it is
    assert os.listdir(tmp_path) == []


def test_the_cli_refuses_max_restarts_under_srun():
    environ = {**{k: v for k, v in base_env().items() if not k.startswith(("SLURM_", "TFSCALE_"))}, **SLURM}
    proc = subprocess.run([sys.executable, "-m", "tfscale", "launch", "--max-restarts", "1", "--", "true"],
                          env=environ, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--max-restarts" in proc.stderr and "Traceback" not in proc.stderr
    assert "sbatch --requeue" in proc.stderr


@pytest.mark.parametrize("hostlist, tasks, hosts, per_node", [
    ("node[1-2]", "2(x2)", ["node1", "node2"], [2, 2]),
    # TensorFlow's SlurmClusterResolver docstring examples, zero padding kept
    ("n[1-2],m5,o[3-4,6,7-9]", "3(x2),2,1", ["n1", "n2", "m5", "o3", "o4", "o6", "o7", "o8", "o9"], [3, 3, 2, 1]),
    ("gpu-a", "3", ["gpu-a"], [3]), ("a[09-11]", "1,2,1", ["a09", "a10", "a11"], [1, 2, 1]),
])
def test_slurm_parsers_read_what_tensorflows_read(hostlist, tasks, hosts, per_node):
    """The same results as TensorFlow's parsers (tensorflow.python.distribute.cluster_resolver), without TensorFlow."""
    # private TensorFlow module (tensorflow.python...; checked on 2.21): a move there fails this import. Imported
    # here so that the other seam tests, like the launch side, run without TensorFlow
    from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver as tf_slurm

    assert slurm.expand_hostlist(hostlist) == tf_slurm.expand_hostlist(hostlist) == hosts
    assert slurm.expand_tasks_per_node(tasks) == tf_slurm.expand_tasks_per_node(tasks) == per_node


def test_slurm_environment_mistakes_are_cluster_errors():
    with pytest.raises(ClusterError, match="Slurm environment"):
        slurm.cpu_cluster({**SLURM, "SLURM_STEP_NODELIST": "node[1-"}, port_base=8888)
    with pytest.raises(ClusterError, match="Slurm reports 5 tasks"):
        slurm.cpu_cluster({**SLURM, "SLURM_STEP_NUM_TASKS": "5"}, port_base=8888)
    assert slurm.cpu_cluster({}, port_base=8888) is None


def test_the_launch_side_imports_no_framework():
    code = ("import sys; import tfscale.cluster, tfscale.cluster.launch.launcher, tfscale.cluster.launch.backends, "
            "tfscale.cluster.launch.indexed_job, tfscale.cli.launch; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'tensorflow', 'keras', 'jax'}))")
    proc = subprocess.run([sys.executable, "-c", code], env=base_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr[-2000:]
