"""The engine seam, without starting any engine: backend choice, per-engine options, the registry per backend,
auto's choice on JAX, what `tfscale launch --backend jax` gives a worker, and the model-parallel layout checks."""

from __future__ import annotations

import json
import logging

import pytest

from tfscale.cluster.launch import plan as plan_lib
from tfscale.cluster.detection.topology import Topology, detect
from tfscale.config import StrategyConfig, engine_options, from_mapping
from tfscale.errors import ClusterError, ConfigError
from tfscale.strategy import available, backend, choose, get, names
from tfscale.strategy.engine import decide
from tfscale.strategy.jax.layout import Placer, rules_from

KERAS_VARIABLES = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234,10.0.0.2:1234",
                   "KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1"}


def test_the_backend_follows_keras_and_a_strategy_only_while_keras_is_not_loaded(tmp_path):
    import keras

    home = {"KERAS_HOME": str(tmp_path)}
    assert keras.config.backend() == "tensorflow"  # this pytest process: Keras on TensorFlow wins over everything
    assert backend.configured({"KERAS_BACKEND": "jax"})[0] == "tensorflow"
    assert backend.normalize("JAX") == "jax" and backend.normalize("tf") == "tensorflow"
    with pytest.raises(ConfigError, match="Keras backend 'torch' has no tfscale engine"):
        backend.normalize("torch")
    with pytest.raises(ConfigError, match="'data_parallel' is a jax strategy") as e:
        backend.resolve("jax", strategy="data_parallel", listing=names, environ=home)
    assert "mirrored" in str(e.value)  # what this backend has
    assert backend.resolve(None, environ=home) == "tensorflow"


def test_keras_json_written_by_keras_is_not_a_choice_but_another_backend_there_is(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "keras", None)  # as in a process that has not imported Keras
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    assert backend.configured({"KERAS_HOME": str(tmp_path)}) == (None, "Keras' default")
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "jax"}))
    assert backend.configured({"KERAS_HOME": str(tmp_path)}) == ("jax", "~/.keras/keras.json")
    assert backend.configured({"KERAS_HOME": str(tmp_path), "KERAS_BACKEND": "tensorflow"})[0] == "tensorflow"


def test_every_engine_has_its_own_options():
    checked = engine_options(StrategyConfig(communication="ring", collective_timeout=30), "tensorflow")
    assert checked == StrategyConfig(communication="ring", collective_timeout=30)  # the options, unchanged
    assert (checked.communication, checked.collective_timeout) == ("ring", 30)
    checked = engine_options(StrategyConfig(mesh=(1, 2), layout="auto", collective_timeout=30), "jax")
    assert checked == StrategyConfig(mesh=(1, 2), layout="auto", collective_timeout=30)
    assert (checked.mesh, checked.layout, checked.collective_timeout) == ((1, 2), "auto", 30)
    with pytest.raises(ConfigError, match="communication is a tensorflow-only setting, but this process trains on jax"):
        engine_options(StrategyConfig(communication="ring"), "jax")
    with pytest.raises(ConfigError, match="mesh, layout are jax-only settings"):
        engine_options(StrategyConfig(mesh=(1, 2), layout="auto"), "tensorflow")
    with pytest.raises(ConfigError, match="one size >= 1 per axis"):
        StrategyConfig(mesh=(1, 2, 2))
    with pytest.raises(ConfigError, match="layout must be"):
        StrategyConfig(layout=3)
    with pytest.raises(ConfigError, match="must map to a list of axis names"):
        StrategyConfig(layout={".*kernel": "model"})
    preset = from_mapping(StrategyConfig, {"name": "model_parallel", "mesh": [1, 2],
                                           "layout": {".*dense.*kernel": ["", "model"]}}, source="p.toml")
    assert preset.mesh == (1, 2) and rules_from(preset.layout)[0][0].axes == (None, "model")


def test_the_registry_knows_each_backends_strategies():
    assert names("jax") == ["auto", "data_parallel", "model_parallel", "one_device", "tpu"]
    assert {"mirrored", "multi_worker", "parameter_server"} <= set(names("tensorflow"))
    assert get("one_device", "jax").backend == "jax" and get("one_device", "tensorflow").backend == "tensorflow"
    with pytest.raises(ConfigError, match="'multi_worker' is a TensorFlow .tf.distribute. strategy") as e:
        get("multi_worker", "jax")
    assert "data_parallel, model_parallel" in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'model_parallel'"):
        get("model_paralel", "jax")
    assert {(s.name, s.backend) for s in available()} >= {("auto", "jax"), ("auto", "tensorflow")}


