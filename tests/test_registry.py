"""`register`: a user's strategy joins the registry under a new name; a name that is taken is refused unless
the caller asks to replace it."""

import re
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


def test_a_users_strategy_declaring_lockstep_gets_the_exchange_the_checkpoint_check_and_the_exit_barrier(tmp_path):
    """Behaviour follows the declared capabilities, not the name: a strategy registered as "my_lockstep" with
    multi_worker's capabilities, on 2 launched workers, exchanges keys (None before: only the name
    "multi_worker" had it); runs the shared-checkpoint check (a folder both see passes, a folder per worker is
    refused on both); and leaves through the exit barrier (worker 1 exits only after the chief, which finishes
    last)."""
    done = procs.run_one(["-m", "tfscale", "launch", "-n", "2", "--", sys.executable,
                          str(procs.REPO / "tests" / "workers" / "lockstep_strategy.py"), str(tmp_path)], timeout=300)
    out = done.stdout
    for rank in (0, 1):
        assert f"rank {rank}: my_lockstep exchange ['r0', 'r1']" in out, out[-3000:]
        assert f"rank {rank}: one folder shared" in out, out[-3000:]
        assert re.search(rf"rank {rank}: own folders refused: checkpoint_dir .*ckpt{rank}.* is not shared between "
                         r"the hosts: worker\(s\) 1 do not see", out), out[-3000:]
    assert "rank 1 left after the chief: True" in out, out[-3000:]
    assert "did not all reach" not in out
