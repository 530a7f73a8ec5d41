"""A small Keras model trained on every task of a Slurm job, resuming from its checkpoints when requeued.

    srun tfscale launch -- python train.py --checkpoint-dir /shared/ckpt/run1 [--epochs 3] [--out weights.npz]

`tfscale launch` under srun gives each task TF_CONFIG (the nodes of SLURM_STEP_NODELIST, one port per task),
so `Scale.auto()` builds the multi-worker strategy. The chief writes a checkpoint each epoch into
--checkpoint-dir, which every node must see (NFS, a parallel file system, gs://); a job that Slurm requeues
starts again from the last one. With --out every worker saves its final weights (OUT.<rank>.npz).
The data are synthetic (a fixed seed): every run, on any number of tasks, sees the same examples.
"""

import argparse

import numpy as np

import tfscale as ts

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--checkpoint-dir", required=True, help="shared folder for the chief's checkpoints")
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--steps", type=int, default=8, help="steps per epoch")
parser.add_argument("--global-batch-size", type=int, default=16)
parser.add_argument("--out", help="save each worker's final weights to OUT.<rank>.npz")
args = parser.parse_args()

scale = ts.Scale.auto()

import keras  # noqa: E402  (after Scale.auto(): the strategy is set up before Keras builds anything)

rng = np.random.RandomState(0)
x = rng.rand(args.steps * args.global_batch_size, 6).astype("float32")
y = (x.sum(1) > 3).astype("int32")


def build_model():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])


result = ts.fit(build_model, (x, y), scale=scale, epochs=args.epochs, global_batch_size=args.global_batch_size,
                optimizer="sgd", optimizer_args={"momentum": 0.9}, base_lr=0.05, warmup_steps=4,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), seed=3,
                checkpoint_dir=args.checkpoint_dir, verbose=2)
ran = len(result.history.epoch)
loss = result.history.history["loss"][-1] if ran else float("nan")
print(f"rank {scale.rank} of {scale.num_workers}: resumed after epoch {result.resumed_from_epoch}, "
      f"ran {ran} epoch(s), final loss {loss:.4f}", flush=True)
if args.out:
    np.savez(args.out.replace(".npz", f".{scale.rank}.npz"), resumed_from_epoch=result.resumed_from_epoch,
             **{f"w{i}": w for i, w in enumerate(result.model.get_weights())})