def test_auto_on_jax_picks_tpu_then_gpus_then_cpu_devices():
    config = StrategyConfig()
    assert choose(Topology(accelerator="TPU", local_accelerators=8), config, "jax")[0] == "tpu"
    assert choose(Topology(accelerator="GPU", local_accelerators=4), config, "jax") == ("data_parallel",
                                                                                     "4 local GPUs")
    assert choose(Topology(accelerator="GPU", local_accelerators=1), config, "jax")[0] == "one_device"
    assert choose(Topology(), StrategyConfig(replicas=2), "jax")[0] == "data_parallel"
    assert choose(Topology(), config, "jax") == ("one_device", "one process, no accelerator, one replica")
    processes = detect(environ=KERAS_VARIABLES, gpus=0)
    assert choose(processes, config, "jax") == ("data_parallel", "2 processes (keras_distribution)")
    decision = decide(StrategyConfig(name="model_parallel"), processes, "jax")
    assert (decision.backend, decision.name, decision.reason) == ("jax", "model_parallel", "asked for by name")
    with pytest.raises(ConfigError, match="is a JAX"):
        decide(StrategyConfig(name="data_parallel"), processes, "tensorflow")


def test_topology_from_the_variables_keras_distribution_reads():
    topology = detect(environ=KERAS_VARIABLES, gpus=0)
    assert (topology.manager, topology.rank, topology.num_workers, topology.coordinator) == (
        "keras_distribution", 1, 2, "10.0.0.1:1234")
    only_coordinator = detect(environ={**KERAS_VARIABLES, "KERAS_DISTRIBUTION_JOB_ADDRESSES": "10.0.0.1:1234"}, gpus=0)
    assert only_coordinator.num_workers == 2 and only_coordinator.coordinator == "10.0.0.1:1234"
    tf_config = json.dumps({"cluster": {"worker": ["h0:2222", "h1:2222"]}, "task": {"type": "worker", "index": 0}})
    assert detect(environ={"TF_CONFIG": tf_config}, gpus=0).coordinator == "h0:2222"  # JAX on a TF_CONFIG cluster
    assert detect(environ={}, gpus=0).coordinator is None
    with pytest.raises(ClusterError, match="describe 2 process.*process id 5"):
        detect(environ={**KERAS_VARIABLES, "KERAS_DISTRIBUTION_PROCESS_ID": "5"}, gpus=0)


def test_launch_with_backend_jax_gives_workers_the_keras_distribution_variables():
    options = plan_lib.LaunchOptions(workers=2, backend="jax", collective_timeout=30)
    plan = plan_lib.build(options, {}, free_ports=[5001, 5002])
    for rank, env in enumerate(plan.env):
        assert "TF_CONFIG" not in env and env["KERAS_BACKEND"] == "jax"
        assert env["KERAS_DISTRIBUTION_JOB_ADDRESSES"] == "127.0.0.1:5001,127.0.0.1:5002"
        assert (env["KERAS_DISTRIBUTION_NUM_PROCESSES"], env["KERAS_DISTRIBUTION_PROCESS_ID"]) == ("2", str(rank))
        assert env["TFSCALE_COLLECTIVE_TIMEOUT"] == "30"  # the JAX engine's heartbeat timeout
        topology = detect(environ=env, gpus=0)
        assert (topology.rank, topology.coordinator) == (rank, "127.0.0.1:5001")
    # the launcher's own KERAS_BACKEND is the default; TensorFlow workers get TF_CONFIG as before
    assert "KERAS_DISTRIBUTION_NUM_PROCESSES" in plan_lib.build(plan_lib.LaunchOptions(workers=1),
                                                                {"KERAS_BACKEND": "jax"}, free_ports=[5001]).env[0]
    assert "TF_CONFIG" in plan_lib.build(plan_lib.LaunchOptions(workers=1), {}, free_ports=[5001]).env[0]
    with pytest.raises(ConfigError, match="backend 'torch' has no tfscale engine"):
        plan_lib.LaunchOptions(backend="torch")


