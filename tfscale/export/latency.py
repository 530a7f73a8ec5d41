"""TFLite latency at batch 1, measured fairly: every arm in turn, in rounds, medians over rounds.

An arm is one file under one runtime setting: 1 thread with LiteRT's default
XNNPACK delegate, all threads with it ("all" is the cores this process may run
on, its CPU affinity: one core for a worker `tfscale launch` bound to one), and
1 thread without any delegate. On a shared or throttling machine, timing
variants one after another would blame the machine's load on whichever ran
during a busy spell; running all arms in each round (order rotated) and taking
the median of the per-round p50s does not. The per-round p50s at 1 thread are
kept (``p50_rounds_us_1t``): paired by round, they say whether two files differ
by more than the machine's noise (`tfscale.export.report`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from tfscale.compat import litert as litert_compat
from tfscale.export import runtime
from tfscale.export.source import PreparedModel

MIN_ROUNDS = 5
DIGITS = 4  # significant digits kept: timings vary by more than that between runs
SETTINGS = {"1t": (1, True), "all": (None, True), "1t_no_xnnpack": (1, False)}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), or the machine's count where that is unknown."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def rounded(value: float) -> float:
    """`value` to `DIGITS` significant digits."""
    return float(f"{value:.{DIGITS}g}")


def _arm(path: Path, source: PreparedModel, example: list[np.ndarray], threads: int, delegate: bool):
    interpreter = runtime.interpreter(path, threads, delegate)
    inputs, _ = runtime.io_details(interpreter, source)
    runtime.set_batch(interpreter, inputs, 1)
    for x, d in zip(example, inputs):
        interpreter.set_tensor(d["index"], runtime.quantize(x[:1], d))  # real data: some kernels skip zeros
    return interpreter


def _timed(invoke, runs: int) -> np.ndarray:
    invoke()
    invoke()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter_ns()
        invoke()
        times[i] = time.perf_counter_ns() - start
    return times / 1e3


def measure(paths: dict[str, str | os.PathLike], source: PreparedModel, example: list[np.ndarray], *, runs: int = 200,
            rounds: int | None = None) -> dict[str, dict]:
    """Latency figures per name in `paths`: p50_us_<setting>, p90_us_<setting>, threads_all, xnnpack.

    Args:
        paths: name → .tflite file.
        source: the model the files came from (input names and order).
        example: one real example per input (batch 1).
        runs: timed invokes per arm in total, spread over the rounds.
        rounds: rounds over all arms (default: one per 20 runs, 5 to 20); p50 is the
            median of the per-round p50s.

    Returns:
        {name: {"p50_us_1t", "p90_us_1t", "p50_us_all", "p90_us_all", "p50_us_1t_no_xnnpack",
        "p90_us_1t_no_xnnpack", "p50_rounds_us_1t", "threads_all", "xnnpack"}}, in µs to 4
        significant digits; threads_all is `usable_cores()`; xnnpack says whether the delegate
        took the graph (with 1 thread).
    """
    all_threads = usable_cores()
    rounds = rounds or max(MIN_ROUNDS, min(20, runs // 20))
    arms = {}
    for name, path in paths.items():
        for setting, (threads, delegate) in SETTINGS.items():
            arms[(name, setting)] = _arm(Path(path), source, example, threads or all_threads, delegate)
    per_round = max(1, runs // rounds)
    medians: dict = {key: [] for key in arms}
    pooled: dict = {key: [] for key in arms}
    keys = list(arms)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            times = _timed(arms[key].invoke, per_round)
            medians[key].append(float(np.median(times)))
            pooled[key].append(times)
    result: dict[str, dict] = {}
    for (name, setting), interpreter in arms.items():
        row = result.setdefault(name, {"threads_all": all_threads})
        row[f"p50_us_{setting}"] = rounded(np.median(medians[(name, setting)]))
        row[f"p90_us_{setting}"] = rounded(np.percentile(np.concatenate(pooled[(name, setting)]), 90))
        if setting == "1t":
            row["p50_rounds_us_1t"] = [rounded(m) for m in medians[(name, setting)]]
            ops = litert_compat.op_names(interpreter)
            row["xnnpack"] = None if ops is None else "DELEGATE" in ops
    return result
