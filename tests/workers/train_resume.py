"""The fault-tolerance worker: `tfscale.fit` with checkpoints under `Scale.auto()`, optionally killed once.

Usage: python train_resume.py OUT.npz CHECKPOINT_DIR TENSORBOARD_DIR(or -) [KILL_MARKER [KILLS]]
With KILL_MARKER, worker rank 1 kills itself (SIGKILL) in the middle of the second
epoch the first time it runs (the file KILL_MARKER records that it did), so
`tfscale launch --max-restarts 1` has to restart the job, which resumes from the
chief's last checkpoint. KILLS=2: then the restarted chief dies while it writes its next checkpoint
(half of the file written, KILL_MARKER.2 holds its path), so `--max-restarts 2` restarts the job again
and it resumes from the last whole checkpoint. Every worker writes OUT.<rank>.npz (OUT.npz for one process). It runs on
the engine of KERAS_BACKEND (`tfscale launch --backend jax` for JAX workers).
"""

import os
import signal
import sys

import numpy as np

out, checkpoint_dir, tensorboard_dir = sys.argv[1], sys.argv[2], (None if sys.argv[3] == "-" else sys.argv[3])
marker = sys.argv[4] if len(sys.argv) > 4 else None
kills = int(sys.argv[5]) if len(sys.argv) > 5 else 1

import tfscale as ts  # noqa: E402

scale = ts.Scale.auto()

import keras  # noqa: E402

# JAX: programs this start took from the persistent compilation cache (`tfscale launch --max-restarts` gives
# restarted JAX workers the programs their last start compiled). The event name is JAX-internal (not a public
# API; checked on jax 0.10): renamed upstream, nothing is counted and test_jax_engine.py's `cache_hits >= 3`
# fails, naming the count.
cache_hits = []
if keras.backend.backend() == "jax":
    import jax

    jax.monitoring.register_event_listener(
        lambda event, **_: cache_hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)

EPOCHS, STEPS, GLOBAL_BATCH = 3, 8, 16
KILL_EPOCH, KILL_BATCH = 1, 3  # 0-based: the fourth step of the second epoch

rng = np.random.RandomState(0)
x = rng.rand(STEPS * GLOBAL_BATCH, 6).astype("float32")
y = (x.sum(1) > 3).astype("int32")


def build_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])


class KillOnce(keras.callbacks.Callback):
    """Worker 1 dies mid-epoch, once: the preemption the job must survive (KILLS=2: `save_weights_then_die` too)."""

    def on_train_batch_begin(self, batch, logs=None):
        if not marker or batch != KILL_BATCH:
            return
        if scale.rank == 1 and self._epoch == KILL_EPOCH and not os.path.exists(marker):
            self._die(marker)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    @staticmethod
    def _die(record, content=""):
        with open(record, "w") as f:
            f.write(content)
        os.kill(os.getpid(), signal.SIGKILL)


_save_weights = keras.Model.save_weights


def save_weights_then_die(model, filepath, *args, **kwargs):
    """The second preemption: the chief is killed with half of a checkpoint file on disk (the rename not done)."""
    _save_weights(model, filepath, *args, **kwargs)
    if kills > 1 and scale.rank == 0 and marker and os.path.exists(marker) and not os.path.exists(marker + ".2"):
        size = os.path.getsize(filepath)
        with open(filepath, "r+b") as f:
            f.truncate(size // 2)
        KillOnce._die(marker + ".2", str(filepath))


keras.Model.save_weights = save_weights_then_die

# tfscale writes the file in a background thread from values captured at the step (keras_saving.capture): the same
# death there, half of the file written, before its commit
from tfscale.scale import keras_saving  # noqa: E402

_capture = keras_saving.capture


def capture_then_die(model):
    write = _capture(model)
    if write is None:
        return None

    def write_then_die(path):
        write(path)
        if kills > 1 and scale.rank == 0 and marker and os.path.exists(marker) and not os.path.exists(marker + ".2"):
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            KillOnce._die(marker + ".2", str(path))

    return write_then_die


keras_saving.capture = capture_then_die


result = ts.fit(build_model, (x, y), scale=scale, epochs=EPOCHS, global_batch_size=GLOBAL_BATCH, optimizer="sgd",
                optimizer_args={"momentum": 0.9}, base_lr=0.05, warmup_steps=4,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), seed=3,
                checkpoint_dir=checkpoint_dir, tensorboard_dir=tensorboard_dir, verbose=2, callbacks=[KillOnce()])
path = out if scale.num_workers == 1 else out.replace(".npz", f".{scale.rank}.npz")
np.savez(path, resumed_from_epoch=result.resumed_from_epoch, epochs_run=len(result.history.epoch),
         cache_hits=len(cache_hits), cache_dir=os.environ.get("JAX_COMPILATION_CACHE_DIR", ""),
         **{f"w{i}": w for i, w in enumerate(result.model.get_weights())})
print(f"rank {scale.rank}: resumed after epoch {result.resumed_from_epoch}, ran {len(result.history.epoch)} epoch(s)")
