"""The strategy registry, Scale, and every bad-input path: clear tfscale errors, never a TF trace."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfscale as ts
from procs import base_env, free_ports, kill_all, run_one
from tfscale.strategy import available, get
from tfscale.compat.keras.multi_worker import MultiWorkerStrategy, needs_reduce_fix

HERE = Path(__file__).resolve().parent
PROBE = str(HERE / "workers" / "scale_probe.py")
REPO = HERE.parent


def _probe(*args, env=None):
    out = run_one([PROBE, *args], env=env, timeout=180).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_registry_lists_every_strategy_with_a_description():
    names = [s.name for s in available()]
    assert names[0] == "auto"
    assert {"default", "one_device", "mirrored", "multi_worker", "tpu", "parameter_server"} <= set(names)
    assert all(s.description for s in available())


def test_unknown_strategy_lists_known_ones():
    with pytest.raises(ts.ConfigError) as e:
        ts.Scale("mirorred")
    assert "did you mean 'mirrored'" in str(e.value) and "multi_worker" in str(e.value)
    with pytest.raises(ts.ConfigError, match="unknown Scale option"):
        ts.Scale("default", replica=2)
    with pytest.raises(ts.ConfigError):
        get("nope")


def test_default_and_one_device_in_process():
    scale = ts.Scale("default", cluster="none")
    assert scale.num_replicas == 1 and scale.is_chief and scale.num_workers == 1
    assert "default" in repr(scale) and scale.describe()["strategy"] == "default"
    one = ts.Scale("one_device", cluster="none")
    assert isinstance(one.strategy, tf.distribute.OneDeviceStrategy)


def test_cpu_replicas_after_devices_initialized_is_a_clear_error():
    tf.constant(1.0) + 1.0  # TensorFlow has now initialized its devices in this process
    with pytest.raises(ts.ClusterError) as e:
        ts.Scale("mirrored", replicas=3, cluster="none")
    assert "already initialized" in str(e.value) and "restart" in str(e.value)


def test_tpu_absent_is_a_clear_error():
    with pytest.raises(ts.ClusterError, match="none could be reached") as e:
        ts.Scale("tpu", tpu="")
    assert "Colab" in str(e.value)


def test_batch_contract_errors():
    scale = ts.Scale("default", cluster="none")
    assert scale.batch_sizes(global_batch_size=64) == (64, 64)
    with pytest.raises(ts.ConfigError, match="no batch size"):
        scale.batch_sizes()
    with pytest.raises(ts.DataError, match="cannot distribute"):
        scale.distribute([1, 2, 3], global_batch_size=2)


# In a child: builds the strategy as shipped, then as if Keras had fixed keras-team/keras#20585 in this version,
# and reduces a nested structure (what Keras' _maybe_symbolic_build passes) with each
GATE = """
import json, keras, tensorflow as tf
from tfscale.compat.keras import multi_worker as keras_compat
shipped = keras_compat.MultiWorkerStrategy()
keras_compat.KERAS_FIT_FIXED_IN = keras_compat._keras_version()
fixed_upstream = keras_compat.MultiWorkerStrategy()
batch = {"x": tf.constant([1.0, 2.0]), "loss": tf.constant(3.0)}
out = shipped.reduce("SUM", batch, None)
try:
    fixed_upstream.reduce("SUM", batch, None)
    unpatched = "reduced"
except (ValueError, TypeError) as e:
    unpatched = type(e).__name__
print(json.dumps({"shipped": shipped._tfscale_fix_reduce, "fixed_upstream": fixed_upstream._tfscale_fix_reduce,
                  "out": {k: v.numpy().tolist() for k, v in out.items()}, "unpatched": unpatched}))
