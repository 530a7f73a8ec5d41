"""Benchmark: what two workers started by `tfscale launch` give on a 2-core CPU, with tfscale's defaults.

Three arms train the same conv net (benchmarks/_launch_worker.py: Keras 3 `fit`
under `Scale.auto()`, global examples/s over timed steps after a warm-up), each
in fresh processes, alternated in one run (the order rotates every round):

- ``one_process_1_thread``: one process, 1 intra-op and 1 inter-op thread, batch B;
- ``two_workers_1_thread``: `tfscale launch -n 2` with its defaults (each worker gets
  its share of the cores: 1 thread on 2 cores), B per worker (global 2B);
- ``one_process_2_threads``: one process, 2 threads, global batch 2B.

Ratios of medians (and medians of the per-round ratios):
two_workers / one_process_1_thread with the per-worker batch fixed (target >= 1.45),
two_workers / one_process_2_threads with the global batch fixed (target >= 0.9).

Usage: python benchmarks/bench_launch.py [--rounds 5] [--batch 32] [--steps 32] [--cpus 0,1] [--untuned]
Everything runs pinned to --cpus (default: the first two cores), so a bigger machine measures "2 cores" too.
Synchronous workers suffer most from other load (each step waits for the slower one): run it on a quiet
machine; ``load_average_before_after`` and ``cpu_ms_per_step_median`` (CPU time of the chief process per
step, which load changes little) tell whether a run was disturbed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORKER = str(Path(__file__).resolve().parent / "_launch_worker.py")
TARGETS = {"two_workers_vs_one_process_1_thread": 1.45, "two_workers_vs_one_process_2_threads": 0.9}


def _threads(n: int) -> dict[str, str]:
    return {"TF_NUM_INTRAOP_THREADS": str(n), "TF_NUM_INTEROP_THREADS": str(n), "OMP_NUM_THREADS": str(n)}


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    drop = ("TF_CONFIG", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SLURM_", "TFSCALE_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    env.update(extra or {})
    return env


def _parse(output: str) -> dict:
    for line in output.splitlines():
        if "BENCH " in line:
            return json.loads(line.split("BENCH ", 1)[1])
    raise RuntimeError("no BENCH line in the output:\n" + output[-3000:])


def one_process(threads: int, global_batch: int, worker_args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, WORKER, "--global-batch", str(global_batch), *worker_args],
                          env=_env(_threads(threads)), capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"one process ({threads} threads) failed:\n{proc.stderr[-3000:]}")
    return _parse(proc.stdout)


def two_workers(global_batch: int, worker_args: list[str], threads: int | None = None) -> dict:
    """`tfscale launch -n 2` through the launcher's Python API, with its defaults (or `threads`)."""
    from tfscale.cluster.launch.launcher import LaunchOptions, run

    saved = dict(os.environ)
    output = io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(_env())
        run([sys.executable, WORKER, "--global-batch", str(global_batch), *worker_args],
            LaunchOptions(workers=2, threads=threads, timeout=900), output=output)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return _parse(output.getvalue())


def arms(args) -> dict:
    worker_args = ["--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--steps-per-execution", str(args.steps_per_execution)]
    b = args.batch
    table = {
        "one_process_1_thread": lambda: one_process(1, b, worker_args),
        "two_workers_1_thread": lambda: two_workers(2 * b, worker_args),
        "one_process_2_threads": lambda: one_process(2, 2 * b, worker_args),
    }
    if args.untuned:  # what hand-written TF_CONFIG gives: TensorFlow's own thread pools in every worker
        table["two_workers_tf_default_threads"] = lambda: two_workers(
            2 * b, worker_args + ["--communication", "auto"], threads=len(os.sched_getaffinity(0)))
    return table


def _ratio(results: dict, a: str, b: str) -> dict:
    medians = statistics.median(results[a]) / statistics.median(results[b])
    paired = statistics.median(x / y for x, y in zip(results[a], results[b]))
    best = max(results[a]) / max(results[b])  # the least disturbed run of each: a diagnostic on a busy machine
    return {"ratio_of_medians": round(medians, 3), "median_of_round_ratios": round(paired, 3),
            "ratio_of_best": round(best, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="B: the per-process batch of the 1-thread arm")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--cpus", default="0,1", help="cores to pin every process to ('' for no pinning)")
    parser.add_argument("--untuned", action="store_true", help="add 2 workers with TensorFlow's default threads")
    args = parser.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    table = arms(args)
    names = list(table)
    results = {name: [] for name in names}
    step_ms = {name: [] for name in names}
    cpu_ms = {name: [] for name in names}
    load_before = os.getloadavg()
    started = time.time()
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            measured = table[name]()
            results[name].append(measured["examples_per_s"])
            step_ms[name].append(measured["step_ms"])
            cpu_ms[name].append(measured["cpu_ms_per_step"])
            print(f"round {r}: {name}: {measured['examples_per_s']:.1f} examples/s", file=sys.stderr)
    report = {
        "benchmark": "launch", "rounds": args.rounds, "seconds": round(time.time() - started),
        "settings": {"batch": args.batch, "steps": args.steps, "warmup": args.warmup,
                     "steps_per_execution": args.steps_per_execution, "cpus": sorted(os.sched_getaffinity(0)),
                     "model": "conv32-conv64-pool-conv64-gap-dense10 on 32x32x3, Adam, accuracy",
                     "python": platform.python_version()},
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "examples_per_s": {n: {"median": round(statistics.median(v), 1), "best": round(max(v), 1),
                               "all": [round(x, 1) for x in v]} for n, v in results.items()},
        "step_ms_median": {n: round(statistics.median(v), 1) for n, v in step_ms.items()},
        "cpu_ms_per_step_median": {n: round(statistics.median(v), 1) for n, v in cpu_ms.items()},
        "ratios": {
            "two_workers_vs_one_process_1_thread": _ratio(results, "two_workers_1_thread", "one_process_1_thread"),
            "two_workers_vs_one_process_2_threads": _ratio(results, "two_workers_1_thread", "one_process_2_threads"),
            "one_process_2_threads_vs_1_thread": _ratio(results, "one_process_2_threads", "one_process_1_thread"),
        },
        "targets": TARGETS,
    }
    if args.untuned:
        report["ratios"]["untuned_two_workers_vs_one_process_2_threads"] = _ratio(
            results, "two_workers_tf_default_threads", "one_process_2_threads")
    report["targets_met"] = {k: report["ratios"][k]["ratio_of_medians"] >= t for k, t in TARGETS.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
