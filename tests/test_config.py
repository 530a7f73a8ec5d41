"""Config dataclasses, TOML presets and --set overrides: typed, with errors that name the key."""

import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tfscale.config import (StrategyConfig, apply_overrides, find_preset, from_mapping, load_run_config,
                            load_strategy_preset, load_tune_run_config, parse_override, preset_names)
from tfscale.config.functions import load_function
from tfscale.errors import ConfigError
from tfscale.strategy import registry

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted((REPO / "tfscale" / "config" / "presets").glob("*.toml"))
EXPECTED = {"laptop": "mirrored", "multi_gpu": "mirrored", "multi_worker": "multi_worker", "slurm": "multi_worker",
            "tpu": "tpu"}  # each shipped preset's strategy


def test_every_shipped_preset_loads():
    assert {p.stem for p in PRESETS} == set(EXPECTED)
    for path in PRESETS:
        config = load_strategy_preset(path)
        assert config.name == EXPECTED[path.stem], path.name
        assert config.description, f"{path.name} has no description"
    assert load_strategy_preset(Path(PRESETS[0]).parent / "laptop.toml").replicas == 2


def test_shipped_presets_load_by_name_and_by_the_path_they_had(tmp_path, monkeypatch):
    """Found through importlib.resources (as in an installed package) from any working directory, by name, by
    file name, or as strategies/NAME.toml (their place in the repository before they moved into the package)."""
    monkeypatch.chdir(tmp_path)
    assert preset_names() == sorted(EXPECTED)
    for name, strategy in EXPECTED.items():
        configs = [load_strategy_preset(ref) for ref in (name, f"{name}.toml", f"strategies/{name}.toml")]
        assert configs[0] == configs[1] == configs[2] and configs[0].name == strategy, name
    assert load_strategy_preset("laptop", ("replicas=4",)).replicas == 4
    # a file of that path wins over the shipped preset: the run file's folder first, then the working directory
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "laptop.toml").write_text('name = "mirrored"\nreplicas = 3\n')
    assert load_strategy_preset("strategies/laptop.toml").replicas == 3
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "laptop.toml").write_text('name = "mirrored"\nreplicas = 5\n')
    assert load_strategy_preset(find_preset("laptop.toml", tmp_path / "run")).replicas == 5
    assert load_strategy_preset(find_preset("strategies/laptop.toml", tmp_path / "run")).replicas == 3
    with pytest.raises(ConfigError) as e:
        load_strategy_preset("laptopp")
    assert "'laptopp' does not exist" in str(e.value) and "laptop, multi_gpu, multi_worker, slurm, tpu" in e.value.fix


