"""Tuning without training: run files and options are checked early, results survive a round trip."""

import json
import subprocess
import sys

import pytest

import tfscale
from procs import base_env
from tfscale.errors import ConfigError
from tfscale.tuning.results import TrialRow, TuneResult
from tfscale.tuning.run import load_run
from tune_helpers import write_run


def test_run_file_reads_strategy_and_search(tmp_path):
    run = load_run(write_run(tmp_path, strategy={"name": "mirrored", "replicas": 2}, tuner="random",
                             objective="val_accuracy", max_trials=3, export={"path": "out/", "modes": ["int8"]}),
                   ["tune.epochs=2"])
    assert (run.strategy.name, run.strategy.replicas) == ("mirrored", 2)
    assert (run.tune.tuner, run.tune.max_trials, run.tune.epochs) == ("random", 3, 2)
    assert run.tune.export_spec == {"path": "out/", "modes": ["int8"]}
    assert run.project_dir == str(tmp_path / "searches" / "test")


@pytest.mark.parametrize("override, where", [
    ("tune.tuner=grid", "tune.tuner"),
    ("tune.max_trial=3", "did you mean 'max_trials'"),
    ("tune.factor=1", "tune.factor"),
    ("tune.export.mode=3", "tune.export"),
    ("optimizer=3", "unknown key 'optimizer'"),
    ("model=nocolon", "model 'nocolon' is not of the form 'module:function'"),
    ("data=m:load_data", "data is a table"),
])
def test_run_file_mistakes_name_the_key(tmp_path, override, where):
    path = write_run(tmp_path, strategy={"name": "default"})
    with pytest.raises(ConfigError) as e:
        load_run(path, [override])
    assert where in str(e.value)
    assert str(path) in str(e.value)


def test_tune_rejects_unknown_options_before_any_work():
    with pytest.raises(ConfigError, match="max_trails"):
        tfscale.tune(lambda hp: None, None, max_trails=3)


def test_objective_on_validation_needs_validation_data():
    with pytest.raises(ConfigError, match="needs validation data"):
        tfscale.tune(lambda hp: None, ([0.0], [0]), objective="val_accuracy", scale=tfscale.Scale("default"))


def test_results_round_trip_with_best_by_direction(tmp_path):
    rows = [TrialRow("0", "COMPLETED", {"units": 8, "tuner/epochs": 2, "tuner/round": 0}, 0.30, 1.5, "tuner0"),
            TrialRow("1", "COMPLETED", {"units": 16}, 0.10, 2.0, "tuner1"),
            TrialRow("2", "RUNNING", {"units": 24}, None, None, "tuner1")]
    result = TuneResult(str(tmp_path), "val_loss", "min", rows, info={"strategy": "mirrored", "num_replicas": 2})
    json_path, png_path = result.save()
    assert open(png_path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    loaded = TuneResult.load(str(tmp_path))
    assert loaded.rows == rows and loaded.info["num_replicas"] == 2
    assert loaded.best.trial == "1"  # lowest loss
    assert [r.trial for r in loaded.unfinished] == ["2"]
    assert json.load(open(json_path))["best"]["trial"] == "1"
    assert rows[0].cells()[2] == "units=8, epochs=2"  # Hyperband's bookkeeping hidden but its epochs


def test_import_tfscale_and_tune_load_no_keras_tuner():
    code = ("import sys, tfscale; tfscale.tune; import tfscale.tuning.run, tfscale.cli.tune; "
            "print(sorted(m for m in ('keras_tuner', 'grpc', 'tensorboard') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=base_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_bayesian_search_end_to_end(tmp_path):
    """keras-tuner's BayesianOptimization behind `tfscale.tune`: every trial trained, the best one kept."""
    import keras
    import numpy as np

    rng = np.random.RandomState(0)
    x = rng.rand(256, 4).astype("float32")
    y = (x[:, 0] + x[:, 1] > 1).astype("int32")

    def build(hp):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(hp.Int("units", 4, 16, step=4), "relu"),
                                  keras.layers.Dense(2)])
        model.compile(keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-1, sampling="log")),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return model

    result = tfscale.tune(build, (x, y), (x[:64], y[:64]), tuner="bayesian", objective="val_accuracy", max_trials=3,
                          epochs=2, global_batch_size=32, seed=1, directory=str(tmp_path / "search"),
                          scale=tfscale.Scale("default"))
    completed = [row for row in result.rows if row.status == "COMPLETED"]
    assert len(completed) == 3 and len({json.dumps(row.hyperparameters, sort_keys=True) for row in completed}) == 3
    assert result.best.score == max(row.score for row in completed)
    # the best one kept: the model handed back has a best trial's units and scores that trial's val_accuracy
    tied = [row for row in completed if row.score == result.best.score]
    assert result.best_hyperparameters in [row.hyperparameters for row in tied]
    assert result.model.layers[0].units in {row.hyperparameters["units"] for row in tied}
    _, accuracy = result.model.evaluate(x[:64], y[:64], batch_size=32, verbose=0)
    assert accuracy == pytest.approx(result.best.score, abs=1e-6)
    saved = list((tmp_path / "search").rglob("tfscale_results.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["best"]["trial"] == result.best.trial


def test_a_multi_worker_scale_is_refused_before_any_trial():
    """keras-tuner trains a trial in one process: a multi-worker Scale is refused, with the way to spread trials."""
    code = ("import tfscale as ts\n"
            "try:\n"
            "    ts.tune(lambda hp: None, ([0.0] * 8, [0] * 8), scale=ts.Scale('multi_worker'), global_batch_size=4)\n"
            "except ts.ConfigError as e:\n"
            "    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=base_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "REFUSED" in out.stdout and "keras-tuner trains each trial in one process" in out.stdout
    assert "tfscale tune run.toml --workers N" in out.stdout
