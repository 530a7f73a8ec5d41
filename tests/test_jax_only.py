"""tfscale without TensorFlow (issue #25 part 3): the JAX engine on a Colab/Kaggle TPU runtime's kind of install.

Every process these tests start has no TensorFlow: in the JAX-only leg of CI (scripts/test_jax_only.sh, a
virtual environment made with `pip install -e ".[jax,launch]"`) it is not installed; in the main leg it is
hidden (tests/lean_site). Also the packaging that makes that install possible (pyproject.toml's extras, the
install hints of tfscale.errors) and the Python version floor.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tfscale import errors

import procs
from require import skip_or_fail

REPO = procs.REPO
JOB = str(REPO / "tests" / "workers" / "jax_only_job.py")
NO_TENSORFLOW = ("tensorflow", *procs.hiding("jax"))  # the lean site's hidden packages, less JAX, plus TensorFlow


def _env(**extra):
    return procs.base_env(hide=NO_TENSORFLOW, KERAS_BACKEND="jax", **extra)


def _results(out: Path, n: int) -> list[dict]:
    return [json.loads((out / f"result.{rank}.json").read_text()) for rank in range(n)]


def _check_refusals(result):
    """tf.data input and TFLite export are ConfigErrors that name the `tensorflow` extra, installed from the repo."""
    assert set(result["refused"]) == {"tf.data input", "tflite export"}
    for name, refusal in result["refused"].items():
        assert refusal is not None, f"{name} did not fail without TensorFlow"
        assert '.[tensorflow]' in refusal["fix"] and "tfscale[tensorflow] @ git+" in refusal["fix"], refusal


def test_one_process_trains_checkpoints_and_reads_numpy_and_a_generator(tmp_path):
    done = subprocess.run([sys.executable, JOB, str(tmp_path)], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    [result] = _results(tmp_path, 1)
    assert (result["backend"], result["strategy"], result["workers"]) == ("jax", "one_device", 1)
    assert result["loss"][-1] < result["loss"][0]
    assert len(result["generator_loss"]) == 1
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.weights.h5"))[-1] == "epoch-00003.weights.h5"
    assert result["tensorflow_loaded"] is False
    _check_refusals(result)


@pytest.mark.slow
def test_launch_backend_jax_trains_two_processes_together(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tfscale", "launch", "-n", "2", "--backend", "jax", "--",
                           sys.executable, JOB, str(tmp_path)], env=_env(), capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    results = _results(tmp_path, 2)
    assert [(r["rank"], r["workers"], r["strategy"]) for r in results] == [(0, 2, "data_parallel"),
                                                                          (1, 2, "data_parallel")]
    assert results[0]["weights"] == results[1]["weights"]  # one model, trained together
    assert results[0]["loss"][-1] < results[0]["loss"][0]
    assert (tmp_path / "ckpt" / "epoch-00003.weights.h5").exists()  # written by the chief
    for result in results:
        assert result["tensorflow_loaded"] is False
        _check_refusals(result)


def test_info_and_a_tensorflow_command_without_tensorflow(tmp_path):
    info = subprocess.run([sys.executable, "-m", "tfscale", "info"], env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert info.returncode == 0, info.stderr[-3000:]
    assert "auto picks: one_device" in info.stdout and "jax (this one)" in info.stdout
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    inspect = subprocess.run([sys.executable, "-m", "tfscale", "data", "inspect", str(tmp_path / "rows.csv")],
                             env=_env(), capture_output=True, text=True, timeout=120)
    assert inspect.returncode == 2, inspect.stderr[-3000:]
    assert "Traceback" not in inspect.stderr
    assert "tensorflow is not installed" in inspect.stderr and 'pip install -e ".[tensorflow]"' in inspect.stderr
    env = {k: v for k, v in _env().items() if k != "KERAS_BACKEND"}  # a TensorFlow strategy, by name
    mirrored = subprocess.run([sys.executable, "-c", "import tfscale as ts\ntry:\n    ts.Scale('mirrored')\n"
                               "except ts.ConfigError as e:\n    print(e)"], env=env, capture_output=True,
                              text=True, timeout=120)
    assert "Keras is set to run on tensorflow, which is not installed" in mirrored.stdout, mirrored.stderr[-3000:]
    assert 'pip install -e ".[tensorflow]"' in mirrored.stdout


def test_importing_tfscale_export_without_tensorflow_is_a_config_error_naming_the_extra():
    """`import tfscale.export` (not only `ts.export`) says what to install, not which module was missing."""
    code = ("import tfscale as ts\ntry:\n    import tfscale.export\nexcept ts.ConfigError as e:\n    print(e)\n"
            "except ModuleNotFoundError as e:\n    print('raw', e)")
    done = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("tensorflow is not installed") and "Where: tfscale.export." in done.stdout, \
        done.stdout
    assert 'pip install -e ".[tensorflow]"' in done.stdout


def _closure(extras: dict, extra: str) -> list[str]:
    """The requirements of `extra`, with the extras it names (tfscale[a,b]) expanded."""
    found = []
    for requirement in extras[extra]:
        inner = re.fullmatch(r"tfscale\[(.*)\]", requirement)
        found += (sum((_closure(extras, e.strip()) for e in inner[1].split(",")), []) if inner else [requirement])
    return found


def _names(requirements) -> set[str]:
    return {re.split(r"[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_jax_extra_never_pulls_tensorflow_and_the_readme_commands_do():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras, core = project["optional-dependencies"], _names(project["dependencies"])
    assert "tensorflow" not in core | _names(_closure(extras, "jax")) | _names(_closure(extras, "launch"))
    for command_extra in ("demo", "test", "tensorflow", "quantize"):  # the README's two commands, the TF routes
        assert "tensorflow" in _names(_closure(extras, command_extra)), command_extra


def test_every_install_hint_names_an_extra_that_brings_the_package():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for module, (extra, package) in errors.OPTIONAL_MODULES.items():
        if extra is not None:
            assert _names([package]) <= _names(_closure(extras, extra)), (module, extra, package)
    assert errors.install_hint("jax") == ('install the "jax" extra from the tfscale repository: pip install -e '
                                          '".[jax]" in a clone, or pip install "tfscale[jax] @ git+REPOSITORY_URL"')


def _python310() -> str:
    pyenv = Path.home() / ".pyenv" / "versions"  # before PATH: pyenv's shim is on PATH but may not run 3.10
    found = os.environ.get("TFSCALE_PYTHON310") or next((str(p / "bin" / "python") for p in
                                                         sorted(pyenv.glob("3.10.*"))), None)
    found = found or shutil.which("python3.10")
    if not found:
        skip_or_fail("no Python 3.10 (set TFSCALE_PYTHON310, or install it with pyenv)")
    return found


@pytest.mark.slow
def test_python_310_is_refused_by_pip_and_by_import(tmp_path):
    """pip on 3.10 refuses the project's wheel with its version message; a copy of the package put on the path of
    3.10 anyway says what to do instead of failing on tomllib. Offline: the wheel is built by this venv's
    setuptools (the test extra brings one new enough for the SPDX license string), not by an isolated build."""
    python = _python310()
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "tfscale", source / "tfscale", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-deps",
                            "--no-build-isolation", "--no-index", "-w", str(tmp_path / "wheel"), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "wheel").glob("tfscale-*.whl"))
    pip = subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--no-index",
                          "--target", str(tmp_path / "site"), str(wheel)], capture_output=True, text=True, timeout=300)
    assert pip.returncode != 0
    assert "requires a different Python" in pip.stderr and "not in '>=3.11'" in pip.stderr, pip.stderr[-2000:]
    assert not (tmp_path / "site" / "tfscale").exists()
    imported = subprocess.run([python, "-c", "import tfscale"], env={**os.environ, "PYTHONPATH": str(source)},
                              capture_output=True, text=True, timeout=60)
    assert imported.returncode == 1
    assert "ImportError: tfscale needs Python 3.11 or newer" in imported.stderr, imported.stderr[-2000:]
    assert "python3.11 -m venv" in imported.stderr


def test_train_with_an_export_table_refuses_before_training_without_tensorflow(tmp_path):
    (tmp_path / "job.py").write_text(
        "import keras\nimport numpy as np\n\n"
        "def build_model():\n"
        "    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])\n\n"
        "def train_data():\n"
        "    x = np.random.RandomState(0).rand(64, 4).astype('float32')\n"
        "    return x, (x.sum(1) > 2).astype('int32')\n")
    (tmp_path / "run.toml").write_text(
        'model = "job:build_model"\nstrategy = "auto"\n[data]\ntrain = "job:train_data"\n'
        '[train]\nepochs = 1\nglobal_batch_size = 16\nloss = "sparse_categorical_crossentropy"\n'
        'checkpoint_dir = "ckpt"\n[export]\ndir = "exported"\n')
    done = subprocess.run([sys.executable, "-m", "tfscale", "train", "run.toml"], env=_env(), capture_output=True,
                          text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert "Traceback" not in done.stderr
    assert "the [export] table needs TensorFlow, which is not installed" in done.stderr
    assert 'pip install -e ".[tensorflow]"' in done.stderr and "export.dir" in done.stderr
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "exported").exists()  # nothing trained
    without = subprocess.run([sys.executable, "-m", "tfscale", "train", "run.toml", "--set", "export.dir=''"],
                             env=_env(), capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert without.returncode == 0, (without.stdout + without.stderr)[-3000:]
    assert (tmp_path / "ckpt").is_dir()