def test_shipped_presets_are_package_data():
    """pyproject.toml's package-data carries every shipped preset into a wheel (a non-editable install)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_data = project["tool"]["setuptools"]["package-data"]
    package = REPO / "tfscale" / "config"
    carried = [p for p in PRESETS if any(fnmatch.fnmatch(p.relative_to(package).as_posix(), pattern)
                                         for pattern in package_data.get("tfscale.config", []))]
    assert carried == PRESETS, package_data


def test_unknown_key_names_file_key_and_closest(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "mirrored"\nreplica = 2\n')
    with pytest.raises(ConfigError) as e:
        load_strategy_preset(path)
    assert "'replica'" in str(e.value) and "did you mean 'replicas'" in str(e.value) and str(path) in str(e.value)


def test_wrong_type_and_bad_value(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('replicas = "two"\n')
    with pytest.raises(ConfigError, match="'replicas' must be a whole number"):
        load_strategy_preset(path)
    path.write_text('communication = "carrier-pigeon"\n')
    with pytest.raises(ConfigError,
                       match=r"'carrier-pigeon' is not an accepted value.*communication.*auto, ring, nccl"):
        load_strategy_preset(path)
    path.write_text("replicas = 0\n")
    with pytest.raises(ConfigError, match="at least 1"):
        load_strategy_preset(path)


def test_malformed_and_missing_files(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_strategy_preset(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_strategy_preset(tmp_path / "nope.toml")


def test_strategy_table_and_overrides(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[strategy]\nname = "mirrored"\nreplicas = 2\n')
    config = load_strategy_preset(path, ("strategy.replicas=4", "strategy.collective_timeout=30"))
    assert config == StrategyConfig(name="mirrored", replicas=4, collective_timeout=30.0)
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("name=hello world") == (["name"], "hello world")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=true"]) == {"a": {"b": 1, "c": True}}
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("novalue")


def test_from_mapping_tuple_and_optional():
    config = from_mapping(StrategyConfig, {"devices": ["/cpu:0", "/cpu:1"], "tpu": None}, source="test")
    assert config.devices == ("/cpu:0", "/cpu:1") and config.tpu is None
    with pytest.raises(ConfigError, match="a list"):
        from_mapping(StrategyConfig, {"devices": "/cpu:0"}, source="test")


def test_a_bad_cluster_value_reads_the_same_from_a_file_and_from_python(tmp_path):
    """StrategyConfig.cluster is a `tfscale.vocabulary` Literal: typed loading gives check_choice's message."""
    path = tmp_path / "p.toml"
    path.write_text('[strategy]\ncluster = "carrier-pigeon"\n')
    with pytest.raises(ConfigError) as from_file:
        load_strategy_preset(path)
    with pytest.raises(ConfigError) as from_python:
        StrategyConfig(cluster="carrier-pigeon")
    assert from_file.value.what == from_python.value.what == "'carrier-pigeon' is not an accepted value"
    assert from_file.value.fix == from_python.value.fix == ("use one of: auto, tf_config, keras_distribution, "
                                                            "slurm, kubernetes, tpu, none")
    assert from_file.value.where == f"{path}, strategy.cluster"


def test_load_function_finds_modules_and_py_files_beside_the_run_file(tmp_path, monkeypatch):
    """The one "module:function" resolver: a module or a .py file in the run file's folder, a dotted attribute."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "tfscale_beside_run_file.py").write_text("def build():\n    return 'module'\n")
    (folder / "models.py").write_text("class Models:\n    @staticmethod\n    def build():\n        return 'file'\n")
    (folder / "tfscale_broken_module.py").write_text("raise ValueError('bad line')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert load_function("tfscale_beside_run_file:build", where="model", base_dir=folder)() == "module"
    assert load_function("models.py:Models.build", where="model", base_dir=folder)() == "file"
    with pytest.raises(ConfigError, match="no file .*missing.py"):
        load_function("missing.py:build", where="model", base_dir=folder)
    (tmp_path / "in_cwd.py").write_text("def build():\n    return 'cwd'\n")  # then the working directory
    assert load_function("in_cwd.py:build", where="model", base_dir=folder)() == "cwd"
    with pytest.raises(ConfigError, match="importing 'tfscale_broken_module' failed: ValueError: bad line"):
        load_function("tfscale_broken_module:build", where="model", base_dir=folder)
    with pytest.raises(ConfigError, match="cannot be imported.*beside the run file"):
        load_function("tfscale_no_such_module:build", where="run.toml, data", base_dir=folder)


RUN_FILE_TABLES = {load_run_config: "[train]\nepochs = 1\n", load_tune_run_config: "[tune]\nmax_trials = 1\n"}


def _run_file(folder: Path, strategy: str, tables: str) -> Path:
    path = folder / "run.toml"
    path.write_text(f'model = "m:build"\nmodel_args = {{units = 4}}\n{strategy}\n[data]\ntrain = "m:train"\n'
                    f'validation = "m:validation"\n\n{tables}')
    return path


@pytest.mark.parametrize("strategy, name, replicas", [
    ('strategy = "mirrored"', "mirrored", None),            # a name (the old tune file: a preset path)
    ('strategy = "mine.toml"', "one_device", 3),            # a preset file in the run file's folder
    ('strategy = "laptop.toml"', "mirrored", 2),            # a shipped preset
    ('[strategy]\nname = "default"\nreplicas = 5\n', "default", 5),  # a table
    ("", "auto", None),
])
def test_train_and_tune_run_files_share_one_loader_and_its_rules(tmp_path, monkeypatch, strategy, name, replicas):
    """`tfscale train` and `tfscale tune` read the same shared keys the same way: strategy, model, [data]."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "mine.toml").write_text('name = "one_device"\nreplicas = 3\n')
    monkeypatch.chdir(tmp_path)
    configs = [load(_run_file(tmp_path / "run", strategy, tables)) for load, tables in RUN_FILE_TABLES.items()]
    for config in configs:
        assert isinstance(config.strategy, StrategyConfig)
        assert (config.strategy.name, config.strategy.replicas) == (name, replicas)
        assert (config.model, config.model_args, config.data.train, config.data.validation) == (
            "m:build", {"units": 4}, "m:train", "m:validation")
    assert configs[0].strategy == configs[1].strategy
    overridden = [load(_run_file(tmp_path / "run", strategy, tables), ["strategy=mine.toml"])
                  for load, tables in RUN_FILE_TABLES.items()]
    assert [c.strategy.replicas for c in overridden] == [3, 3]


