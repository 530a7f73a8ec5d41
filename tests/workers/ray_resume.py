"""`tfscale.ray.fit` resuming at the exact global batch: `tfscale.fit` with step checkpoints on Ray workers.

Usage:
    python ray_resume.py single OUT_DIR                                     # the one-process reference (no Ray)
    python ray_resume.py ray OUT_DIR CHECKPOINT_DIR STORAGE FAULT [NUM_WORKERS]
    python ray_resume.py wait STORAGE                                       # wait_for_resources=True
FAULT happens once, at the start of step KILL_BATCH of epoch KILL_EPOCH (0-based), once the step checkpoint
before it is committed (the faulty worker waits until it is listed), and writes OUT_DIR/fault.json:
    kill:  worker rank 1 SIGKILLs itself; `max_failures=1` makes Ray restart the worker group.
    node:  the worker that is not on the head node (TFSCALE_TEST_RAY_HEAD) waits there: the test removes its node
           (every process of it), as a spot VM vanishes; with NUM_WORKERS "1-2" (elastic) Ray restarts the group
           on the nodes left.
    drain: the worker that is not on the head node writes its Ray node id and trains on, every worker now 1 s a
           step: the test drains that node for preemption (`ray drain-node`), Ray Train's notice reaches every
           worker, tfscale saves at one agreed step and ends the group with 143; Ray restarts it on the node left.
NUM_WORKERS: "2" (default), or "MIN-MAX" for `num_workers=(MIN, MAX)`.
Every start of `train_fn` writes OUT_DIR/start-<restart>-<rank>.json (its place, Ray node, TFSCALE_* contract);
every worker of the last start writes OUT_DIR/rank-<rank>.npz: its weights, where it resumed, what reached it
through `env=`, and (rank 0) whether Ray's train controller process loaded TensorFlow. The driver prints
`RESULT {Ray's result metrics}` and `DRIVER {...}`. `wait` asks, with wait_for_resources=True, for one worker
more than the cluster holds, prints `WAITING {...}` once Ray waits for them (its placement group pending; the test
then adds a node), and `WAIT {...}` when the run ended.
"""

import json
import os
import signal
import sys
import time

EPOCHS, STEPS, GLOBAL_BATCH, EVERY = 3, 8, 16, 3  # 24 steps; step checkpoints at global steps 3, 6, 9, 12...
KILL_EPOCH, KILL_BATCH = 1, 6  # the fault comes after global step 14; the last step checkpoint is at 12
ENV_MARK = "TFSCALE_TEST_RAY_ENV"  # set through ts.ray.fit(env=...), read back on the workers


def _controller_loaded_tensorflow(token: str) -> bool | None:
    """Whether this run's Ray train controller process has TensorFlow's libraries mapped (None: not found).

    The controller is the process titled `ray::TrainController...` of this test's cluster (its auth token).
    """
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        try:
            if not (proc.info["cmdline"] or [""])[0].startswith("ray::TrainController"):
                continue
            if proc.environ().get("RAY_AUTH_TOKEN") != token:
                continue
            with open(f"/proc/{proc.pid}/maps") as f:
                return "tensorflow" in f.read()
        except (psutil.Error, OSError):
            continue
    return None


def _wait_listed(checkpoint_dir: str, name: str, deadline_s: float = 120) -> None:
    from tfscale.scale.checkpoint_store import CheckpointStore, checkpoint_name

    store, end = CheckpointStore(checkpoint_dir), time.monotonic() + deadline_s
    while name not in {checkpoint_name(*info.position) for info in store.list()}:
        if time.monotonic() > end:
            raise RuntimeError(f"{name} was not committed in {checkpoint_dir} within {deadline_s} s")
        time.sleep(0.1)


