"""A worker whose `tfscale` command fails after its multi_worker Scale is built (tests/test_quarantine.py): it
leaves at once, not through the workers' exit barrier, though tfscale patches no `sys.exit` (the CLI marks the
failed command: `tf_engine.leave_at_once`).

argv: a folder for the chief's last file.
"""

import atexit
import os
import sys
import time

import tfscale as ts
from tfscale.cli import main

folder = sys.argv[1]
chief_done = os.path.join(folder, "chief_done")
me = {}


def after_the_exit_barrier():
    """Registered before the Scale, so it runs after the engine's exit barrier (atexit runs last-in first-out)."""
    if me.get("rank") == 1:
        print(f"rank 1 left after the chief: {os.path.exists(chief_done)}", flush=True)


atexit.register(after_the_exit_barrier)
scale = ts.Scale("multi_worker")
me["rank"] = rank = scale.rank
print(f"rank {rank}: sys.exit is Python's: {sys.exit.__module__ == 'sys'}", flush=True)
if scale.is_chief:
    time.sleep(60)  # worker 1 fails long before; only the exit barrier could hold it until this file exists
    with open(chief_done, "w") as f:
        f.write("done")
else:
    sys.exit(main(["train", os.path.join(folder, "missing.toml")]))  # a ConfigError: exit 2
