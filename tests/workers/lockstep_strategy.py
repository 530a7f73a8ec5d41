"""A strategy a user registers under a name of their own, declaring multi_worker's capabilities
(tests/test_registry.py): under `tfscale launch -n 2` its workers share keys (Engine.exchange), run the
shared-checkpoint check (every worker must see the chief's checkpoint_dir) and meet at exit, as
multi_worker's do.

argv: a folder for the checkpoint folders and the chief's last file.
"""

import atexit
import os
import sys
import time

import tfscale as ts
from tfscale.errors import ClusterError
from tfscale.scale.checkpoint import Checkpoints
from tfscale.strategy import multi_worker
from tfscale.strategy.registry import Capability, register

folder = sys.argv[1]
chief_done = os.path.join(folder, "chief_done")
me = {}


def after_the_exit_barrier():
    """Registered before the Scale, so it runs after the engine's exit barrier (atexit runs last-in first-out):
    worker 1 then sees the file the chief wrote just before it left."""
    if me.get("rank") == 1:
        print(f"rank 1 left after the chief: {os.path.exists(chief_done)}", flush=True)


atexit.register(after_the_exit_barrier)
register("my_lockstep", "multi_worker under another name",
         capabilities={Capability.LOCKSTEP, Capability.CLUSTER_RUNTIME})(multi_worker.build)
scale = ts.Scale("my_lockstep")
me["rank"] = rank = scale.rank
print(f"rank {rank}: {scale.name} exchange {scale.engine.exchange('hello', f'r{rank}')}", flush=True)


def check(checkpoint_dir: str) -> str:
    """The check `scale.callbacks(checkpoint_dir=...)` runs before restoring, as `fit` runs it."""
    callbacks = scale.callbacks(checkpoint_dir=checkpoint_dir, throughput=False, save_on_preemption=False)
    checkpoints = next(c for c in callbacks if isinstance(c, Checkpoints))
    try:
        checkpoints.check_shared()
    except ClusterError as e:
        return f"refused: {e.what}"
    return "shared"


print(f"rank {rank}: one folder {check(os.path.join(folder, 'ckpt'))}", flush=True)
print(f"rank {rank}: own folders {check(os.path.join(folder, f'ckpt{rank}'))}", flush=True)
if scale.is_chief:
    time.sleep(2)  # worker 1 reaches its exit long before this: only the exit barrier holds it until the chief's
    with open(chief_done, "w") as f:
        f.write("done")
