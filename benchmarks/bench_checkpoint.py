"""Benchmark: what tfscale's checkpoints cost on a 2-core CPU, against no checkpoint and against Keras' own callbacks.

One model throughout: an MLP 784-512-512-10 (~0.67M parameters, Adam: an ~8 MB .weights.h5 with the optimizer's
state) on random Fashion-MNIST-shaped arrays, global batch 64, TensorFlow under `Scale("default")`. Each round
runs three parts, one after the other; within a part the arms alternate (the order flips every round):

1. Training: `tfscale.fit` for --warmup + --steps + --every steps in one epoch, with a checkpoint every --every
   steps ("checkpoint_every_N") or with no checkpoint_dir at all ("none"). examples/s is timed by a callback
   from the end of step --warmup (the step compiled) to the end of step --warmup + --steps, so the timed steps
   hold steps / every saves (the last at the last timed step) and their background commits: the cost of
   checkpointing while training goes on, the target's figure. The epoch's end save, which `fit` commits
   before it returns (once per `fit` however long it trains: ~15-30 ms here, a large part of a 300-step
   window but not of a real run), is outside it; "_end_to_end" times to the end of `fit`, with it and the wait
   for it, and is reported beside. Examples per CPU second of the process (every thread) over the timed span
   say what the saves cost in work, which other processes on a shared machine change much less than the
   examples/s.
2. One save, the same trained model, three ways (the median of --saves-per-round saves per round, after one
   untimed save each): tfscale's `Checkpoints.save(...)` then `.wait()` (weights, CRC-32, fsync, rename,
   manifest, prune: a committed checkpoint), and as "tfscale_blocking" the part of that same call the training
   thread waits for (without the background commit); `keras.callbacks.ModelCheckpoint(save_weights_only=True)`
   and `keras.callbacks.BackupAndRestore`, each attached with `set_model` and saving through its public
   `on_epoch_end` (what `fit` calls at an epoch's end: `model.save_weights` and, for BackupAndRestore, its JSON).
   The report says whether tfscale's file and ModelCheckpoint's hold the same groups, attributes and values
   (`tfscale_file_same_content_as_modelcheckpoint`): the times compare the same work.
   On JAX (a child process with KERAS_BACKEND=jax, the same model, the same rounds): tfscale's save against
   Keras' `OrbaxCheckpoint` (orbax-checkpoint; weights, optimizer state and the model's config, written in the
   background as its default is), each timed from its call to the checkpoint finished (`wait()`,
   `wait_until_finished()`), and the part the training thread waits for ("_blocking").
3. Preemption: benchmarks/_checkpoint_worker.py trains the same model with a checkpoint_dir (no checkpoint by
   steps) and prints a line per step; after --sigterm-after steps it gets SIGTERM, and the time until the
   process has exited is measured. It must exit with 143 with a "preemption" checkpoint, else the benchmark
   fails. Target: one step + 5 s.

4. With --exchange, once after the rounds: the cost of the preemption flags' exchange between workers.
   `tfscale.launch` starts 2 workers on 127.0.0.1 (multi_worker, 1 thread each); each runs `tfscale.fit` of the
   same model with a checkpoint_dir (no checkpoint by steps) --rounds times per arm, the arms rotated every
   round: save_on_preemption off (no exchange), on (tfscale's default: the flags exchanged every
   `preemption.EXCHANGE_EVERY_STEPS` steps) and "on_every_step" (`EXCHANGE_EVERY_STEPS = 1`, as before).
   steps/s are the chief's, over the --steps steps after --warmup (not the epoch end's save, which every arm
   makes), with the exchanges per step, the milliseconds each took, the milliseconds per step the training
   thread waited for them, and the chief's CPU milliseconds per step.

Ratios: checkpoint_every_N / none examples/s (target >= 0.97); Keras' save seconds / tfscale's (>= 1.0: tfscale
is as fast or faster), ModelCheckpoint and BackupAndRestore on TensorFlow, OrbaxCheckpoint on JAX; with
--exchange, steps/s with save_on_preemption on / off on 2 workers (>= 0.98), and exchanges at every step / off. `training_ms_lost_per_save`: the timed span's extra milliseconds over its saves (what
one save cost the training). Usage: python benchmarks/bench_checkpoint.py [--rounds 5] [--steps 300] [--every 50]
[--dir DIR] [--exchange] [--quick]. Prints the JSON to stdout and a summary to stderr; on a shared machine
compare ``load_average_before_after`` between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from bench_launch import _env  # noqa: E402

WORKER = str(Path(__file__).resolve().parent / "_checkpoint_worker.py")
EXAMPLES = 64 * 64  # repeated as long as each run needs
START_TIMEOUT_S, EXIT_TIMEOUT_S = 300, 120
SIGTERM_MARGIN_S = 5.0
EXCHANGE_TIMEOUT_S = 900
EXCHANGE_ARMS = ("on", "off", "on_every_step")
EXCHANGE_TARGET = 0.98  # the exchange may cost 2 % of the steps/s


def build_model():
    import keras

    return keras.Sequential([keras.Input((784,)), keras.layers.Dense(512, activation="relu"),
                             keras.layers.Dense(512, activation="relu"), keras.layers.Dense(10)])


def examples():
    """A repeated tf.data.Dataset of random (784 floats, label) pairs, the shape of flattened Fashion-MNIST."""
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = rng.rand(EXAMPLES, 784).astype("float32")
    y = rng.randint(0, 10, size=EXAMPLES).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).repeat()


def _loss():
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# ---------------------------------------------------------------------- 1. training with and without checkpoints

def training_arm(scale, data, args, checkpoint_dir: str | None) -> tuple[float, float, float]:
    """(examples/s, examples per CPU second of this process) of `tfscale.fit` over the --steps steps after
    --warmup, checkpointing into `checkpoint_dir`, and the examples/s from there to the end of `fit`.

    The epoch runs --every steps past the timed ones, so the timed steps hold steps / every step saves (the
    last at the last timed step) and their background commits, and the epoch end's save, which `fit` commits
    before it returns (once per `fit`, however long it trains), falls outside them; the end-to-end figure
    counts it and the wait for it too."""
    import keras

    import tfscale as ts

    class Clock(keras.callbacks.Callback):  # runs after tfscale's own callbacks (their saves, the last wait)
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == args.warmup:
                self.start = (time.perf_counter(), time.process_time())
            elif batch + 1 == args.warmup + args.steps:
                self.steady = (time.perf_counter(), time.process_time())

        def on_train_end(self, logs=None):
            self.end = time.perf_counter()

    clock = Clock()
    ts.fit(build_model, data, scale=scale, epochs=1, steps_per_epoch=args.warmup + args.steps + args.every,
           global_batch_size=args.batch, seed=0, loss=_loss(), checkpoint_dir=checkpoint_dir,
           checkpoint_every_steps=args.every if checkpoint_dir else None, verbose=0, callbacks=[clock])
    examples = args.steps * args.batch
    return (examples / (clock.steady[0] - clock.start[0]), examples / (clock.steady[1] - clock.start[1]),
            (examples + args.every * args.batch) / (clock.end - clock.start[0]))


# ---------------------------------------------------------------------- 2. one save: tfscale against Keras

class Savers:
    """One trained model and the three ways to save it, each attached to it as `fit` would attach it."""

    def __init__(self, scale, data, folder: str, batch: int):
        import keras

        from tfscale.scale.checkpoint import Checkpoints

        with scale.scope():
            self.model = build_model()
            self.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_loss())
        self.model.fit(data.batch(batch), steps_per_epoch=5, epochs=1, verbose=0)  # the optimizer's state exists
        callbacks = scale.callbacks(checkpoint_dir=os.path.join(folder, "tfscale"), resume=False,
                                    save_on_preemption=False, throughput=False, terminate_on_nan=False)
        self.tfscale = next(c for c in callbacks if isinstance(c, Checkpoints))
        self.modelcheckpoint = keras.callbacks.ModelCheckpoint(os.path.join(folder, "keras", "model.weights.h5"),
                                                               save_weights_only=True)
        self.backup = keras.callbacks.BackupAndRestore(os.path.join(folder, "backup"))
        for callback in (self.tfscale, self.modelcheckpoint, self.backup):
            callback.set_model(self.model)
        self.saves = 0

    def save_tfscale(self) -> tuple[float, float]:
        """(seconds the training thread waits, seconds until the checkpoint is committed) of one save."""
        self.saves += 1
        start = time.perf_counter()
        # a step checkpoint, the kind `checkpoint_every_steps` writes (committed in the background; an epoch's is
        # committed in the training thread), at a new position each time (the same one is not saved twice)
        self.tfscale.save(self.saves, 1, "steps")
        blocking = time.perf_counter() - start
        self.tfscale.wait()
        return blocking, time.perf_counter() - start

    def save_keras(self, callback) -> float:
        self.saves += 1
        start = time.perf_counter()
        callback.on_epoch_end(self.saves, logs={})  # what fit calls at an epoch's end: the save, nothing else
        return time.perf_counter() - start

    def round(self, n: int, flip: bool) -> dict[str, float]:
        """The median seconds of n saves per arm, alternated."""
        times = {"tfscale": [], "tfscale_blocking": [], "keras_modelcheckpoint": [], "keras_backup": []}
        arms = {"tfscale": None, "keras_modelcheckpoint": self.modelcheckpoint, "keras_backup": self.backup}
        order = list(arms)[::-1] if flip else list(arms)
        for _ in range(n):
            for name in order:
                if arms[name] is None:
                    blocking, seconds = self.save_tfscale()
                    times["tfscale_blocking"].append(blocking)
                else:
                    seconds = self.save_keras(arms[name])
                times[name].append(seconds)
        return {k: statistics.median(v) for k, v in times.items()}

    def bytes(self) -> int:
        info = self.tfscale.checkpoints.list()[0]
        return info.bytes

    def same_content(self) -> bool:
        """tfscale's newest file and ModelCheckpoint's hold the same groups, attributes and values (both saved from
        this one state): the save times compare the same work."""
        store = self.tfscale.checkpoints
        ours = store.store.join(store.list()[0].name + ".weights.h5")
        return _h5_content(ours) == _h5_content(self.modelcheckpoint.filepath)


def _h5_content(path: str) -> dict:
    """{name: (attributes, bytes of the value or None)} of every group and dataset of an h5 file."""
    import h5py

    content = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            value = obj[()] if isinstance(obj, h5py.Dataset) else None
            content[name] = ({k: str(v) for k, v in obj.attrs.items()},
                             None if value is None else (np.asarray(value).dtype.str, np.asarray(value).tobytes()))

        f.visititems(visit)
    return content


class JaxSavers:
    """On JAX: one trained model saved by tfscale's `Checkpoints` and by Keras' `OrbaxCheckpoint`, each attached
    as `fit` would attach it (runs in a child process with KERAS_BACKEND=jax: `jax_saves`)."""

    def __init__(self, folder: str, batch: int):
        import keras

        import tfscale as ts
        from tfscale.scale.checkpoint import Checkpoints

        rng = np.random.RandomState(0)
        x = rng.rand(batch * 5, 784).astype("float32")
        y = rng.randint(0, 10, size=batch * 5).astype("int32")
        scale = ts.Scale("one_device")
        with scale.scope():
            self.model = build_model()
            self.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=_loss())
        self.model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # the optimizer's state exists
        callbacks = scale.callbacks(checkpoint_dir=os.path.join(folder, "tfscale"), resume=False,
                                    save_on_preemption=False, throughput=False, terminate_on_nan=False)
        self.tfscale = next(c for c in callbacks if isinstance(c, Checkpoints))
        self.orbax = keras.callbacks.OrbaxCheckpoint(os.path.join(folder, "orbax"), max_to_keep=1)
        for callback in (self.tfscale, self.orbax):
            callback.set_model(self.model)
        self.saves = 0

    save_tfscale = Savers.save_tfscale  # the same timed save, on JAX

    def save_orbax(self) -> tuple[float, float]:
        self.saves += 1
        start = time.perf_counter()
        self.orbax.on_epoch_end(self.saves, logs={})  # what fit calls at an epoch's end
        blocking = time.perf_counter() - start
        self.orbax.wait_until_finished()
        return blocking, time.perf_counter() - start

    def round(self, n: int, flip: bool) -> dict[str, float]:
        times = {"tfscale": [], "tfscale_blocking": [], "keras_orbax": [], "keras_orbax_blocking": []}
        order = ["keras_orbax", "tfscale"] if flip else ["tfscale", "keras_orbax"]
        for _ in range(n):
            for name in order:
                blocking, seconds = self.save_tfscale() if name == "tfscale" else self.save_orbax()
                times[name].append(seconds)
                times[f"{name}_blocking"].append(blocking)
        return {k: statistics.median(v) for k, v in times.items()}


def jax_save_worker(settings: dict) -> None:
    """The child process of `jax_saves`: prints {arm: [median seconds per round]} as one JSON line."""
    savers = JaxSavers(settings["dir"], settings["batch"])
    savers.round(1, False)  # untimed: the first save of each arm opens files, imports, compiles
    saves: dict[str, list[float]] = {}
    for r in range(settings["rounds"]):
        for name, seconds in savers.round(settings["saves_per_round"], flip=r % 2 == 1).items():
            saves.setdefault(name, []).append(seconds)
    savers.orbax.on_train_end()
    print("JAX_SAVES " + json.dumps({"saves": saves, "params": savers.model.count_params()}), flush=True)


def jax_saves(args, folder: str) -> dict:
    """tfscale against OrbaxCheckpoint on JAX, in a child process (KERAS_BACKEND is read when Keras is imported)."""
    settings = {"dir": os.path.join(folder, "jax"), "batch": args.batch, "rounds": args.rounds,
                "saves_per_round": args.saves_per_round}
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, os.path.abspath(__file__), "--jax-save-worker", json.dumps(settings)],
                         env=env, capture_output=True, text=True, timeout=EXIT_TIMEOUT_S * 5)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("JAX_SAVES ")), None)
    if run.returncode != 0 or line is None:
        raise SystemExit(f"bench_checkpoint: the JAX save arm failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return json.loads(line[len("JAX_SAVES "):])


# ---------------------------------------------------------------------- 3. SIGTERM to exit

def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def preempt_once(args, folder: str, index: int) -> dict:
    """Starts the worker, sends SIGTERM after --sigterm-after steps; its step time and seconds until it exited."""
    from tfscale.scale.checkpoint_store import CheckpointStore

    directory = os.path.join(folder, f"preempt-{index}")
    err_path = os.path.join(folder, f"preempt-{index}.stderr")
    with open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, WORKER, directory, "--batch", str(args.batch)], env=_env(),
                                stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    steps: list[float] = []
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(steps) < args.sigterm_after:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"the preemption worker exited ({proc.wait()}) after {len(steps)} step(s)")
            if line.startswith("STEP "):
                steps.append(float(line.split()[2]))
        sent_at, sent = time.time(), time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=EXIT_TIMEOUT_S)
        seconds = time.perf_counter() - sent
    except (queue.Empty, subprocess.TimeoutExpired, RuntimeError) as e:
        raise RuntimeError(f"preemption round {index}: {type(e).__name__} {e}\n{Path(err_path).read_text()[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    saved = CheckpointStore(directory).list()
    if code != 143 or not saved or saved[0].reason != "preemption":
        raise RuntimeError(f"preemption round {index}: exit {code}, checkpoints "
                           f"{[(i.name, i.reason) for i in saved]} (expected 143 and a 'preemption' one)\n"
                           + Path(err_path).read_text()[-3000:])
    steady = steps[len(steps) // 2:]  # the first steps compile
    return {"seconds": seconds, "step_seconds": statistics.median(b - a for a, b in zip(steady, steady[1:])),
            "to_commit_seconds": saved[0].created - sent_at, "exit_code": code, "checkpoint": saved[0].name,
            "reason": saved[0].reason, "steps_after_signal": saved[0].global_step - len(steps)}


# ---------------------------------------------------------------------- 4. the preemption flag exchange (--exchange)

def exchange_worker(settings: dict) -> dict[str, dict[str, list[float]]]:
    """In each of the 2 workers `tfscale.launch` starts: steps/s of `tfscale.fit` with save_on_preemption off (no
    exchange of flags), on (tfscale's default: every `EXCHANGE_EVERY_STEPS` steps) and "on_every_step" (at every
    step's end, as before), the arms rotated every round, in this one process group; also the exchanges
    made per step, the milliseconds each took (the engine's `exchange`, timed, in whichever thread), the
    milliseconds per step the training thread waited for the flags (`FlagExchange.step_end`, timed) and the CPU
    milliseconds per step of this process (the chief's holds TensorFlow's coordination service)."""
    import keras

    import tfscale as ts
    from tfscale.scale import preemption

    warmup, steps = settings["warmup"], settings["steps"]
    scale, data = ts.Scale.auto(), examples()
    spent = {"seconds": 0.0, "calls": 0, "waited": 0.0}
    exchange = scale.engine.exchange

    def timed_exchange(key, value, *args, **kwargs):  # the flags' keys only, not the shared-folder check's
        start = time.perf_counter()
        try:
            return exchange(key, value, *args, **kwargs)
        finally:
            if key.startswith("ckpt/"):
                spent["seconds"] += time.perf_counter() - start
                spent["calls"] += 1

    scale.engine.exchange = timed_exchange  # what scale.callbacks hands to the checkpoints
    step_end = preemption.FlagExchange.step_end

    def timed_step_end(self, flags):  # what the training thread waits for at a step's end
        start = time.perf_counter()
        try:
            return step_end(self, flags)
        finally:
            spent["waited"] += time.perf_counter() - start

    preemption.FlagExchange.step_end = timed_step_end

    class Clock(keras.callbacks.Callback):  # the steps only, not the epoch end's save (every arm makes it)
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == warmup:
                self.start, self.cpu, self.spent = time.perf_counter(), time.process_time(), dict(spent)
            elif batch + 1 == warmup + steps:
                self.end, self.cpu = time.perf_counter(), time.process_time() - self.cpu
                self.calls = spent["calls"] - self.spent["calls"]
                self.seconds = spent["seconds"] - self.spent["seconds"]
                self.waited = spent["waited"] - self.spent["waited"]

    arms, default_every = list(EXCHANGE_ARMS), preemption.EXCHANGE_EVERY_STEPS
    figures: dict[str, dict[str, list[float]]] = {arm: {"steps_per_s": [], "exchanges_per_step": [],
                                                        "ms_per_exchange": [], "ms_waited_per_step": [],
                                                        "cpu_ms_per_step": []}
                                                  for arm in arms}
    for r in range(settings["rounds"]):
        for arm in arms[r % len(arms):] + arms[:r % len(arms)]:
            clock = Clock()
            preemption.EXCHANGE_EVERY_STEPS = 1 if arm == "on_every_step" else default_every
            ts.fit(build_model, data, scale=scale, epochs=1, steps_per_epoch=warmup + steps,
                   global_batch_size=settings["batch"], seed=0, loss=_loss(), resume=False, verbose=0,
                   checkpoint_dir=os.path.join(settings["dir"], f"{arm}-{r}"), save_on_preemption=arm != "off",
                   callbacks=[clock])
            figures[arm]["steps_per_s"].append(steps / (clock.end - clock.start))
            figures[arm]["exchanges_per_step"].append(clock.calls / steps)
            figures[arm]["ms_per_exchange"].append(1000 * clock.seconds / clock.calls if clock.calls else 0.0)
            figures[arm]["ms_waited_per_step"].append(1000 * clock.waited / steps)
            figures[arm]["cpu_ms_per_step"].append(1000 * clock.cpu / steps)
    preemption.EXCHANGE_EVERY_STEPS = default_every
    return figures


def exchange_arm(args, folder: str) -> dict[str, dict[str, list[float]]]:
    """The chief's figures per arm and round (`exchange_worker`), from 2 workers on 127.0.0.1 (multi_worker)."""
    import tfscale as ts

    settings = {"warmup": args.warmup, "steps": args.steps, "batch": args.batch, "rounds": args.rounds,
                "dir": os.path.join(folder, "exchange")}
    return ts.launch(exchange_worker, n=2, args=(settings,), timeout=EXCHANGE_TIMEOUT_S)[0]


# ---------------------------------------------------------------------- the run

def _figures(values: list[float], digits: int) -> dict:
    return {"median": round(statistics.median(values), digits), "all": [round(v, digits) for v in values]}


def _crc32_implementation() -> str:
    """Whose CRC-32 the manifests' checksums were computed with: ISA-L's (`isal`) or zlib's (the same values)."""
    import zlib

    from tfscale.scale.checkpoint_store import crc32

    return "zlib" if crc32() is zlib.crc32 else "isal"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="the global batch")
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per run")
    parser.add_argument("--warmup", type=int, default=50, help="untimed steps first (the compile)")
    parser.add_argument("--every", type=int, default=50, help="checkpoint every this many steps")
    parser.add_argument("--saves-per-round", type=int, default=5)
    parser.add_argument("--sigterm-after", type=int, default=100, help="steps the preempted worker trains first")
    parser.add_argument("--dir", default=None, help="where checkpoints are written (default: a temporary folder)")
    parser.add_argument("--exchange", action="store_true",
                        help="also time save_on_preemption on against off on 2 workers (tfscale.launch)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds, 100 timed steps")
    parser.add_argument("--jax-save-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.saves_per_round, args.sigterm_after = 2, 100, 2, 30
    return args


def measure(args) -> dict:
    """Every round's raw figures: {"training": {arm: [examples/s]}, "saves": {arm: [s]}, "preempted": [...]}."""
    import tfscale as ts

    scale = ts.Scale("default")
    data = examples()
    folder = tempfile.mkdtemp(prefix="bench-checkpoint-", dir=args.dir)
    arm = f"checkpoint_every_{args.every}"
    training, per_cpu_s, end_to_end = {arm: [], "none": []}, {arm: [], "none": []}, {arm: [], "none": []}
    saves = {"tfscale": [], "tfscale_blocking": [], "keras_modelcheckpoint": [], "keras_backup": []}
    preempted = []
    try:
        savers = Savers(scale, data, os.path.join(folder, "saves"), args.batch)
        savers.round(1, False)  # untimed: the first save of each arm opens files, imports, builds
        for r in range(args.rounds):
            for name in ([arm, "none"] if r % 2 == 0 else ["none", arm]):
                directory = os.path.join(folder, f"train-{r}") if name == arm else None
                rate, per_cpu, whole = training_arm(scale, data, args, directory)
                training[name].append(rate)
                per_cpu_s[name].append(per_cpu)
                end_to_end[name].append(whole)
                if directory:
                    shutil.rmtree(directory)
            for name, seconds in savers.round(args.saves_per_round, flip=r % 2 == 1).items():
                saves[name].append(seconds)
            preempted.append(preempt_once(args, folder, r))
            print(f"round {r}: {arm} {training[arm][-1]:.0f} vs none {training['none'][-1]:.0f} examples/s; save "
                  + ", ".join(f"{k} {v[-1] * 1000:.1f} ms" for k, v in saves.items())
                  + f"; SIGTERM to exit {preempted[-1]['seconds']:.2f} s", file=sys.stderr)
        exchange = exchange_arm(args, folder) if args.exchange else None
        jax = jax_saves(args, folder)
        return {"arm": arm, "training": training, "per_cpu_s": per_cpu_s, "end_to_end": end_to_end, "saves": saves,
                "preempted": preempted,
                "exchange": exchange, "jax_saves": jax["saves"],
                "params": savers.model.count_params(), "checkpoint_bytes": savers.bytes(),
                "same_content": savers.same_content()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def build_report(args, raw: dict, started: float, load_before: float) -> dict:
    import keras

    arm, training, saves, preempted = raw["arm"], raw["training"], raw["saves"], raw["preempted"]
    save_median = {k: statistics.median(v) for k, v in saves.items()}
    step = statistics.median(p["step_seconds"] for p in preempted)
    exit_seconds = [p["seconds"] for p in preempted]
    ratios = {
        f"{arm}_vs_none": round(statistics.median(training[arm]) / statistics.median(training["none"]), 3),
        "keras_modelcheckpoint_over_tfscale": round(save_median["keras_modelcheckpoint"] / save_median["tfscale"], 3),
        "keras_backup_over_tfscale": round(save_median["keras_backup"] / save_median["tfscale"], 3),
        "keras_modelcheckpoint_over_tfscale_blocking": round(
            save_median["keras_modelcheckpoint"] / save_median["tfscale_blocking"], 3),
        "keras_orbax_over_tfscale_jax": round(statistics.median(raw["jax_saves"]["keras_orbax"])
                                              / statistics.median(raw["jax_saves"]["tfscale"]), 3),
        f"{arm}_vs_none_per_cpu_s": round(statistics.median(raw["per_cpu_s"][arm])
                                          / statistics.median(raw["per_cpu_s"]["none"]), 3),
        f"{arm}_vs_none_end_to_end": round(statistics.median(raw["end_to_end"][arm])
                                           / statistics.median(raw["end_to_end"]["none"]), 3),
    }
    targets = {f"{arm}_vs_none": 0.97, "keras_modelcheckpoint_over_tfscale": 1.0, "keras_backup_over_tfscale": 1.0,
               "keras_orbax_over_tfscale_jax": 1.0,
               "sigterm_to_exit_seconds_max": round(step + SIGTERM_MARGIN_S, 3)}
    exchange = raw.get("exchange")
    exchange_ratios = {f"save_on_preemption_{arm}_vs_off_2_workers": (arm, "off") for arm in ("on", "on_every_step")}
    rates = {arm: figures["steps_per_s"] for arm, figures in (exchange or {}).items()}
    if exchange:
        ratios.update({name: round(statistics.median(rates[a]) / statistics.median(rates[b]), 3)
                       for name, (a, b) in exchange_ratios.items()})
        targets["save_on_preemption_on_vs_off_2_workers"] = EXCHANGE_TARGET
    met = {k: ratios[k] >= t for k, t in targets.items() if k in ratios}
    met["sigterm_to_exit_seconds_max"] = statistics.median(exit_seconds) <= step + SIGTERM_MARGIN_S
    return {
        "benchmark": "checkpoint", "rounds": args.rounds, "seconds": round(time.time() - started),
        "settings": {"batch": args.batch, "steps": args.steps, "warmup": args.warmup, "every": args.every,
                     "exchange": args.exchange,
                     "saves_per_round": args.saves_per_round, "sigterm_after": args.sigterm_after,
                     "model": "MLP 784-512-512-10, Adam, random Fashion-MNIST-shaped data",
                     "params": raw["params"], "checkpoint_bytes": raw["checkpoint_bytes"], "scale": "default",
                     "backend": keras.backend.backend(), "keras": keras.__version__,
                     "python": platform.python_version(), "cpus": os.cpu_count(),
                     "crc32": _crc32_implementation()},
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "examples_per_s": {n: {"median": round(statistics.median(v), 1), "best": round(max(v), 1),
                               "all": [round(x, 1) for x in v]} for n, v in training.items()},
        "examples_per_cpu_s": {n: _figures(v, 1) for n, v in raw["per_cpu_s"].items()},
        "saves_per_timed_run": args.steps // args.every,
        # what one save cost the training, from the medians: the timed span's extra seconds over its saves
        "training_ms_lost_per_save": round(1000 * args.steps * args.batch / (args.steps // args.every) * (
            1 / statistics.median(training[arm]) - 1 / statistics.median(training["none"])), 1),
        "save_seconds": {k: _figures(v, 4) for k, v in saves.items()},
        "tfscale_blocking_seconds": round(save_median["tfscale_blocking"], 4),
        "save_seconds_jax": {k: _figures(v, 4) for k, v in raw["jax_saves"].items()},
        "tfscale_file_same_content_as_modelcheckpoint": raw["same_content"],
        "sigterm_to_exit_seconds": _figures(exit_seconds, 3),
        "sigterm_to_commit_seconds": _figures([p["to_commit_seconds"] for p in preempted], 3),
        "step_seconds": _figures([p["step_seconds"] for p in preempted], 4),
        "sigterm": {"exit_codes": [p["exit_code"] for p in preempted], "reasons": [p["reason"] for p in preempted],
                    "checkpoints": [p["checkpoint"] for p in preempted],
                    "steps_after_signal": [p["steps_after_signal"] for p in preempted],
                    "target": f"step + {SIGTERM_MARGIN_S:g} s"},
        "exchange_2_workers": ({f"save_on_preemption_{arm}": {name: _figures(v, 3) for name, v in figures.items()}
                                for arm, figures in exchange.items()} if exchange else None),
        "ratios": ratios,
        "round_ratios": {f"{arm}_vs_none": [round(a / b, 3) for a, b in zip(training[arm], training["none"])],
                         f"{arm}_vs_none_end_to_end": [round(a / b, 3) for a, b in zip(raw["end_to_end"][arm],
                                                                                        raw["end_to_end"]["none"])],
                         **{name: [round(x / y, 3) for x, y in zip(rates[a], rates[b])]
                            for name, (a, b) in exchange_ratios.items() if exchange}},
        "targets": targets,
        "targets_met": met,
    }


def main() -> None:
    args = parse_args()
    if args.jax_save_worker:
        return jax_save_worker(json.loads(args.jax_save_worker))
    load_before, started = os.getloadavg()[0], time.time()
    report = build_report(args, measure(args), started, load_before)
    ratios, saves = report["ratios"], report["save_seconds"]
    print(f"checkpoint every {args.every} steps vs none: {ratios[f'checkpoint_every_{args.every}_vs_none']:.3f} "
          f"(target 0.97); one save: tfscale {saves['tfscale']['median'] * 1000:.1f} ms "
          f"({saves['tfscale_blocking']['median'] * 1000:.1f} ms blocking), ModelCheckpoint "
          f"{saves['keras_modelcheckpoint']['median'] * 1000:.1f} ms, BackupAndRestore "
          f"{saves['keras_backup']['median'] * 1000:.1f} ms; on JAX tfscale "
          f"{report['save_seconds_jax']['tfscale']['median'] * 1000:.1f} ms, OrbaxCheckpoint "
          f"{report['save_seconds_jax']['keras_orbax']['median'] * 1000:.1f} ms; SIGTERM to exit "
          f"{report['sigterm_to_exit_seconds']['median']:.2f} s (target "
          f"{report['targets']['sigterm_to_exit_seconds_max']:.2f} s)", file=sys.stderr)
    if args.exchange:
        print(f"2 workers, steps/s with save_on_preemption on / off: "
              f"{ratios['save_on_preemption_on_vs_off_2_workers']:.3f} (target {EXCHANGE_TARGET}); with an exchange "
              f"at every step: {ratios['save_on_preemption_on_every_step_vs_off_2_workers']:.3f}", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
