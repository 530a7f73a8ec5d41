"""One JAX process of bench_cluster.py's JAX arms: the model of _launch_worker.py, Keras 3 `fit` under
`Scale.auto()` on the JAX engine (`tfscale launch --backend jax`), NumPy input (no TensorFlow), timed.

Usage: python _jax_cluster_worker.py --global-batch G [--warmup W] [--steps S]
Prints one line "BENCH {json}" (on the chief): examples/s over the S timed steps, after W warm-up steps.
"""

import argparse
import json
import time

parser = argparse.ArgumentParser()
parser.add_argument("--global-batch", type=int, required=True)
parser.add_argument("--warmup", type=int, default=8)
parser.add_argument("--steps", type=int, default=32)
parser.add_argument("--image", type=int, default=32)
args = parser.parse_args()

import numpy as np  # noqa: E402

import tfscale as ts  # noqa: E402

scale = ts.Scale.auto()

import keras  # noqa: E402
from _cluster_model import conv_net  # noqa: E402  (beside this script)

total = args.warmup + args.steps
rng = np.random.RandomState(0)
x = rng.rand(total * args.global_batch, args.image, args.image, 3).astype("float32")
y = rng.randint(0, 10, size=len(x)).astype("int32")
data = scale.distribute((x, y), global_batch_size=args.global_batch)

keras.utils.set_random_seed(0)
with scale.scope():
    model = conv_net(args.image)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))


class Clock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = {}

    def on_train_batch_end(self, batch, logs=None):
        self.times[batch + 1] = (time.perf_counter(), time.process_time())  # after `batch + 1` steps


clock = Clock()
model.fit(data, epochs=1, verbose=0, callbacks=[clock])
(end, end_cpu), (start, start_cpu) = clock.times[total], clock.times[args.warmup]
seconds = end - start
if scale.is_chief:
    gradient_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.trainable_variables)
    print("BENCH " + json.dumps({"examples_per_s": args.steps * args.global_batch / seconds,
                                 "step_ms": 1000 * seconds / args.steps,
                                 "cpu_ms_per_step": 1000 * (end_cpu - start_cpu) / args.steps,
                                 "num_replicas": scale.num_replicas, "strategy": scale.name,
                                 "global_batch": args.global_batch, "allreduce_ms": None,
                                 "gradient_bytes": gradient_bytes}), flush=True)
