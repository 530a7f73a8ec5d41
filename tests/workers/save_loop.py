"""Commits checkpoints in a loop until killed: for the kill-during-save test (test_checkpoints_store.py).

Usage: python save_loop.py DIR_OR_URL START  — commits checkpoint epoch-START, START+1, ... (a 4 MiB weights file
each, different bytes) through `CheckpointStore.commit`, keeping 2, and prints "committed N" after each commit.
No TensorFlow: only the storage path a real save takes after Keras has written the weights file.
"""

import os
import sys
import tempfile

from tfscale.scale.checkpoint_store import CheckpointInfo, CheckpointStore, checkpoint_name

store = CheckpointStore(sys.argv[1])
store.check()  # creates a local folder
epoch = int(sys.argv[2])
scratch = tempfile.mkdtemp()
while True:
    name = checkpoint_name(epoch)
    local = os.path.join(scratch, f"{name}.weights.h5") if not store.store.is_local else \
        store.store.join(f".tmp-{os.getpid()}-{name}.weights.h5")
    with open(local, "wb") as f:
        f.write(epoch.to_bytes(4, "big") * (1 << 20))
    info = CheckpointInfo(name=name, epoch=epoch, step=0, global_step=epoch * 10, steps_per_epoch=10,
                          global_batch_size=8, num_workers=1, num_replicas=1, backend="none", strategy="none",
                          mesh=None, reason="epoch", created=0.0, files={})
    store.commit(local, info)
    store.prune(2)
    print(f"committed {epoch}", flush=True)
    epoch += 1
