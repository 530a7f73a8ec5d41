"""One process of bench_launch.py: train a small conv net with Keras 3 `fit` under `Scale.auto()`, time it.

Usage: python _launch_worker.py --global-batch G [--warmup W] [--steps S] [--steps-per-execution K]
                                [--communication C] [--bytes-per-pack P] [--allreduce N]
Prints one line "BENCH {json}" (on the chief): examples/s over the S timed steps, after W warm-up steps.
--allreduce N: then times N all-reduces (after 5 untimed) of tensors shaped like the model's gradients, batched
as the optimizer's are, alone (no compute): "allreduce_ms", their median (bench_cluster.py).
"""

import argparse
import json
import time

parser = argparse.ArgumentParser()
parser.add_argument("--global-batch", type=int, required=True)
parser.add_argument("--warmup", type=int, default=8)
parser.add_argument("--steps", type=int, default=32)
parser.add_argument("--steps-per-execution", type=int, default=1)
parser.add_argument("--image", type=int, default=32)
parser.add_argument("--communication", default=None)
parser.add_argument("--bytes-per-pack", type=int, default=None)
parser.add_argument("--allreduce", type=int, default=0)
args = parser.parse_args()

import numpy as np  # noqa: E402

import tfscale as ts  # noqa: E402

options = {k: v for k, v in (("communication", args.communication), ("bytes_per_pack", args.bytes_per_pack))
           if v is not None}
scale = ts.Scale.auto(**options)

import keras  # noqa: E402
from _cluster_model import conv_net  # noqa: E402  (beside this script)
import tensorflow as tf  # noqa: E402

rng = np.random.RandomState(0)
x = rng.rand(512, args.image, args.image, 3).astype("float32")
y = rng.randint(0, 10, size=512).astype("int32")
data = scale.distribute(tf.data.Dataset.from_tensor_slices((x, y)).repeat(), global_batch_size=args.global_batch)

keras.utils.set_random_seed(0)
with scale.scope():
    model = conv_net(args.image)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=args.steps_per_execution)


class Clock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = {}

    def on_train_batch_end(self, batch, logs=None):
        self.times[batch + 1] = (time.perf_counter(), time.process_time())  # after `batch + 1` steps


clock = Clock()
k = args.steps_per_execution
warmup = -(-args.warmup // k) * k
steps = -(-args.steps // k) * k
model.fit(data, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[clock])
(end, end_cpu), (start, start_cpu) = clock.times[warmup + steps], clock.times[warmup]
seconds = end - start


def time_allreduce(n: int) -> float:
    """The median milliseconds of one all-reduce of gradient-shaped tensors (every worker calls it together)."""
    strategy = scale.strategy
    grads = [tf.zeros_like(v) for v in model.trainable_variables]

    @tf.function
    def step():
        def replica_fn():
            return tf.distribute.get_replica_context().all_reduce("sum", grads)
        return strategy.run(replica_fn)

    times = []
    for i in range(5 + n):
        begin = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t,
                              strategy.experimental_local_results(step()))
        if i >= 5:
            times.append(1000 * (time.perf_counter() - begin))
    return sorted(times)[len(times) // 2]


allreduce_ms = time_allreduce(args.allreduce) if args.allreduce else None
if scale.is_chief:
    gradient_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.trainable_variables)
    print("BENCH " + json.dumps({"examples_per_s": steps * args.global_batch / seconds,
                                 "step_ms": 1000 * seconds / steps, "cpu_ms_per_step": 1000 * (end_cpu - start_cpu) / steps,
                                 "num_replicas": scale.num_replicas,
                                 "strategy": scale.name, "global_batch": args.global_batch,
                                 "allreduce_ms": allreduce_ms, "gradient_bytes": gradient_bytes}), flush=True)
