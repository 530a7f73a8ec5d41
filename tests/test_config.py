"""Config dataclasses, TOML presets and --set overrides: typed, with errors that name the key."""

from pathlib import Path

import pytest

from tfscale.config import StrategyConfig, apply_overrides, from_mapping, load_strategy_preset, parse_override
from tfscale.errors import ConfigError

PRESETS = sorted((Path(__file__).resolve().parent.parent / "strategies").glob("*.toml"))


def test_every_shipped_preset_loads():
    expected = {"laptop": "mirrored", "multi_gpu": "mirrored", "multi_worker": "multi_worker", "slurm": "multi_worker",
                "tpu": "tpu"}  # each preset's strategy
    assert {p.stem for p in PRESETS} == set(expected)
    for path in PRESETS:
        config = load_strategy_preset(path)
        assert config.name == expected[path.stem], path.name
        assert config.description, f"{path.name} has no description"
    assert load_strategy_preset(Path(PRESETS[0]).parent / "laptop.toml").replicas == 2


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
