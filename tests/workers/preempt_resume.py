"""The preemption worker: `tfscale.fit` with step checkpoints under `Scale.auto()`, preempted once by a real signal.

Usage: python preempt_resume.py OUT.npz CHECKPOINT_DIR [SIGNAL_AT]
Trains an MLP on fixed arrays (EPOCHS x STEPS steps of GLOBAL_BATCH). With SIGNAL_AT (a global step), rank 0
sends SIGTERM at the end of that step: to its parent when it runs under `tfscale launch` (which forwards it to
every worker, as Kubernetes or a spot VM signals a whole job), else to itself. tfscale then saves on every worker
at an agreed step and the process exits with 143. Run again without SIGNAL_AT, it resumes at that exact step.
REPLICAS=N in the environment: N CPU replicas per worker. EVERY_STEPS=N: also a checkpoint every N steps.
STRATEGY=name: that strategy instead of auto (model_parallel: mesh (1, 2), layout "auto"); WIDTH=N: hidden units.
STEP_SLEEP=S: each step ends with rank 0 printing `step N` (N: steps trained by this run) and every worker
sleeping S seconds, so that a test can signal it mid-epoch (tests/test_slurm.py).
DATA=FOLDER: read the examples from a `tfscale data convert` folder of the same arrays (columns f0..f11, label)
as an elastic tfscale.data pipeline, shuffled each epoch, instead of the arrays.
Writes OUT (rank 0; OUT.<rank>.npz for the others) with the weights and where it resumed.
"""

import json
import os
import signal
import sys
import time

import numpy as np

out, checkpoint_dir = sys.argv[1], sys.argv[2]
signal_at = int(sys.argv[3]) if len(sys.argv) > 3 else None

import tfscale as ts  # noqa: E402

replicas = int(os.environ["REPLICAS"]) if os.environ.get("REPLICAS") else None
strategy = os.environ.get("STRATEGY", "auto")  # "model_parallel": mesh (1, 2), the model axis across 2 processes
scale = (ts.Scale("model_parallel", mesh=(1, 2), layout="auto") if strategy == "model_parallel"
         else ts.Scale(strategy, replicas=replicas))
WIDTH = int(os.environ.get("WIDTH", "16"))  # hidden units; WIDTH=512 adds a 512x512 layer, which layout="auto" shards

import keras  # noqa: E402

EPOCHS, STEPS, GLOBAL_BATCH = 3, 10, 24
rng = np.random.RandomState(0)
x = rng.rand(STEPS * GLOBAL_BATCH, 12).astype("float32")
y = (x[:, :6].sum(1) > x[:, 6:].sum(1)).astype("int32")


def build_model():
    wide = [keras.layers.Dense(WIDTH, activation="relu")] if WIDTH > 16 else []
    return keras.Sequential([keras.Input((12,)), keras.layers.Dense(WIDTH, activation="relu"), *wide,
                             keras.layers.Dense(2)])


class SignalAt(keras.callbacks.Callback):
    """Rank 0 sends SIGTERM at the end of global step `signal_at` (its launcher forwards it to every worker)."""

    def __init__(self):
        super().__init__()
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if signal_at is not None and self.step == signal_at and scale.rank == 0:
            launched = os.environ.get("TFSCALE_WORLD_SIZE") is not None
            with open(out + ".signal.json", "w") as f:
                json.dump({"step": signal_at, "to": "launcher" if launched else "self"}, f)
            os.kill(os.getppid() if launched else os.getpid(), signal.SIGTERM)


class Paced(keras.callbacks.Callback):
    """STEP_SLEEP=S: rank 0 prints `step N` at the end of each step, then every worker sleeps S seconds."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.step = seconds, 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if scale.rank == 0:
            print(f"step {self.step}", flush=True)
        time.sleep(self.seconds)


train_data = (x, y)
if os.environ.get("DATA"):  # the same examples from converted shards, in an elastic order shuffled per epoch
    import tensorflow as tf

    train_data = ts.data.tfrecord(os.environ["DATA"], label="label").map(
        lambda f, label: (tf.stack([tf.cast(f[f"f{i}"], tf.float32) for i in range(12)]), tf.cast(label, tf.int32))
    ).shuffle(64, seed=7).elastic()
every = int(os.environ["EVERY_STEPS"]) if os.environ.get("EVERY_STEPS") else None
paced = [Paced(float(os.environ["STEP_SLEEP"]))] if os.environ.get("STEP_SLEEP") else []
result = ts.fit(build_model, train_data, scale=scale, epochs=EPOCHS, global_batch_size=GLOBAL_BATCH, optimizer="sgd",
                optimizer_args={"momentum": 0.9}, base_lr=0.05, warmup_steps=4, seed=3,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), checkpoint_dir=checkpoint_dir,
                checkpoint_every_steps=every, verbose=0, callbacks=[SignalAt(), *paced])
path = out if scale.rank == 0 else out.replace(".npz", f".{scale.rank}.npz")
with scale.engine.host_weights(result.model):  # weights sharded across processes are gathered to read them
    weights = result.model.get_weights()
np.savez(path, resumed=(result.resumed_from_epoch, result.resumed_from_step), replicas=scale.num_replicas,
         workers=scale.num_workers, epochs=len(result.history.epoch), **{f"w{i}": w for i, w in enumerate(weights)})
print(f"rank {scale.rank}: {scale.num_replicas} replica(s), resumed at {result.resumed_from_epoch}:"
      f"{result.resumed_from_step}", flush=True)
