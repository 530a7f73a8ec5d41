"""`register`: a user's strategy joins the registry under a new name; a name that is taken is refused unless
the caller asks to replace it."""

import sys

import pytest

import procs
from tfscale.errors import ConfigError
from tfscale.strategy import registry


def build(topology, config):
    return None


def test_a_taken_name_is_refused_unless_override_and_a_new_one_is_listed():
    with pytest.raises(ConfigError, match="'mirrored' of the tensorflow engine exists already") as refused:
        registry.register("mirrored", "mine")(build)
    assert "override=True" in refused.value.fix
    assert registry.get("mirrored", "tensorflow").description != "mine"
    with pytest.raises(ConfigError, match="exists already"):
        registry.register("auto", "mine")(build)

    @registry.register("test_mine", "a test strategy")
    def mine(topology, config):
        return None

    registry.register("test_mine", "a test strategy")(mine)  # the same function again (a module imported twice)
    assert "test_mine" in registry.names("tensorflow")
    registry.register("test_mine", "replaced", override=True)(build)
    assert registry.get("test_mine", "tensorflow").description == "replaced"
    registry._REGISTRY.pop(("tensorflow", "test_mine"))  # private: the registry's table; leave it as it was


def test_a_users_strategy_declaring_lockstep_gets_the_key_exchange():
    """Behaviour follows the declared capabilities, not the name: a strategy registered as "my_lockstep" with
    multi_worker's capabilities exchanges keys across 2 launched workers (None before: only the name
    "multi_worker" had it). The exit barrier turns on by the same declaration (TensorFlowEngine.build)."""
    done = procs.run_one(["-m", "tfscale", "launch", "-n", "2", "--", sys.executable,
                          str(procs.REPO / "tests" / "workers" / "lockstep_strategy.py")], timeout=300)
    for rank in (0, 1):
        assert f"rank {rank}: my_lockstep exchange ['r0', 'r1']" in done.stdout, done.stdout[-3000:]
    assert "did not all reach" not in done.stdout