@pytest.mark.parametrize("strategy, tables, says, fix", [
    ('strategy = "mirrored"\ndata = "m:load_data"', "", "data is a table", "write [data] with train ="),
    ('strategy = "strategies/laptop"', "", "neither a strategy name nor a preset file",
     'write strategy = "strategies/laptop.toml"'),
    ("", "[train]\nepochs = 1\n", "[train] is read by `tfscale train`", "or run `tfscale train"),
    ("", "[export]\ndir = 'out'\n", "[export] is read by `tfscale train`", "tune.export"),
])
def test_old_tune_file_spellings_are_errors_that_say_how_to_fix(tmp_path, strategy, tables, says, fix):
    path = tmp_path / "run.toml"
    path.write_text(f'model = "m:build"\n{strategy}\n{tables}[tune]\nmax_trials = 1\n')
    with pytest.raises(ConfigError) as e:
        load_tune_run_config(path)
    assert says in e.value.what and fix in e.value.fix and str(path) in e.value.where


def test_a_train_file_with_a_tune_table_and_a_preset_given_as_a_name_say_how_to_fix(tmp_path):
    path = _run_file(tmp_path, 'strategy = "laptop"', "[tune]\nmax_trials = 1\n")
    with pytest.raises(ConfigError, match=r"\[tune\] is read by `tfscale tune`, and this is `tfscale train`"):
        load_run_config(path)
    config = load_run_config(_run_file(tmp_path, 'strategy = "laptop"', ""))  # a name, as in every run file
    with pytest.raises(ConfigError) as e:
        registry.get(config.strategy.name, "tensorflow")  # what Scale(config=config.strategy) looks up
    assert 'give it as "laptop.toml"' in e.value.fix


@pytest.mark.slow
def test_a_wheel_carries_the_presets_and_its_install_finds_them(tmp_path):
    """A non-editable install: the wheel built from the sources (pip, as a user's `pip install git+URL` does),
    installed into a folder of its own, loads every shipped preset by name from another working directory.
    pip builds in isolation, so it fetches the build backend from the package index, as any install does."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "tfscale", source / "tfscale", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(source)], check=True,
                   timeout=600)
    wheel = next((tmp_path / "wheel").glob("tfscale-*.whl"))
    carried = sorted(n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("tfscale/config/presets/"))
    assert carried == [f"tfscale/config/presets/{name}.toml" for name in sorted(EXPECTED)]
    subprocess.run([*pip, "install", "--no-deps", "-q", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   timeout=600)
    probe = ("import tfscale.config as c; print(c.__file__); "
             "print({n: c.load_strategy_preset(n).name for n in c.preset_names()})")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}  # before the editable install of this checkout
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    where, loaded = done.stdout.splitlines()[-2:]
    assert where.startswith(str(tmp_path / "site")), where  # the installed copy, not this checkout
    assert loaded == str(EXPECTED)