def train_fn(config):
    import numpy as np

    import tfscale as ts
    from tfscale import worker_env
    from tfscale.scale.checkpoint_store import checkpoint_name

    scale = ts.Scale.auto()

    import keras

    try:
        import tensorflow as tf
    except ImportError:  # the JAX test's workers run without TensorFlow (ray_jax.py)
        tf = None

    rng = np.random.RandomState(0)
    x = rng.rand(STEPS * GLOBAL_BATCH, 6).astype("float32")
    y = (x.sum(1) > 3).astype("int32")

    def build_model():
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])

    fault, out = config.get("fault", "none"), config["out"]
    node = ""
    if "ray" in sys.modules:
        import ray

        node = ray.util.get_node_ip_address()
    contract = {k: os.environ.get(getattr(worker_env, k.upper()), "") for k in ("rank", "world_size", "node_rank",
                                                                              "restart")}
    with open(os.path.join(out, f"start-{contract['restart'] or 0}-{scale.rank}.json"), "w") as f:
        json.dump({"rank": scale.rank, "num_workers": scale.num_workers, "node": node, "contract": contract}, f)

    class FaultOnce(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if fault == "drain" and os.path.exists(os.path.join(out, "fault.json")):
                time.sleep(1.0)  # time for Ray's notice (polled every 5 s) to arrive mid-epoch

        def on_train_batch_begin(self, batch, logs=None):
            marker = os.path.join(out, "fault.json")
            if fault == "none" or self.epoch != KILL_EPOCH or batch != KILL_BATCH or os.path.exists(marker):
                return
            if not (scale.rank == 1 if fault == "kill" else node != os.environ["TFSCALE_TEST_RAY_HEAD"]):
                return
            done = KILL_EPOCH * STEPS + KILL_BATCH  # global steps trained when the fault comes
            saved = done // EVERY * EVERY
            _wait_listed(config["checkpoint_dir"], checkpoint_name(saved // STEPS, saved % STEPS))
            node_id = __import__("ray").get_runtime_context().get_node_id() if fault == "drain" else ""
            with open(marker, "w") as f:
                json.dump({"pid": os.getpid(), "node": node, "global_step": done, "checkpoint_step": saved,
                           "node_id": node_id}, f)
            if fault == "drain":
                return
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            while True:  # the test removes this node
                time.sleep(1)

    result = ts.fit(build_model, (x, y), scale=scale, epochs=EPOCHS, global_batch_size=GLOBAL_BATCH,
                    optimizer="sgd", optimizer_args={"momentum": 0.9}, base_lr=0.05, warmup_steps=4,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), seed=3,
                    checkpoint_dir=config["checkpoint_dir"], checkpoint_every_steps=EVERY, keep_checkpoints=100,
                    verbose=0, callbacks=[FaultOnce()])
    controller_tf = _controller_loaded_tensorflow(os.environ.get("RAY_AUTH_TOKEN", "")) \
        if node and scale.rank == 0 else None
    info = {"resumed_from_epoch": int(result.resumed_from_epoch), "resumed_from_step": int(result.resumed_from_step),
            "num_workers": scale.num_workers, "strategy": scale.name, "node": node}
    np.savez(os.path.join(out, f"rank-{scale.rank}.npz"), **info, epochs_run=len(result.history.epoch),
             restart=contract["restart"], tfscale_rank=contract["rank"], world_size=contract["world_size"],
             env_mark=os.environ.get(ENV_MARK, ""), legacy_keras=os.environ.get("TF_USE_LEGACY_KERAS", ""),
             tf_keras_version="" if tf is None else str(tf.keras.__version__),
             controller_tf="not found" if controller_tf is None else str(controller_tf),
             **{f"w{i}": w for i, w in enumerate(result.model.get_weights())})
    return info


def run(out, checkpoint_dir, storage, fault, workers):
    import tfscale as ts

    num_workers = tuple(int(n) for n in workers.split("-")) if "-" in workers else int(workers)
    mark = f"from-the-driver-{os.getpid()}"
    result = ts.ray.fit(train_fn, num_workers=num_workers, cpus_per_worker=1, max_failures=1, storage_path=storage,
                        train_loop_config={"out": out, "checkpoint_dir": checkpoint_dir, "fault": fault},
                        name=f"ray_resume_{fault}", collective_timeout=60,
                        address=os.environ.get("TFSCALE_TEST_RAY_ADDRESS"),
                        env={"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
                             "TF_CPP_MIN_LOG_LEVEL": "2", ENV_MARK: mark,
                             "TFSCALE_TEST_RAY_HEAD": os.environ.get("TFSCALE_TEST_RAY_HEAD", "")})
    print("RESULT " + json.dumps(result.metrics), flush=True)
    print("DRIVER " + json.dumps({"tensorflow": "tensorflow" in sys.modules, "env_mark": mark}), flush=True)


def one_node():
    import ray

    return {"node": ray.util.get_node_ip_address()}


def wait_for_more_workers(storage):
    """`wait_for_resources=True` with one worker more than the cluster's CPUs hold: no ClusterError; Ray waits
    (`WAITING` is printed once its placement group is seen pending: the test then adds a node) and trains once the
    cluster holds them all."""
    import threading

    import ray

    import tfscale as ts

    ray.init(address=os.environ.get("TFSCALE_TEST_RAY_ADDRESS"))
    want = int(sum(node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"])) + 1
    found = {"want": want, "pending": None, "error": None, "metrics": None}

    def watch():
        while found["pending"] is None:
            for group in ray.util.placement_group_table().values():
                if len(group["bundles"]) == want and group["state"] == "PENDING":
                    found["pending"] = group["state"]
                    print("WAITING " + json.dumps(found), flush=True)
            time.sleep(0.2)

    threading.Thread(target=watch, daemon=True).start()
    try:
        found["metrics"] = ts.ray.fit(one_node, num_workers=want, wait_for_resources=True, storage_path=storage,
                                      name="wait").metrics
    except ts.TfscaleError as e:
        found["error"] = f"{type(e).__name__}: {e}"
    print("WAIT " + json.dumps(found), flush=True)


def main(argv):
    mode = argv[0]
    if mode == "single":
        out = argv[1]
        print(json.dumps(train_fn({"out": out, "checkpoint_dir": os.path.join(out, "ckpt")})))
    elif mode == "ray":
        run(*argv[1:5], argv[5] if len(argv) > 5 else "2")
    elif mode == "wait":
        wait_for_more_workers(argv[1])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
