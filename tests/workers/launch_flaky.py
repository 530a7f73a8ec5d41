"""A worker for the launcher's tests that fails once, or waits for a signal. No TensorFlow.

Usage:
  python launch_flaky.py fail-once DIR [PEER]   rank 1 exits 3 the first time (DIR/failed marks it); others
                                           succeed, with PEER first writing DIR/met-<rank> and waiting (90 s at
                                           most, else exit 4) for PEER/met-<rank>: another launch running too
  python launch_flaky.py fail DIR        rank 1 exits 3 at once; the others sleep until stopped
  python launch_flaky.py wait DIR        write DIR/ready-<rank>; on SIGTERM write DIR/sigterm-<rank> and exit 0
"""

import os
import signal
import sys
import time

mode, folder = sys.argv[1], sys.argv[2]
rank, restart = int(os.environ["TFSCALE_RANK"]), os.environ["TFSCALE_RESTART"]
print(f"rank={rank} restart={restart} world={os.environ['TFSCALE_WORLD_SIZE']}", flush=True)

if mode == "fail-once":
    marker = os.path.join(folder, "failed")
    if rank == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        print("failing on purpose", flush=True)
        sys.exit(3)
    if len(sys.argv) > 3:
        open(os.path.join(folder, f"met-{rank}"), "w").close()
        deadline = time.monotonic() + 90
        while not os.path.exists(os.path.join(sys.argv[3], f"met-{rank}")):
            if time.monotonic() > deadline:
                print(f"never met {sys.argv[3]}", flush=True)
                sys.exit(4)
            time.sleep(0.05)
elif mode == "fail":
    if rank == 1:
        print("failing on purpose", flush=True)
        sys.exit(3)
    time.sleep(600)
elif mode == "wait":
    def on_term(sig, frame):
        open(os.path.join(folder, f"sigterm-{rank}"), "w").close()
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    open(os.path.join(folder, f"ready-{rank}"), "w").close()
    time.sleep(600)
print(f"ok rank={rank}", flush=True)
