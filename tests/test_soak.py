"""The soak (scripts/soak.py) in CI: 30 launch -> train -> kill -> restart cycles leave nothing behind."""

import json

import pytest
from procs import REPO, hiding, run_one


@pytest.mark.slow
@pytest.mark.timeout(1300)
def test_thirty_kill_and_restart_cycles_leave_no_process_port_folder_or_stale_checkpoint():
    # JAX workers: the same launcher, restarts and checkpoints at half the start-up CPU of TensorFlow's (and
    # without requests, which only Keras' RemoteMonitor imports there: TensorFlow needs it, JAX does not)
    out = run_one([str(REPO / "scripts" / "soak.py"), "--cycles", "30", "--backend", "jax"], timeout=1200,
                  hide=hiding("jax") + ("requests", "urllib3"))
    result = json.loads(out.stdout)
    print(json.dumps(result))
    assert result["ok"], out.stdout
    assert result["exit_code"] == 0 and result["restarts"] == result["kills"] == 30
    assert result["resumed_from_epoch"] == "29"  # the last attempt (killed in the 30th epoch) resumed after the 29th
    assert result["processes_left"] == [] and result["ports_left"] == [] and result["temp_left"] == []
    assert result["checkpoints"] == ["epoch-00031"]  # the last one, alone (keep_checkpoints=1)
    assert result["checkpoint_files"] == ["epoch-00031.json", "epoch-00031.weights.h5"]