def test_jax_workers_under_slurm_and_kubernetes_find_the_same_coordinator():
    slurm = {"SLURM_PROCID": "1", "SLURM_STEP_NODELIST": "node[1-2]", "SLURM_STEP_NUM_TASKS": "2",
             "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_NODEID": "1", "SLURM_LOCALID": "0"}
    env = plan_lib.build(plan_lib.LaunchOptions(backend="jax"), slurm).env[0]
    assert env["KERAS_DISTRIBUTION_JOB_ADDRESSES"] == "node1:8888,node2:8888"
    assert env["KERAS_DISTRIBUTION_PROCESS_ID"] == "1" and "TF_CONFIG" not in env
    assert detect(environ=slurm, gpus=0).coordinator == "node1:8888"  # srun without the launcher: the same
    from tfscale.cluster.launch import indexed_job

    pod = indexed_job.documents(["python", "train.py"], workers=2, backend="jax")[1]
    variables = {e["name"]: e["value"] for e in pod["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
    assert variables["KERAS_BACKEND"] == "jax"
    k8s = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "1", **{k: v for k, v in variables.items()
                                                                                if k.startswith("TFSCALE_")}}
    topology = detect(environ=k8s, gpus=0)
    assert (topology.rank, topology.coordinator) == (1, "tfscale-0.tfscale-workers:12345")
    env = plan_lib.build(plan_lib.LaunchOptions(), {**k8s, "KERAS_BACKEND": "jax"}).env[0]  # the pod's launcher
    assert env["KERAS_DISTRIBUTION_JOB_ADDRESSES"].split(",")[0] == topology.coordinator
    assert env["KERAS_DISTRIBUTION_PROCESS_ID"] == "1" and "TF_CONFIG" not in env


def _placer(rules=(), *, auto=False, model=2, has_layout=True):
    return Placer({"data": 1, "model": model}, list(rules), auto=auto, min_shard_params=1000, model_axis="model",
                  has_layout=has_layout)


def test_auto_layout_shards_large_variables_on_their_last_dimension_that_divides():
    placer = _placer(auto=True)
    assert placer.place("m/dense/kernel", (64, 512)).axes == (None, "model")
    assert placer.place("m/odd/kernel", (512, 33)).axes == ("model", None)  # 33 does not divide: the first does
    assert placer.place("m/dense/bias", (512,)).axes == (None,)  # under min_shard_params: whole
    assert placer.place("adam/iterations", ()).axes == ()
    whole = placer.place("m/prime/kernel", (31, 37))  # 1,147 parameters, no dimension divides over 2
    assert whole.axes == (None, None)
    assert [p.path for p in placer.check()] == ["m/prime/kernel"]  # reported by name


def test_a_large_variable_left_whole_is_a_warning_naming_it_once(caplog):
    placer = _placer(rules_from({".*dense.*kernel": ["", "model"]})[0])
    placer.place("m/dense/kernel", (64, 512))
    placer.place("m/embedding/embeddings", (100, 64))  # 6,400 parameters (>= 1,000): no rule shards it
    placer.place("m/dense/bias", (512,))  # under min_shard_params: whole, and nothing to say
    with caplog.at_level(logging.WARNING, logger="tfscale"):
        placer.check()
        placer.check()  # the scope closes, then describe() checks again: still one warning
    assert [r.getMessage() for r in caplog.records if r.name == "tfscale"] == [
        "m/embedding/embeddings (100, 64) (6400 parameters) is whole on every device: no layout rule shards it "
        "(add a rule, or raise min_shard_params)"]


def test_layout_rules_are_checked_variable_by_variable_and_for_the_whole_model():
    rules, _ = rules_from({".*dense.*kernel": ["", "model"], ".*conv.*kernel": [None, None, None, "model"]})
    placer = _placer(rules)
    assert placer.place("m/dense/kernel", (64, 512)).axes == (None, "model")
    with pytest.raises(ConfigError, match=r"dimension 1 \(511\) does not divide over the 2 devices"):
        placer.place("m/dense_1/kernel", (64, 511))
    with pytest.raises(ConfigError, match=r"match no variable of the model"):
        placer.check()  # the conv rule matched nothing
    with pytest.raises(ConfigError, match="gives 2 axes"):
        _placer(rules).place("m/dense/kernel", (64, 4, 2))
    with pytest.raises(ConfigError, match="matches 2 layout rules"):
        _placer(rules_from({".*kernel": ["", "model"], "m/.*": ["", "model"]})[0]).place("m/kernel", (4, 4))
    with pytest.raises(ConfigError, match="names axis 'modle', which the mesh does not have"):
        _placer(rules_from({".*": ["modle"]})[0])
    with pytest.raises(ConfigError, match="uses a mesh axis twice"):
        _placer(rules_from({".*": ["model", "model"]})[0]).place("m/kernel", (4, 4))
    unlaid = _placer(has_layout=False)
    unlaid.place("m/dense/kernel", (64, 512))
    with pytest.raises(ConfigError, match=r"no layout.*m/dense/kernel \(64, 512\)"):
        unlaid.check()
