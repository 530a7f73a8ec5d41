"""One Keras 3 model trained by N Ray workers with tfscale: `ts.ray.fit` runs `train_fn` on each worker.

    export RAY_AUTH_MODE=token && ray get-auth-token --generate     # once: Ray 2.60's token authentication
    ray start --head --num-cpus 2 --include-dashboard=false --disable-usage-stats
    python examples/ray/train.py --address auto --workers 2 --kill-once
    ray stop

Without `--address` (and no RAY_ADDRESS), Ray starts a cluster on this machine for the run and stops it
after. Inside `train_fn`, `ts.Scale.auto()` finds the cluster Ray made (TF_CONFIG), `ts.fit` trains with
checkpoints in `--checkpoint-dir` (a folder every node sees) at every epoch's end and every
`--checkpoint-every-steps` steps, and what `train_fn` returns comes back as `result.metrics` (rank 0's).
`--kill-once` makes worker 1 kill itself in the middle of epoch 2 once, to watch Ray restart the group
(`--max-failures 1`) and tfscale resume at the global batch after the last step checkpoint. `--workers 1-2`
is elastic (Ray Train's `num_workers=(1, 2)`): as many workers as the cluster holds, at least 1.
"""

from __future__ import annotations

import argparse
import os
import signal

import numpy as np

import tfscale as ts

KILL_EPOCH, KILL_BATCH = 1, 15  # 0-based: worker 1 dies before the 16th step of epoch 2


def train_fn(config):
    scale = ts.Scale.auto()  # multi_worker over Ray's workers; one process without Ray

    import keras

    rng = np.random.RandomState(0)
    x = rng.rand(2048, 8).astype("float32")
    y = (x[:, :4].sum(1) > x[:, 4:].sum(1)).astype("int32")

    def build_model():
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2)])

    class KillOnce(keras.callbacks.Callback):
        """Worker 1 dies once in the middle of its second epoch: a lost worker, for Ray to restart the group."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            marker = config.get("kill_marker")
            if marker and scale.rank == 1 and (self.epoch, batch) == (KILL_EPOCH, KILL_BATCH) \
                    and not os.path.exists(marker):
                open(marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)

    result = ts.fit(build_model, (x, y), scale=scale, epochs=config["epochs"], global_batch_size=64,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                    checkpoint_dir=config["checkpoint_dir"], checkpoint_every_steps=config["every_steps"], verbose=0,
                    callbacks=[KillOnce()])
    history = result.history.history
    return {"loss": round(float(history["loss"][-1]), 4), "accuracy": round(float(history["accuracy"][-1]), 4),
            "workers": scale.num_workers, "strategy": scale.name, "resumed_from_epoch": result.resumed_from_epoch,
            "resumed_from_step": result.resumed_from_step}


def workers(text: str) -> int | tuple[int, int]:
    """"2" -> 2; "1-2" -> (1, 2), an elastic range."""
    low, _, high = text.partition("-")
    return (int(low), int(high)) if high else int(low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=workers, default=2, help='N, or MIN-MAX (elastic), e.g. "1-2"')
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--checkpoint-every-steps", type=int, default=10, help="and at every epoch's end")
    parser.add_argument("--max-failures", type=int, default=1, help="worker-group restarts Ray may make")
    parser.add_argument("--address", default=None, help='the Ray cluster ("auto": the one `ray start` made)')
    parser.add_argument("--checkpoint-dir", default="ray_example/checkpoints", help="shared by every node")
    parser.add_argument("--storage", default="ray_example/ray_results", help="Ray's run folder (shared)")
    parser.add_argument("--kill-once", action="store_true", help="worker 1 dies once in the middle of epoch 2")
    args = parser.parse_args()

    checkpoint_dir = os.path.abspath(args.checkpoint_dir)  # Ray runs train_fn in its own working directory
    config = {"epochs": args.epochs, "checkpoint_dir": checkpoint_dir, "every_steps": args.checkpoint_every_steps,
              "kill_marker": os.path.join(checkpoint_dir, "killed-once") if args.kill_once else None}
    result = ts.ray.fit(train_fn, num_workers=args.workers, train_loop_config=config, cpus_per_worker=1,
                        max_failures=args.max_failures, storage_path=args.storage, address=args.address,
                        env={"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"})
    print("result:", result.metrics)


if __name__ == "__main__":
    main()