"""


def test_keras_fix_is_version_gated(monkeypatch):
    import keras

    from tfscale.compat.keras import multi_worker as keras_compat

    assert not needs_reduce_fix((2, 15))
    installed = tuple(int(p) for p in keras.__version__.split(".")[:2])
    assert keras_compat.KERAS_FIT_FIXED_IN is None and needs_reduce_fix() and needs_reduce_fix(installed)
    monkeypatch.setattr(keras_compat, "KERAS_FIT_FIXED_IN", (3, 16))  # the day upstream ships the fix
    assert needs_reduce_fix((3, 15)) and not needs_reduce_fix((3, 16)) and not needs_reduce_fix((4, 0))
    monkeypatch.setattr(keras_compat, "KERAS_FIT_FIXED_IN", installed)
    assert not needs_reduce_fix()
    assert issubclass(MultiWorkerStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    # the strategy follows the gate: reduce is patched exactly while it is open
    gate = json.loads(run_one(["-c", GATE], timeout=180).stdout.strip().splitlines()[-1])
    assert gate["shipped"] is True and gate["fixed_upstream"] is False, gate
    assert gate["out"] == {"x": [1.0, 2.0], "loss": 3.0}, gate  # one worker, one replica: SUM is the value
    assert gate["unpatched"] == "ValueError", gate  # TensorFlow's own reduce refuses the structure


def test_mirrored_cpu_replicas_and_laptop_preset():
    out = run_one([PROBE, "mirrored", "2", "+", "--preset", "laptop", "+", "auto", "2"],  # the shipped preset, by name
                  timeout=180).stdout  # one process: each asks for the same 2 CPU replicas
    mirrored, preset, auto = (json.loads(line) for line in out.strip().splitlines()[-3:])
    assert mirrored["replicas"] == 2 and mirrored["strategy"] == "MirroredStrategy"
    assert preset["replicas"] == 2 and preset["name"] == "mirrored"
    assert auto["name"] == "mirrored" and "CPU replicas" in auto["reason"]


# In a child (a multi-worker strategy configures collectives once per process): the options as the strategy holds
# them. `_communication_options` is TensorFlow's private attribute (CollectiveAllReduceExtended, TF 2.20 and 2.21);
# renamed upstream, this fails with an AttributeError, not silently.
PACKING = """
import json, tfscale as ts
scale = ts.Scale("multi_worker", bytes_per_pack=4 << 20, communication="ring", collective_timeout=45)
options = scale.strategy.extended._communication_options
print(json.dumps({"bytes_per_pack": options.bytes_per_pack, "timeout_seconds": options.timeout_seconds,
                  "implementation": options.implementation.name}))
"""


def test_bytes_per_pack_reaches_the_multi_worker_strategys_communication_options():
    options = json.loads(run_one(["-c", PACKING], timeout=180).stdout.strip().splitlines()[-1])
    assert options == {"bytes_per_pack": 4 << 20, "timeout_seconds": 45, "implementation": "RING"}


def test_parameter_server_trains_a_keras_model_on_real_servers_through_a_cluster_coordinator():
    """A chief, a worker and a ps task, each a process: `Scale.auto()` picks parameter_server on the chief, the
    variables live on the ps, and a Keras 3 model trains through ClusterCoordinator (README: Keras 3's `fit`
    cannot drive it). The worker task gets 2 inter-op threads: with 1 its first step never returns."""
    ports = free_ports(3)
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{ports[1]}"],
               "ps": [f"127.0.0.1:{ports[2]}"]}
    servers = []
    for task_type in ("worker", "ps"):
        env = base_env(TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": task_type, "index": 0}}),
                       TF_NUM_INTEROP_THREADS="2")
        servers.append(subprocess.Popen([sys.executable, str(HERE / "workers" / "ps_task.py")], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True))
    try:
        env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})}
        out = run_one([str(HERE / "workers" / "promise_ps_train.py")], env=env, timeout=240).stdout
        chief = json.loads(out.strip().splitlines()[-1])
        assert all(p.poll() is None for p in servers), "a server task exited early"
    finally:
        kill_all(servers)
    assert chief["name"] == "parameter_server" and chief["strategy"].startswith("ParameterServerStrategy")
    assert "/job:ps/" in chief["variable_device"] and "/job:ps/" in chief["kernel_device"], chief
    assert chief["steps"] == 40 and chief["last_loss"] < 0.01 * chief["first_loss"], chief
    np.testing.assert_allclose(chief["kernel"], [1.0, -2.0, 0.5, 3.0], atol=0.3)  # on its way to them
    assert chief["fit_error"], "Keras' fit ran under ParameterServerStrategy: README's parameter_server line is stale"


def test_a_parameter_server_worker_task_with_one_inter_op_thread_is_an_error_not_a_hang(monkeypatch):
    from tfscale.cluster.detection.topology import detect
    from tfscale.strategy.parameter_server import serve

    assert tf.config.threading.get_inter_op_parallelism_threads() == 0  # none configured in this process
    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]}
    worker = detect(environ={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})},
                    gpus=0)
    monkeypatch.setenv("TF_NUM_INTEROP_THREADS", "1")  # as tests/procs.py and 2 workers on 2 cores give
    with pytest.raises(ts.ConfigError, match="worker 0 of a parameter-server cluster has 1 inter-op thread") as e:
        serve(worker, join=False)
    assert "inter_op_threads=2" in str(e.value) and "TF_NUM_INTEROP_THREADS=2" in str(e.value)
