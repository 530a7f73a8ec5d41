"""Benchmark: tfscale's JAX engine against hand-written keras.distribution, and against tf.distribute.

Three arms train the same conv net on the same data, data-parallel over 2 devices (2 CPU host
devices here; GPUs where there are), each in a fresh process (Keras fixes its backend per
process: benchmarks/_jax_bench_worker.py), timing steady-state epochs inside it:

  tfscale_jax   Scale("data_parallel", replicas=2) + scale.distribute + scale.optimizer/scope + fit
  keras_jax     the same model written by hand: keras.distribution.DataParallel, fit on the arrays
  tf_mirrored   Scale("mirrored", replicas=2) on the TensorFlow backend, the same calls

The arms alternate in every round (the order rotates) and each figure is the median of
--rounds rounds. Ratios: tfscale_jax / keras_jax (tfscale adds no cost: target >= 0.97) and
tfscale_jax / tf_mirrored (JAX data_parallel x2 against TF mirrored x2, reported), both as the
median of the per-round ratios and as the ratio of the medians.

    python benchmarks/bench_jax.py [--rounds 5] [--global-batch 64] [--steps 50] [--epochs 3] [--json out.json]
    python benchmarks/bench_jax.py --quick      # one small round: does every arm run?

Each ratio is also given in CPU time per step (all threads of the arm's process, over the same
epochs; the other arm's over this one's, so above 1 is better here too): other load on the machine
moves wall-clock figures far more than CPU time. ``load_average_before_after`` says how busy it was;
``retried_after_collective_abort`` lists arms that XLA aborted in an all-reduce and that ran again.
Prints a table on stderr and one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER = str(Path(__file__).resolve().parent / "_jax_bench_worker.py")
ARMS = ("tfscale_jax", "keras_jax", "tf_mirrored")
# On a 2-core CPU, jaxlib 0.10.2 sometimes deadlocks two host devices in an all-reduce (both arms were seen to);
# XLA aborts the process after 40 s. Such an arm is run once more, and the retry is reported.
RENDEZVOUS_ABORT = "Termination timeout for"
RATIOS = {"tfscale_jax_vs_keras_jax": ("tfscale_jax", "keras_jax", 0.97),
          "jax_data_parallel_vs_tf_mirrored": ("tfscale_jax", "tf_mirrored", None)}


def child_env() -> dict[str, str]:
    """The parent's environment without cluster or backend settings: each arm sets its own backend."""
    drop = ("TF_CONFIG", "KERAS_BACKEND", "XLA_FLAGS")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("SLURM_", "TFSCALE_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return env


def run_arm(arm: str, worker_args: list[str], retries: list[str]) -> dict:
    """One arm in a fresh process; a run that XLA aborted in a collective is retried once (noted in `retries`)."""
    for attempt in range(2):
        proc = subprocess.run([sys.executable, WORKER, arm, *worker_args], env=child_env(), capture_output=True,
                              text=True, timeout=1800)
        for line in proc.stdout.splitlines():
            if line.startswith("BENCH "):
                return json.loads(line[len("BENCH "):])
        if attempt == 0 and RENDEZVOUS_ABORT in proc.stderr:
            retries.append(arm)
            continue
        raise RuntimeError(f"arm {arm} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def ratio(rounds: list[dict], mine: str, other: str, target: float | None) -> dict:
    """mine / other in examples/s (wall time), and in CPU time per step (other / mine: higher is better too)."""
    per_round = [r[mine]["examples_per_s"] / r[other]["examples_per_s"] for r in rounds]
    medians = {a: statistics.median(r[a]["examples_per_s"] for r in rounds) for a in (mine, other)}
    cpu = [r[other]["cpu_ms_per_step"] / r[mine]["cpu_ms_per_step"] for r in rounds]
    figure = {"median_of_round_ratios": round(statistics.median(per_round), 4),
              "ratio_of_medians": round(medians[mine] / medians[other], 4),
              "round_ratios": [round(x, 4) for x in per_round],
              "cpu_time_per_step_ratio_median": round(statistics.median(cpu), 4),
              "cpu_time_round_ratios": [round(x, 4) for x in cpu]}
    if target is not None:
        figure.update(target=target, met=figure["median_of_round_ratios"] >= target)
    return figure


def table(report: dict) -> str:
    lines = [f"{'arm':<14}{'examples/s (median)':>21}{'step ms':>10}{'CPU ms/step':>13}   examples/s per round"]
    for arm, row in report["arms"].items():
        lines.append(f"{arm:<14}{row['examples_per_s_median']:>21.1f}{row['step_ms_median']:>10.2f}"
                     f"{row['cpu_ms_per_step_median']:>13.2f}   " + " ".join(f"{x:.0f}" for x in row["examples_per_s"]))
    for name, figure in report["ratios"].items():
        target = f" (target >= {figure['target']})" if "target" in figure else ""
        lines.append(f"{name}: {figure['median_of_round_ratios']:.3f} in examples/s{target}, "
                     f"{figure['cpu_time_per_step_ratio_median']:.3f} in CPU time per step")
    return "\n".join(lines)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--global-batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per process, after a warm-up epoch")
    parser.add_argument("--image", type=int, default=16)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--quick", action="store_true", help="one round of tiny runs (a smoke test)")
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.epochs, args.image = 1, 4, 1, 8
    arms = tuple(args.arms.split(","))
    worker_args = ["--global-batch", str(args.global_batch), "--steps", str(args.steps), "--epochs",
                   str(args.epochs), "--image", str(args.image)]
    load_before = os.getloadavg()[0]
    rounds, retries = [], []
    for r in range(args.rounds):
        order = arms[r % len(arms):] + arms[:r % len(arms)]
        rounds.append({arm: run_arm(arm, worker_args, retries) for arm in order})
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{a} {rounds[-1][a]['examples_per_s']:.0f}/s"
                                                           for a in order), file=sys.stderr, flush=True)
    report = {
        "benchmark": "bench_jax", "rounds": args.rounds, "global_batch": args.global_batch, "steps": args.steps,
        "timed_epochs": args.epochs, "image": args.image, "replicas": 2, "cpus": os.cpu_count(),
        "machine": platform.machine(), "python": platform.python_version(),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "retried_after_collective_abort": retries,
        "arms": {arm: {"examples_per_s": [round(r[arm]["examples_per_s"], 1) for r in rounds],
                       "examples_per_s_median": round(statistics.median(r[arm]["examples_per_s"] for r in rounds), 1),
                       "step_ms_median": round(statistics.median(r[arm]["step_ms"] for r in rounds), 3),
                       "cpu_ms_per_step_median": round(statistics.median(r[arm]["cpu_ms_per_step"] for r in rounds), 3),
                       "process_cpu_s_median": statistics.median(r[arm]["process_cpu_s"] for r in rounds)}
                 for arm in arms},
        "ratios": {name: ratio(rounds, mine, other, target) for name, (mine, other, target) in RATIOS.items()
                   if mine in arms and other in arms},
    }
    print(table(report), file=sys.stderr)
    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
