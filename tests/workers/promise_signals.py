"""A launcher test's worker that saves something when signalled, as a preempted trainer does. No TensorFlow.

Usage: python promise_signals.py DIR SECONDS
Writes DIR/ready-<rank> (its pid), then sleeps. On SIGINT or SIGTERM it works for SECONDS (a checkpoint being
written), then writes DIR/<SIGNAL>-<rank> and exits 0.
"""

import os
import signal
import sys
import time

folder, seconds = sys.argv[1], float(sys.argv[2])
rank = os.environ["TFSCALE_RANK"]


def on_signal(sig, frame):
    time.sleep(seconds)
    open(os.path.join(folder, f"{signal.Signals(sig).name}-{rank}"), "w").close()
    sys.exit(0)


signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGTERM, on_signal)
with open(os.path.join(folder, f"ready-{rank}.tmp"), "w") as f:
    f.write(str(os.getpid()))
os.replace(os.path.join(folder, f"ready-{rank}.tmp"), os.path.join(folder, f"ready-{rank}"))
time.sleep(600)
