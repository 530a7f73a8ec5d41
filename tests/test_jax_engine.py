"""The JAX engine (keras.distribution) behind the same Scale: equivalence over devices, processes and backends,
model-parallel memory, kill and resume, bad input, info, train and export. Real JAX processes on 127.0.0.1.

Keras fixes its backend per process, so every JAX run is a child process (KERAS_BACKEND=jax); the pytest
process itself runs Keras on TensorFlow, which the "JAX strategy in a TensorFlow process" case uses.
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import tfscale as ts
import procs
from procs import REPO, run_one


@pytest.fixture(autouse=True, scope="module")
def _needs():
    """This module's processes import jax (tests/procs.py hides them by default)."""
    with procs.unhidden("jax"):
        yield


WORKERS = Path(__file__).resolve().parent / "workers"
TRAIN = str(WORKERS / "jax_train.py")
RTOL = 1e-5
JAX = {"KERAS_BACKEND": "jax"}
pytestmark = pytest.mark.slow


def _max_rel(a, b):
    """Largest difference relative to the tensor's scale (elementwise ratios blow up near zero)."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def _weights(run):
    return [run[k] for k in sorted((k for k in run.files if k.startswith("w")), key=lambda k: int(k[1:]))]


@pytest.fixture(scope="module")
def arms(tmp_path_factory):
    """Every arm of the equivalence tests, two processes at a time; name -> list of per-process results."""
    out = tmp_path_factory.mktemp("jax")

    def one(name, options, env=JAX):
        path = str(out / f"{name}.npz")
        run_one([TRAIN, path, json.dumps(options)], env=env, timeout=300)
        return {name: [np.load(path)]}

    def launched(name, options):
        path = str(out / f"{name}.npz")
        run_one(["-m", "tfscale", "launch", "-n", "2", "--backend", "jax", "--", sys.executable, TRAIN, path,
                 json.dumps(options)], timeout=300)
        return {name: [np.load(path.replace(".npz", f".{rank}.npz")) for rank in range(2)]}

    jobs = [(one, "none", {"strategy": "one_device", "no_tensorflow": True}),
            (one, "data_parallel2", {"strategy": "data_parallel", "replicas": 2}),  # TensorFlow importable
            (launched, "processes2", {"strategy": "auto", "no_tensorflow": True}),
            (one, "model_parallel2", {"strategy": "model_parallel", "replicas": 2, "mesh": [1, 2],
                                      "layout": {".*conv2d/kernel": [None, None, None, "model"],
                                                 ".*dense/kernel": [None, "model"]}}),
            (one, "tensorflow", {"strategy": "default"}, {"KERAS_BACKEND": "tensorflow"})]
    results = {}
    with ThreadPoolExecutor(2) as pool:
        for done in pool.map(lambda job: job[0](*job[1:]), jobs):
            results.update(done)
    return results


def test_same_losses_and_weights_on_every_jax_scale(arms):
    reference = arms["none"][0]
    assert str(reference["backend"]) == "jax" and int(reference["steps"]) == 20
    report = {}
    for name, replicas in (("data_parallel2", 2), ("processes2", 2), ("model_parallel2", 1)):
        runs = arms[name]
        for run in runs:
            assert str(run["backend"]) == "jax" and int(run["num_replicas"]) == replicas
            assert int(run["steps"]) == 20, f"{name} ran {int(run['steps'])} steps"
            loss_diff = float(np.max(np.abs(reference["losses"] - run["losses"]) / np.abs(reference["losses"])))
            assert len(_weights(run)) == len(_weights(reference)) == 6
            weight_diff = max(_max_rel(a, b) for a, b in zip(_weights(reference), _weights(run)))
            assert loss_diff < RTOL, f"{name}: per-step losses differ by {loss_diff:.2e} relative"
            assert weight_diff < RTOL, f"{name}: final weights differ by {weight_diff:.2e} relative"
            report[name] = max(report.get(name, 0.0), loss_diff, weight_diff)
        if len(runs) > 1:  # every process ends with identical weights
            assert all(np.array_equal(a, b) for a, b in zip(_weights(runs[0]), _weights(runs[1])))
    print("largest relative differences:", report)


def test_the_jax_path_imports_no_tensorflow(arms):
    """Where TensorFlow is installed, the JAX path leaves it unloaded; where it is not, the JAX path still runs.

    tensorflow_loaded is read at the worker's end. Only the arms without the import blocker can show it True
    (in a blocked arm an import fails, so the check there could not fail): TensorFlow is installed here.
    """
    for name in ("data_parallel2", "model_parallel2"):  # no blocker: an `import tensorflow` would succeed
        assert all(not bool(run["tensorflow_loaded"]) for run in arms[name]), name
    for name in ("none", "processes2"):  # blocked, as on a machine without TensorFlow: they ran to the end
        assert all(str(run["backend"]) == "jax" and int(run["steps"]) == 20 for run in arms[name]), name


def test_same_training_on_tensorflow_and_jax(arms):
    tf_run, jax_run = arms["tensorflow"][0], arms["data_parallel2"][0]
    assert str(tf_run["backend"]) == "tensorflow"
    loss_diff = float(np.max(np.abs(tf_run["losses"] - jax_run["losses"]) / np.abs(tf_run["losses"])))
    assert loss_diff < 1e-4, f"TensorFlow and JAX losses differ by {loss_diff:.2e} relative over 20 steps"
    print(f"TensorFlow default vs JAX data_parallel x2: losses within {loss_diff:.2e} relative")


def test_model_parallel_holds_about_half_the_parameters_per_device(arms):
    single, sharded = arms["none"][0], arms["model_parallel2"][0]
    shardings = json.loads(str(sharded["shardings"]))
    assert shardings["sequential/dense/kernel"] == "(None, 'model')"
    assert shardings["sequential/conv2d/kernel"] == "(None, None, None, 'model')"
    ratio = int(sharded["bytes_per_device"]) / int(single["bytes_per_device"])
    assert int(sharded["bytes"]) == int(single["bytes"])
    assert ratio <= 0.55, f"each device holds {ratio:.3f}x the parameter bytes of one device"
    print(f"model_parallel x2: {ratio:.3f}x the parameter bytes per device")


def test_killed_jax_worker_job_resumes_and_ends_like_an_uninterrupted_run(tmp_path):
    worker = str(WORKERS / "train_resume.py")
    run_one([worker, str(tmp_path / "ref.npz"), str(tmp_path / "ref_ckpt"), "-"], env=JAX, timeout=300)
    (tmp_path / "tmp").mkdir()
    job = run_one(["-m", "tfscale", "launch", "-n", "2", "--backend", "jax", "--max-restarts", "1", "--",
                   sys.executable, worker, str(tmp_path / "out.npz"), str(tmp_path / "ckpt"), "-",
                   str(tmp_path / "killed")], env={"TMPDIR": str(tmp_path / "tmp")}, timeout=400)
    assert (tmp_path / "killed").exists(), job.stdout  # worker 1 really died mid-epoch once
    assert "restarting all 2 worker(s)" in job.stdout
    ref, chief, other = (np.load(tmp_path / n) for n in ("ref.npz", "out.0.npz", "out.1.npz"))
    # the restarted chief took its programs from the launch's compilation cache, which is gone with the launch
    # (JAX writes it from process 0 only, and on CPU the other process's programs differ: it compiles again);
    # the single process (no launcher) had none
    cache = str(chief["cache_dir"])
    assert cache.startswith(str(tmp_path / "tmp")) and str(other["cache_dir"]) == cache, cache
    assert int(chief["cache_hits"]) >= 3, int(chief["cache_hits"])
    assert (str(ref["cache_dir"]), int(ref["cache_hits"])) == ("", 0)
    assert os.listdir(tmp_path / "tmp") == [], "the launch left temporary folders behind"
    assert (int(chief["resumed_from_epoch"]), int(other["resumed_from_epoch"])) == (1, 1)
    assert (int(chief["epochs_run"]), int(ref["epochs_run"])) == (2, 3)
    keys = [k for k in ref.files if k.startswith("w")]
    assert len(keys) == 4
    for key in keys:
        np.testing.assert_allclose(chief[key], ref[key], atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(chief[key], other[key])


def test_weights_sharded_across_processes_checkpoint_and_resume(tmp_path):
    worker = str(WORKERS / "jax_sharded_resume.py")
    run_one(["-m", "tfscale", "launch", "-n", "2", "--backend", "jax", "--", sys.executable, worker,
             str(tmp_path / "resumed.npz"), str(tmp_path / "ckpt"), "2", "3"], timeout=300)
    run_one([worker, str(tmp_path / "whole.npz"), str(tmp_path / "ckpt_whole"), "0", "3"],
            env={**JAX, "TFSCALE_REPLICAS_PER_WORKER": "2"}, timeout=300)
    resumed, whole = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "whole.npz")
    assert list(resumed["shardings"]) == ["P(None, 'model')", "P(None,)"] * 2  # kernels split over the 2 processes
    assert (int(resumed["resumed_from_epoch"]), int(resumed["epochs_run"])) == (2, 1)
    assert len(_weights(resumed)) == len(_weights(whole)) == 4
    for a, b in zip(_weights(resumed), _weights(whole)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bad_input_on_jax_gives_tfscale_errors_not_jax_traces():
    out = run_one([str(WORKERS / "jax_errors.py")], env=JAX, timeout=300).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert found["no_layout"].startswith("ConfigError: model_parallel has no layout")
    assert "sequential/dense/kernel (64, 128)" in found["no_layout"]  # the model's variable paths, to write rules
    assert "['.*conv.*kernel'] match no variable" in found["rule_matches_nothing"]
    assert "sequential_1/dense_2/kernel" in found["rule_matches_nothing"]
    assert "dimension 1 (127) does not divide over the 2 devices of mesh axis 'model'" in found["indivisible"]
    assert "mesh (1, 3) has 3 positions, but there are 2 device(s)" in found["mesh"]
    assert "'mirrored' is a tensorflow strategy" in found["tf_strategy"]
    assert "data_parallel, model_parallel, one_device, tpu" in found["tf_strategy"]  # what this backend has
    assert "communication is a tensorflow-only setting" in found["tf_option"]
    assert found["tpu"].startswith("ClusterError: a TPU was asked for but JAX sees none")
    assert "the generator gave 0 examples" in found["generator_object_ok"]
    assert found["bad_input"].startswith("DataError: Scale.distribute(data) is a str")
    assert "Traceback" not in out


def test_jax_not_installed_names_the_extra():
    code = ("import sys; sys.modules['jax'] = None\nimport tfscale as ts\ntry:\n    ts.Scale('data_parallel')\n"
            "except ts.ConfigError as e:\n    print(e)")
    out = run_one(["-c", code], env={"KERAS_BACKEND": "jax"}, timeout=120).stdout
    assert "Keras is set to run on jax, which is not installed" in out and 'pip install -e ".[jax]"' in out


def test_a_jax_strategy_in_a_tensorflow_process_is_a_clear_error():
    import keras

    assert keras.config.backend() == "tensorflow"
    with pytest.raises(ts.ConfigError, match="'model_parallel' is a jax strategy, but this process runs Keras on "
                                             "tensorflow") as e:
        ts.Scale("model_parallel", mesh=(1, 2))
    assert "KERAS_BACKEND=jax" in str(e.value) and "mirrored" in str(e.value)
    with pytest.raises(ts.ConfigError, match="mesh is a jax-only setting"):
        ts.Scale("default", mesh=(1, 2))


def test_info_on_jax_reports_devices_choice_and_placement(tmp_path):
    (tmp_path / "wide.py").write_text(
        "import keras\n\ndef build():\n    return keras.Sequential([keras.Input((256,)), keras.layers.Dense(512), "
        "keras.layers.Dense(10)])\n")
    out = run_one(["-m", "tfscale", "info", "--json", "--backend", "jax", "--replicas", "2", "--strategy",
                   "model_parallel", "--mesh", "1,2", "--layout", "auto", "--model", "wide:build"],
                  env={"PYTHONPATH": f"{tmp_path}:{REPO}"}, timeout=180).stdout
    report = json.loads(out[out.index("{\n"):])
    assert report["backend"] == "jax" and report["versions"]["jax"].startswith("0.")
    assert report["auto"] == {"strategy": "data_parallel", "reason": "2 CPU replicas asked for (host devices)"}
    assert [d["name"] for d in report["devices"]] == ["cpu:0", "cpu:1"]
    assert {(s["name"], s["backend"]) for s in report["strategies"]} >= {("model_parallel", "jax"),
                                                                        ("mirrored", "tensorflow")}
    variables = {v["path"]: v for v in report["placement"]["engine"]["variables"]}
    kernel = variables["sequential/dense/kernel"]  # 131,072 parameters: sharded by "auto"
    assert kernel["sharding"] == "(None, 'model')" and kernel["bytes_per_device"] * 2 == kernel["bytes"]
    assert variables["sequential/dense_1/kernel"]["sharding"] == "replicated"  # 5,120 parameters: kept whole


def test_train_run_file_on_jax_trains_and_exports_through_a_tensorflow_process(tmp_path):
    out = run_one(["-m", "tfscale", "train", str(REPO / "examples" / "train" / "digits.toml"),
                   "--set", "strategy=data_parallel", "--set", "train.epochs=2",
                   "--set", f"train.checkpoint_dir={tmp_path / 'ckpt'}", "--set", f"export.dir={tmp_path / 'out'}",
                   "--set", 'export.modes=["float32", "int8"]'],
                  env={"KERAS_BACKEND": "jax", "TFSCALE_REPLICAS_PER_WORKER": "2", "TFSCALE_VERBOSE": "1"},
                  timeout=400, hide=procs.hiding("jax", "sklearn", "matplotlib")).stdout  # digits; the report's plot
    assert "data_parallel" in out and "jax" in out
    # the export ran in a TensorFlow-backend child (tfscale.export.handoff's log line, shown with TFSCALE_VERBOSE)
    handoff = "exporting in a TensorFlow process (this one runs Keras on another backend): quantize_all"
    assert handoff in out, out[-4000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = {r["mode"]: r for r in report["rows"]}
    assert set(rows) == {"float32", "int8"} and all("error" not in r for r in rows.values())
    assert rows["int8"]["size_bytes"] < rows["float32"]["size_bytes"]
    assert (tmp_path / "out" / "int8.tflite").stat().st_size == rows["int8"]["size_bytes"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-00001.json", "epoch-00001.weights.h5",
                                                                     "epoch-00002.json", "epoch-00002.weights.h5"]


def test_a_keras_hub_layout_map_places_gemma_as_keras_does_with_the_same_checks_and_axis_names():
    """keras-hub's own `GemmaBackbone.get_layout_map` as `layout=` (issue #26: it was a raw TypeError), a tiny
    Gemma on 2 CPU devices: every variable sharded as Keras' own ModelParallel places it with the same map, the
    same outputs; `axis_names`; a large variable a LayoutMap leaves whole is a warning naming it; and each wrong
    LayoutMap is a tfscale error, never a raw one."""
    out = run_one([str(WORKERS / "promise_layout_map.py")], timeout=300,
                  env={**JAX, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}).stdout
    found = json.loads(out.strip().splitlines()[-1])
    gemma = found["gemma"]
    assert gemma["tfscale"] == gemma["keras"] and len(gemma["tfscale"]) == 20, gemma
    assert gemma["tfscale"]["decoder_block_0/attention/query/kernel"] == "('model', 'batch', None)"  # heads split
    assert gemma["tfscale"]["decoder_block_1/ffw_linear/kernel"] == "('model', 'batch')"
    assert gemma["mesh"] == {"batch": 1, "model": 2} and gemma["output_difference"] < 1e-5
    assert gemma["query_bytes_per_device"] * 2 == gemma["query_bytes"]
    assert found["axis_names"] == {"mesh": {"batch": 1, "model": 2}, "batch_axis": "batch",
                                   "kernel": {"sequential/dense/kernel": "(None, 'model')",
                                              "sequential/dense/bias": "(None,)"}}
    whole = found["whole"]
    assert whole["shardings"]["sequential_1/dense_1/kernel"] == "(None, 'model')"  # a map without a mesh: the Scale's
    assert [w for w in whole["warnings"] if "is whole on every device" in w] == [
        "sequential_1/embedding/embeddings (1000, 128) (128000 parameters) is whole on every device: no layout rule "
        "shards it (add a rule, or raise min_shard_params)"], whole["warnings"]
    errors = found["errors"]
    assert all(e.startswith("ConfigError: ") for e in errors.values()), errors
    assert "mesh (2, 1) differs from the LayoutMap's mesh (1, 2)" in errors["other_mesh_shape"]
    assert "axis_names ('x', 'y') differ from the LayoutMap's mesh" in errors["other_axis_names"]
    assert "over the devices ['cpu:0'], but this Scale spreads over ['cpu:0', 'cpu:1']" in errors["other_devices"]
    assert "names axis 'modle', which the mesh does not have" in errors["axis_not_in_mesh"]
    assert "'.*dense.*kernel' is a TensorLayout on the mesh (2, 1)" in errors["layout_on_other_mesh"]
    assert "'token_embedding/embeddings' has shape (1023, 256): dimension 0 (1023) does not divide" in errors[
        "indivisible"]
    assert "['.*conv.*kernel'] match no variable" in errors["matches_nothing"]
    assert "names axis 'data', which the mesh does not have" in errors["rule_axis_not_in_named_axes"]
    assert "('batch', 'model')" in errors["rule_axis_not_in_named_axes"]  # the axes axis_names gave the mesh


def test_a_model_trained_on_jax_exports_a_saved_model_through_a_tensorflow_process(tmp_path):
    """README: a model on JAX is saved as .keras and converted in a TensorFlow-backend process. The SavedModel
    it writes serves, in this (TensorFlow) process, the outputs the JAX model gave."""
    import tensorflow as tf

    out = run_one([str(WORKERS / "promise_jax_export.py"), str(tmp_path)], env=JAX, timeout=300).stdout
    found = json.loads(out.strip().splitlines()[-1])
    assert found["backend"] == "jax" and found["path"] == str(tmp_path / "saved_model")
    assert "exporting in a TensorFlow process (this one runs Keras on another backend): saved_model" in found["log"]
    data = np.load(tmp_path / "data.npz")
    loaded = tf.saved_model.load(found["path"])  # held: its functions need its variables alive
    served = loaded.serve(tf.constant(data["x"])).numpy()
    np.testing.assert_allclose(served, data["logits"], atol=1e-5)
