"""`fit` fed by streaming image pipelines against the same data cached in memory, and the floor.

The floor of a streaming input on this machine: the CPU its pass over the data
costs beyond a pass over the cache, against the CPU a cached `fit` epoch costs.
When training keeps every core busy, streaming cannot be slower than cached by
less than that share; the target is a slowdown of at most 1.5 x the floor. On a
shared machine the wall-clock slowdown is noisy, so the CPU an epoch costs beyond
a cached one is reported too (extra_cpu_vs_cached: thread contention shows there).
Epochs of every arm alternate; figures are medians. One round's streaming/cached
ratio ranged 0.80-1.15 here against a floor of ~0.026: with 7 rounds the median
slowdown came out at 2.6x the floor in one run and, with 21 rounds, -0.7x (streaming
faster). Hence 15 rounds by default (--fit-repeats).
"""

from __future__ import annotations

import statistics
import time


def build_model(size):
    import keras

    model = keras.Sequential([
        keras.Input((*size, 1)),
        keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _timed(fn) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def _drain(ds) -> None:
    for _ in ds:
        pass


def compare_fit(png_folder: str, raw_shards: str, size, repeats: int, batch: int) -> dict:
    """Seconds and CPU per epoch of fit: streaming from files and from raw shards, and cached in memory."""
    import keras

    import tfscale as ts

    keras.utils.set_random_seed(0)
    model = build_model(size)
    files = ts.data.image_folder(png_folder, image_size=size, channels=1)
    datasets = {"streaming_files": files.dataset(batch_size=batch),
                "streaming_shards": ts.data.image_folder(raw_shards, image_size=size, channels=1).dataset(
                    batch_size=batch),
                "cached": files.cache().dataset(batch_size=batch)}
    model.fit(datasets["cached"], epochs=1, verbose=0)  # fills the cache, compiles the step
    for ds in datasets.values():
        model.fit(ds, epochs=1, verbose=0)
        _drain(ds)
    fit = {name: [] for name in datasets}
    alone = {name: [] for name in datasets}
    for _ in range(repeats):
        for name, ds in datasets.items():
            fit[name].append(_timed(lambda: model.fit(ds, epochs=1, verbose=0)))
            alone[name].append(_timed(lambda: _drain(ds)))
    seconds = {k: statistics.median(s for s, _ in v) for k, v in fit.items()}
    fit_cpu = {k: statistics.median(c for _, c in v) for k, v in fit.items()}
    input_cpu = {k: statistics.median(c for _, c in v) for k, v in alone.items()}
    training_cpu = fit_cpu["cached"] - input_cpu["cached"]
    result = {"seconds_per_epoch": {k: round(v, 3) for k, v in seconds.items()},
              "fit_cpu_seconds_per_epoch": {k: round(v, 3) for k, v in fit_cpu.items()},
              "input_cpu_seconds_per_epoch": {k: round(v, 3) for k, v in input_cpu.items()},
              "training_cpu_seconds_per_epoch": round(training_cpu, 3),
              "all_rounds_seconds": {k: [round(s, 3) for s, _ in v] for k, v in fit.items()}}
    for name in ("streaming_files", "streaming_shards"):
        floor = (input_cpu[name] - input_cpu["cached"]) / fit_cpu["cached"]
        # the median of the epochs' ratios within each round: a load that drifts between rounds cancels out
        slowdown = statistics.median(s / c for (s, _), (c, _) in zip(fit[name], fit["cached"])) - 1
        extra_cpu = fit_cpu[name] / fit_cpu["cached"] - 1  # what the epoch cost beyond cached, in CPU
        result[name] = {"floor": round(floor, 4), "slowdown_vs_cached": round(slowdown, 4),
                        "slowdown_vs_floor": round(slowdown / floor, 2) if floor > 0 else None,
                        "extra_cpu_vs_cached": round(extra_cpu, 4),
                        "extra_cpu_vs_floor": round(extra_cpu / floor, 2) if floor > 0 else None}
    return result
