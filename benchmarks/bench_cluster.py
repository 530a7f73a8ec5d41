"""Benchmark: 2 hosts x 1 worker over a network against 2 workers on 127.0.0.1, on one machine.

The hosts are network namespaces joined by a bridge (tests/cluster/netns.py: each has its own address on a
private /24, its own loopback and ports), so the "cluster" arm's gradients cross veth pairs and a bridge, the
kernel's path for a real NIC, while the "loopback" arm's stay on 127.0.0.1. Both arms train the model of
bench_launch.py (benchmarks/_launch_worker.py: Keras 3 `fit` under `Scale.auto()`, global examples/s over timed
steps after a warm-up) with the same settings: 1 thread per worker, each worker bound to its own core (the
cluster arm's launchers are pinned to one core each, so `tfscale launch -n 1 --threads 1` binds its worker there),
global batch 2B. The arms alternate, in fresh processes, for --rounds rounds (the order flips every round).

JAX arms (``--backends`` includes jax, the default): the same model on the JAX engine (`tfscale launch --backend
jax`, benchmarks/_jax_cluster_worker.py, NumPy input), 2 hosts x 1 process ("jax_cluster": JAX's coordinator and
its CPU collectives, gloo, cross the bridge, gloo at each worker's own address) against 2 processes on 127.0.0.1
("jax_loopback"); they alternate with the TensorFlow arms in the same rounds.

Ratios of medians (and medians of per-round ratios): cluster / loopback examples/s, and jax_cluster / jax_loopback
(targets >= 0.95).
After training, each run's workers also time --allreduce all-reduces of tensors shaped like the model's gradients,
alone (no compute), batched as the optimizer's are: "allreduce_ms_per_step" is the median over rounds of each
run's median, what one step's gradient all-reduce costs across hosts and on loopback.

Needs root (network namespaces). Usage: python benchmarks/bench_cluster.py [--rounds 5] [--batch 32] [--steps 32]
[--cpus 0,1] [--backends tensorflow,jax]. Synchronous workers suffer from other load: run it on a quiet machine
(load averages are reported).
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
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_launch import WORKER, _env, _parse, _ratio, two_workers  # noqa: E402
from tests.cluster import netns  # noqa: E402

TARGETS = {"cluster_vs_loopback": 0.95, "jax_cluster_vs_jax_loopback": 0.95}
PORT = 7100
JAX_WORKER = str(Path(__file__).resolve().parent / "_jax_cluster_worker.py")
BACKEND_ARMS = {"tensorflow": ["loopback", "cluster"], "jax": ["jax_loopback", "jax_cluster"]}


def cluster(hs: list, cores: list[int], global_batch: int, worker_args: list[str], backend: str = "tensorflow",
            worker: str = WORKER) -> dict:
    """`tfscale launch -n 1 --threads 1 --nnodes 2` in each host, the launcher of host i pinned to cores[i]."""
    hosts = ",".join(f"{h.addr}:{PORT}" for h in hs)
    runs = [h.popen(["taskset", "-c", str(cores[h.index]), sys.executable, "-m", "tfscale", "launch", "-n", "1",
                     "--threads", "1", "--backend", backend, "--nnodes", "2", "--node-rank", str(h.index),
                     "--hosts", hosts, "--timeout", "900", "--", sys.executable, worker, "--global-batch",
                     str(global_batch), *worker_args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True)
            for h in hs]
    outputs = [p.communicate(timeout=960)[0] for p in runs]
    for p, out in zip(runs, outputs):
        if p.returncode:
            raise RuntimeError(f"the cluster arm failed:\n{out[-3000:]}")
    return _parse(outputs[0])


def jax_loopback(global_batch: int, worker_args: list[str]) -> dict:
    """`tfscale launch -n 2 --threads 1 --backend jax` on 127.0.0.1, through the launcher's Python API."""
    from tfscale.cluster.launch.launcher import LaunchOptions, run

    saved = dict(os.environ)
    output = io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(_env())
        run([sys.executable, JAX_WORKER, "--global-batch", str(global_batch), *worker_args],
            LaunchOptions(workers=2, threads=1, timeout=900, backend="jax"), output=output)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return _parse(output.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32, help="B: each worker's batch (global 2B)")
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--allreduce", type=int, default=50, help="timed all-reduces per run")
    parser.add_argument("--cpus", default="0,1", help="the two cores, one per worker")
    parser.add_argument("--backends", default="tensorflow,jax", help="the engines whose arms run")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in BACKEND_ARMS for b in backends):
        sys.exit(f"bench_cluster: --backends {args.backends!r}: give some of {', '.join(BACKEND_ARMS)}")
    reason = netns.skip_reason()
    if reason:
        sys.exit(f"bench_cluster: {reason}")
    cores = [int(c) for c in args.cpus.split(",")]
    if len(cores) != 2:
        sys.exit("bench_cluster: --cpus names two cores, one per worker")
    os.sched_setaffinity(0, set(cores))  # the loopback arm's launcher binds its 2 workers to these
    worker_args = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--allreduce", str(args.allreduce)]
    global_batch = 2 * args.batch
    names = [name for backend in backends for name in BACKEND_ARMS[backend]]
    jax_args = ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    measured = {name: [] for name in names}
    load_before = os.getloadavg()
    started = time.time()
    with netns.hosts(2) as hs:
        table = {"loopback": lambda: two_workers(global_batch, worker_args),
                 "cluster": lambda: cluster(hs, cores, global_batch, worker_args),
                 "jax_loopback": lambda: jax_loopback(global_batch, jax_args),
                 "jax_cluster": lambda: cluster(hs, cores, global_batch, jax_args, "jax", JAX_WORKER)}
        for r in range(args.rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                result = table[name]()
                measured[name].append(result)
                allreduce_ms = "" if result["allreduce_ms"] is None else f", all-reduce {result['allreduce_ms']:.2f} ms"
                print(f"round {r}: {name}: {result['examples_per_s']:.1f} examples/s{allreduce_ms}", file=sys.stderr)
    throughput = {n: [m["examples_per_s"] for m in v] for n, v in measured.items()}
    allreduce = {n: [m["allreduce_ms"] for m in v] for n, v in measured.items() if n in ("loopback", "cluster")}
    ratios = {}
    if "tensorflow" in backends:
        ratios.update({"cluster_vs_loopback": _ratio(throughput, "cluster", "loopback"),
                       "allreduce_cluster_vs_loopback": round(statistics.median(allreduce["cluster"])
                                                              / statistics.median(allreduce["loopback"]), 3)})
    if "jax" in backends:
        ratios["jax_cluster_vs_jax_loopback"] = _ratio(throughput, "jax_cluster", "jax_loopback")
    targets = {k: t for k, t in TARGETS.items() if k in ratios}
    report = {
        "benchmark": "cluster", "rounds": args.rounds, "seconds": round(time.time() - started),
        "settings": {"batch_per_worker": args.batch, "global_batch": global_batch, "steps": args.steps,
                     "warmup": args.warmup, "allreduce_calls": args.allreduce, "cpus": cores,
                     "model": "conv32-conv64-pool-conv64-gap-dense10 on 32x32x3, Adam, accuracy",
                     "gradient_bytes": measured[names[-1]][0]["gradient_bytes"], "backends": backends,
                     "network": "2 network namespaces, veth pairs on a bridge in a third namespace (no netem)",
                     "python": platform.python_version()},
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "examples_per_s": {n: {"median": round(statistics.median(v), 1), "best": round(max(v), 1),
                               "all": [round(x, 1) for x in v]} for n, v in throughput.items()},
        "step_ms_median": {n: round(statistics.median(m["step_ms"] for m in v), 1) for n, v in measured.items()},
        "allreduce_ms_per_step": {n: {"median": round(statistics.median(v), 3), "all": [round(x, 3) for x in v]}
                                  for n, v in allreduce.items()},
        "ratios": ratios,
        "targets": targets,
    }
    report["targets_met"] = {k: report["ratios"][k]["ratio_of_medians"] >= t for k, t in targets.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
