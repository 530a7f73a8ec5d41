"""`tfscale.ray.fit` for real: a tiny `tfscale.fit` with checkpoints under `Scale.auto()` on Ray workers.

Usage:
    python ray_fit.py single OUT_DIR                 # the one-process reference run (no Ray)
    python ray_fit.py ray OUT_DIR CHECKPOINT_DIR STORAGE [KILL_MARKER]
    python ray_fit.py mistakes STORAGE                # user mistakes on a live cluster: prints the errors as JSON
    python ray_fit.py data OUT_DIR STORAGE            # Ray Data shards, read by tfscale as already sharded
With KILL_MARKER, worker rank 1 SIGKILLs itself in the middle of the second epoch the first time
(KILL_MARKER records that it did), so `max_failures=1` has to make Ray restart the worker group,
which resumes from tfscale's last checkpoint. Every worker writes OUT_DIR/rank-<rank>.npz (its weights,
the epoch it resumed after, and its Ray node's address); the driver prints Ray's result metrics as JSON.
"""

import json
import os
import signal
import sys

EPOCHS, STEPS, GLOBAL_BATCH = 3, 8, 16
KILL_EPOCH, KILL_BATCH = 1, 3  # 0-based: the fourth step of the second epoch


def train_fn(config):
    import numpy as np

    import tfscale as ts

    scale = ts.Scale.auto()

    import keras

    rng = np.random.RandomState(0)
    x = rng.rand(STEPS * GLOBAL_BATCH, 6).astype("float32")
    y = (x.sum(1) > 3).astype("int32")

    def build_model():
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])

    marker = config.get("kill_marker")

    class KillOnce(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            if marker and scale.rank == 1 and self.epoch == KILL_EPOCH and batch == KILL_BATCH \
                    and not os.path.exists(marker):
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)

    result = ts.fit(build_model, (x, y), scale=scale, epochs=EPOCHS, global_batch_size=GLOBAL_BATCH,
                    optimizer="sgd", optimizer_args={"momentum": 0.9}, base_lr=0.05, warmup_steps=4,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), seed=3,
                    checkpoint_dir=config["checkpoint_dir"], verbose=0, callbacks=[KillOnce()])
    node = ""
    if "ray" in sys.modules:
        import ray

        node = ray.util.get_node_ip_address()
    np.savez(os.path.join(config["out"], f"rank-{scale.rank}.npz"), resumed_from_epoch=result.resumed_from_epoch,
             epochs_run=len(result.history.epoch), num_workers=scale.num_workers, node=node,
             strategy=scale.name, tfscale_rank=os.environ.get("TFSCALE_RANK", ""),
             node_rank=os.environ.get("TFSCALE_NODE_RANK", ""), restart=os.environ.get("TFSCALE_RESTART", ""),
             **{f"w{i}": w for i, w in enumerate(result.model.get_weights())})
    return {"resumed_from_epoch": int(result.resumed_from_epoch), "num_workers": scale.num_workers,
            "strategy": scale.name, "node": node}


def ray_data_fn(config):
    """Each worker trains on the shard Ray Data dealt it, passed to tfscale as already sharded."""
    import numpy as np
    from ray import train

    import tfscale as ts

    scale = ts.Scale.auto()

    import keras

    rows = list(train.get_dataset_shard("train").iter_rows())
    x = np.array([row["x"] for row in rows], "float32")
    y = np.array([row["y"] for row in rows], "int32")
    data = scale.distribute((x, y), global_batch_size=GLOBAL_BATCH, sharded=True)
    with scale.scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = []
    count = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    model.fit(data, epochs=1, verbose=0, callbacks=[count])
    np.savez(os.path.join(config["out"], f"rank-{scale.rank}.npz"), ids=[int(row["id"]) for row in rows],
             steps=len(batches), iterations=int(model.optimizer.iterations.numpy()),
             **{f"w{i}": w for i, w in enumerate(model.get_weights())})


def ray_data(out, storage):
    import numpy as np
    import ray

    import tfscale as ts

    rng = np.random.RandomState(0)
    x = rng.rand(STEPS * GLOBAL_BATCH, 6).astype("float32")
    rows = [{"id": i, "x": x[i].tolist(), "y": int(x[i].sum() > 3)} for i in range(len(x))]
    ray.init(address=os.environ.get("TFSCALE_TEST_RAY_ADDRESS"))
    ts.ray.fit(ray_data_fn, num_workers=2, train_loop_config={"out": out}, storage_path=storage, name="ray_data",
               datasets={"train": ray.data.from_items(rows)}, collective_timeout=60,
               env={"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"})
    print("DATA done")


def raises_config_error(config):
    import tfscale as ts

    raise ts.ConfigError("the model's options are wrong", where="train_fn", fix="pass good options")


def raises_value_error():
    raise ValueError("x has 5 columns, the model takes 6")


def mistakes(storage):
    """Each mistake must come back to the driver as a tfscale error, at once (never a wait for resources)."""
    import tfscale as ts

    found = {}
    address = os.environ.get("TFSCALE_TEST_RAY_ADDRESS")
    for name, kwargs in {"too_many_workers": dict(train_fn=train_fn, num_workers=5),
                         "error_in_train_fn": dict(train_fn=raises_config_error, num_workers=1),
                         "other_error_in_train_fn": dict(train_fn=raises_value_error, num_workers=1)}.items():
        try:
            ts.ray.fit(storage_path=storage, name=name, address=address, **kwargs)
        except ts.TfscaleError as e:
            found[name] = [type(e).__name__, str(e)]
        else:
            found[name] = ["no error", ""]
    print("MISTAKES " + json.dumps(found))


def main(argv):
    mode, out = argv[0], argv[1]
    if mode == "mistakes":
        return mistakes(out)
    if mode == "data":
        return ray_data(out, argv[2])
    if mode == "data+mistakes":  # one driver for both (each driver's start costs seconds of CPU)
        ray_data(out, argv[2])
        return mistakes(argv[2])
    if mode == "single":
        print(json.dumps(train_fn({"out": out, "checkpoint_dir": os.path.join(out, "ckpt")})))
        return
    checkpoint_dir, storage = argv[2], argv[3]
    config = {"out": out, "checkpoint_dir": checkpoint_dir, "kill_marker": argv[4] if len(argv) > 4 else None}
    import tfscale as ts

    result = ts.ray.fit(train_fn, num_workers=2, train_loop_config=config, cpus_per_worker=1,
                        max_failures=1 if config["kill_marker"] else 0, storage_path=storage, name="ray_fit",
                        collective_timeout=60, address=os.environ.get("TFSCALE_TEST_RAY_ADDRESS"),
                        backend=os.environ.get("TFSCALE_TEST_RAY_BACKEND", "tensorflow"),
                        env={"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
                             "TF_CPP_MIN_LOG_LEVEL": "2"})
    print("RESULT " + json.dumps(result.metrics))


if __name__ == "__main__":
    main(sys.argv[1:])
