"""Sharded checkpoints (tfscale/scale/sharded.py): save across processes without gathering, restore elsewhere.

Usage: python jax_sharded_ckpt.py MODE OUT.npz CHECKPOINT_DIR
MODE:
  train   (under `tfscale launch -n 2 --backend jax`) model_parallel over a (1, 2) mesh, the model axis across
          the 2 processes: FIRST steps, save_sharded to CHECKPOINT_DIR (measuring the bytes this process holds
          during the save, and during the gathering save it replaces), then AFTER more steps. Each process
          writes OUT.<rank>.npz.
  resume  (1 process, 2 host devices) data_parallel: restore_sharded, then AFTER steps: its losses.
  export  (1 process, 1 device, no Scale) the model built a second time (Keras names it anew), restored,
          saved as .keras and loaded again; and the user mistakes, as tfscale errors.
Every run sees the same batches, in the same order, and starts from weights drawn by NumPy.
"""

import json
import os
import sys
import threading
import tracemalloc

import numpy as np

mode, out, ckpt = sys.argv[1], sys.argv[2], sys.argv[3]

import tfscale as ts  # noqa: E402

if mode == "train":
    scale = ts.Scale("model_parallel", mesh=(1, 2), layout="auto")  # shards the 64x1024 and 1024x1024 kernels
elif mode == "resume":
    scale = ts.Scale("data_parallel", replicas=2)
else:
    scale = None

import jax  # noqa: E402
import keras  # noqa: E402
import orbax.checkpoint  # noqa: E402,F401 - imported before the measurements, which count Python's allocations

from tfscale.errors import ConfigError  # noqa: E402
from tfscale.scale.sharded import is_sharded, restore_sharded, save_sharded  # noqa: E402

FIRST, AFTER, BATCH = 3, 4, 32
rng = np.random.RandomState(0)
x = rng.rand((FIRST + AFTER) * BATCH, 64).astype("float32")
y = (x[:, :10].argmax(1) + (x[:, 10] > 0.5)) % 10


def build(hidden=1024, optimizer=True):
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(hidden, activation="relu"),
                              keras.layers.Dense(hidden, activation="relu"), keras.layers.Dense(10)])
    init = np.random.RandomState(1)
    model.set_weights([init.normal(0, 0.1, tuple(w.shape)).astype("float32") for w in model.weights])
    if optimizer:
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def train(model, steps):
    return [float(model.train_on_batch(x[s * BATCH:(s + 1) * BATCH], y[s * BATCH:(s + 1) * BATCH]))
            for s in steps]


def resident_bytes() -> int:
    """Bytes of the distinct buffers of the JAX arrays alive in this process, on this process's devices.

    A shard's `data` is a view of the array's buffer that `jax.live_arrays()` lists as an array of its own:
    buffers are counted once, by address."""
    buffers = {}
    for a in jax.live_arrays():
        try:
            for shard in a.addressable_shards:
                buffers[(str(shard.device), shard.data.unsafe_buffer_pointer())] = shard.data.nbytes
        except Exception:  # deleted while being read (the save runs in another thread)
            pass
    return sum(buffers.values())


def peak_during(save) -> dict:
    """The most bytes this process holds while `save` runs: JAX arrays on its devices (sampled every ms,
    and right before and after) plus what Python and NumPy allocate (tracemalloc's peak)."""
    samples, done = [resident_bytes()], threading.Event()

    def sample():
        while not done.wait(0.001):
            samples.append(resident_bytes())

    sampler = threading.Thread(target=sample)
    tracemalloc.start()
    host_start = tracemalloc.get_traced_memory()[0]
    sampler.start()
    try:
        result = save()
    finally:
        done.set()
        sampler.join()
        host_peak = tracemalloc.get_traced_memory()[1] - host_start
        tracemalloc.stop()
    samples.append(resident_bytes())
    return {"device": max(samples), "host": host_peak, "samples": len(samples), "result": result}


def full_bytes(model) -> int:
    variables = list(model.weights) + list(model.optimizer.variables)
    return sum(int(np.prod(v.shape, dtype=np.int64)) * np.dtype(v.dtype).itemsize for v in variables)


def gathered(model):
    with scale.engine.host_weights(model):
        return model.get_weights(), [np.asarray(v.value) for v in model.optimizer.variables]


def error_of(call) -> str:
    try:
        call()
    except ConfigError as e:
        return f"ConfigError: {e}"
    except Exception as e:  # noqa: BLE001 - reported, and the test fails on it
        return f"{type(e).__name__}: {e}"
    return "no error"


if mode == "train":
    with scale.scope():
        model = build()
    losses = train(model, range(FIRST))
    placement = scale.describe(model)["engine"]
    sharded = is_sharded(model)
    new = peak_during(lambda: save_sharded(model, ckpt))
    old_dir = f"{ckpt}.gathered.{scale.rank}"  # what host_weights + save_weights holds, for comparison
    os.makedirs(old_dir, exist_ok=True)

    def old_save():
        with scale.engine.host_weights(model):
            model.save_weights(os.path.join(old_dir, "model.weights.h5"))

    old = peak_during(old_save)
    weights, slots = gathered(model)  # after the measurements: the checkpoint's values, to compare
    losses += train(model, range(FIRST, FIRST + AFTER))
    np.savez(out.replace(".npz", f".{scale.rank}.npz"), losses=np.array(losses), sharded=sharded,
             full=full_bytes(model), peak_device=new["device"], peak_host=new["host"], samples=new["samples"],
             gather_device=old["device"], gather_host=old["host"], files=json.dumps(new["result"]),
             shardings=json.dumps({v["path"]: v["sharding"] for v in placement["variables"]}),
             **{f"w{i}": w for i, w in enumerate(weights)}, **{f"o{i}": o for i, o in enumerate(slots)})
elif mode == "resume":
    with scale.scope():
        model = build()
    restore_sharded(model, ckpt)
    restored = model.get_weights()
    slots = [np.asarray(v.value) for v in model.optimizer.variables]
    iterations = int(model.optimizer.iterations.numpy())
    losses = train(model, range(FIRST, FIRST + AFTER))
    np.savez(out, losses=np.array(losses), sharded=is_sharded(model), iterations=iterations,
             **{f"w{i}": w for i, w in enumerate(restored)}, **{f"o{i}": o for i, o in enumerate(slots)})
else:
    build(optimizer=False)  # names taken: the model restored below is sequential_1/dense_3/...
    model = build(optimizer=False)
    restore_sharded(model, ckpt)
    path = os.path.join(os.path.dirname(out), "exported.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    probe = x[:16]
    errors = {"mismatch": error_of(lambda: restore_sharded(build(hidden=512), ckpt)),
              "not_a_checkpoint": error_of(lambda: restore_sharded(model, os.path.dirname(out))),
              "missing": error_of(lambda: restore_sharded(model, os.path.join(ckpt, "nothing-here"))),
              "exists": error_of(lambda: save_sharded(model, ckpt))}
    np.savez(out, restored=model.predict(probe, verbose=0), loaded=loaded.predict(probe, verbose=0),
             paths=np.array([v.path for v in model.weights]), errors=json.dumps(errors),
             **{f"w{i}": w for i, w in enumerate(model.get_weights())})
print(f"{mode}: done")
