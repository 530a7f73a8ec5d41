"""The preempted process of bench_checkpoint.py: `tfscale.fit` of its MLP until SIGTERM, with a checkpoint_dir.

Usage: python _checkpoint_worker.py CHECKPOINT_DIR [--batch 64]
Trains bench_checkpoint's model on its data under `Scale("default")`, in one long epoch, with no checkpoint by
steps or time: the only save is the one SIGTERM asks for. Prints "STEP <global step> <time.time()>" after every
step (flushed), which the benchmark reads to know that training runs and how long a step takes. On SIGTERM
tfscale saves at the end of the step and the process exits with 143 (the manifest records when it committed).
"""

import argparse
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint_dir")
parser.add_argument("--batch", type=int, default=64)
args = parser.parse_args()

sys.path.insert(0, str(Path(__file__).resolve().parent))

import keras  # noqa: E402

import tfscale as ts  # noqa: E402
from bench_checkpoint import _loss, build_model, examples  # noqa: E402


class StepLines(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        print(f"STEP {self.step} {time.time():.6f}", flush=True)


ts.fit(build_model, examples(), scale=ts.Scale("default"), epochs=1, steps_per_epoch=1_000_000,
       global_batch_size=args.batch, seed=0, loss=_loss(), checkpoint_dir=args.checkpoint_dir,
       checkpoint_every_steps=None, save_on_preemption=True, verbose=0, callbacks=[StepLines()])
raise SystemExit("trained 1,000,000 steps without a SIGTERM")
