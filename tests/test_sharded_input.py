"""`Scale.distribute(data, sharded=True)`: each worker trains on the shard it was handed, nothing re-sharded."""

import json
import os
import sys

import pytest

import procs

WORKER = os.path.join(os.path.dirname(__file__), "workers", "sharded_input.py")


@pytest.mark.slow
def test_two_workers_with_their_own_uneven_shards_see_every_element_once_per_epoch(tmp_path):
    """Rank 0 holds ids 0-47, rank 1 ids 48-79 (6 and 4 steps of 8): every id once per epoch, each on its owner,
    and fit runs both epochs to the end though the shards end at different steps."""
    job = procs.run_one(["-m", "tfscale", "launch", "-n", "2", "--timeout", "400", "--", sys.executable, WORKER,
                         str(tmp_path)], env=procs.THREAD_ENV, timeout=450)
    assert job.returncode == 0, job.stdout[-3000:]
    results = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    assert sorted(results[0]["seen"]) == list(range(0, 48)) and sorted(results[1]["seen"]) == list(range(48, 80))
    assert sorted(results[0]["seen"] + results[1]["seen"]) == list(range(80))  # once each: nothing lost or doubled
    assert results[0]["steps"] == results[1]["steps"] == 6  # the shorter shard is padded with empty batches
    for result in results:
        assert len(result["loss"]) == 2 and all(loss == loss for loss in result["loss"])  # trained, no NaN
        # one optimizer update per step fit ran, none at the epoch's end where no worker has data (TF's
        # per-step "has data" check ends it with OutOfRange); the steps of the shorter shard's padding count
        for kind, steps_per_epoch in (("unequal", 6), ("equal", 4)):
            fit = result["fits"][kind]
            assert fit["batches"] == [steps_per_epoch] * 2, (kind, fit)
            assert fit["iterations"] == 2 * steps_per_epoch, (kind, fit)
    for kind in ("unequal", "equal"):  # one model: every update all-reduced, the padding steps' too
        first, second = (r["fits"][kind] for r in results)
        assert first["initial"] == second["initial"] and first["weights"] == second["weights"], kind
        assert first["weights"] != first["initial"], kind  # and it trained
