"""Skip mode's cost on clean images without a fixed size: `image_folder(..., on_error="skip")` against "raise".

Without `image_size`, skip mode decodes images in parts of 16 all the same (each image held in a one-element
tensor list, so that a part stacks; docs/DESIGN.md, "Bad records"), so that an image that passes the header
checks but will not decode is retried alone, counted and named; raise mode decodes each image in a call of its
own. This measures what that costs on clean data, per set of synthetic images written once to a temporary
folder (random smooth noise, so the codecs have real work):

  png28     28x28 PNGs           jpeg256   256x256 JPEGs
  mixed     PNGs and JPEGs of 100-500 px a side      jpeg1600  1600x1200 JPEGs

Each arm runs in a process of its own, which builds its pipeline once (as Keras' epochs reuse it) and then
reads the whole folder once per round, counted inside TensorFlow (`Dataset.reduce`); the arms alternate
round by round, order reversed every other round, after one warm-up pass each. Figures: CPU microseconds per
image of the arm's process (every thread), wall microseconds per image, the build's CPU seconds, peak RSS;
the ratio skip/raise is the median of the per-round ratios of CPU per image.

    python benchmarks/bench_images_skip.py [--rounds 7] [--sets png28,mixed] [--quick]

Prints one JSON object to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETS = {"png28": (2048, (28, 28), "png"), "jpeg256": (512, (256, 256), "jpg"), "mixed": (384, None, "mix"),
        "jpeg1600": (96, (1200, 1600), "jpg")}
ARMS = ("skip", "raise")


def make(folder: str, name: str, scale: float = 1.0) -> str:
    """Writes the set's images (two classes) under folder/name once; returns that folder."""
    import numpy as np
    import tensorflow as tf

    count, size, kind = SETS[name]
    out = os.path.join(folder, name)
    rng = np.random.default_rng(0)
    for i in range(max(8, int(count * scale))):
        h, w = size or (int(rng.integers(100, 500)), int(rng.integers(100, 500)))
        base = rng.integers(0, 255, (max(2, h // 8), max(2, w // 8), 3)).astype(np.float32)
        image = tf.image.resize(base[None], (h, w))[0] + rng.normal(0, 8, (h, w, 3))
        image = tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8)
        ext = kind if kind != "mix" else ("png", "jpg")[i % 2]
        data = tf.io.encode_png(image) if ext == "png" else tf.io.encode_jpeg(image, quality=90)
        os.makedirs(os.path.join(out, f"c{i % 2}"), exist_ok=True)
        tf.io.write_file(os.path.join(out, f"c{i % 2}", f"{i:05d}.{ext}"), data)
    return out


def worker() -> None:
    """One arm's process: a JSON command per stdin line, a JSON answer per line."""
    import tensorflow as tf

    import tfscale as ts

    built = {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        key = (cmd["folder"], cmd["mode"])
        if key not in built:
            started = time.process_time()
            pipe = ts.data.image_folder(cmd["folder"], on_error=cmd["mode"])
            built[key] = pipe, pipe.dataset(), time.process_time() - started
        pipe, ds, build_s = built[key]
        cpu, wall = time.process_time(), time.perf_counter()
        n = int(ds.reduce(tf.constant(0, tf.int64), lambda count, *element: count + 1))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(json.dumps({"images": n, "cpu_us": cpu / n * 1e6, "wall_us": wall / n * 1e6,
                          "skipped": dict(pipe.skipped), "build_cpu_s": build_s,
                          "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def measure_set(folder: str, rounds: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = {}
    try:
        for arm in ARMS:
            p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
            json.loads(p.stdout.readline())
            procs[arm] = p

        def run(arm: str) -> dict:
            p = procs[arm]
            p.stdin.write(json.dumps({"folder": folder, "mode": arm}) + "\n")
            p.stdin.flush()
            answer = p.stdout.readline()
            if not answer:
                raise SystemExit(f"bench_images_skip: the {arm} arm's process ended (exit {p.wait()})")
            return json.loads(answer)

        for arm in ARMS:
            run(arm)  # warm-up: builds the pipeline
        seen = {arm: [] for arm in ARMS}
        for r in range(rounds):
            for arm in (ARMS if r % 2 == 0 else ARMS[::-1]):
                seen[arm].append(run(arm))
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    counts = {arm: {x["images"] for x in v} for arm, v in seen.items()}
    if counts["skip"] != counts["raise"] or len(counts["skip"]) != 1:
        raise SystemExit(f"bench_images_skip: the arms read different numbers of images: {counts}")
    med = lambda arm, k: statistics.median(x[k] for x in seen[arm])  # noqa: E731
    return {
        "images": seen["skip"][0]["images"],
        "skipped": {arm: seen[arm][0]["skipped"] for arm in ARMS},
        "cpu_us_per_image": {arm: round(med(arm, "cpu_us"), 1) for arm in ARMS},
        "cpu_rounds": {arm: [round(x["cpu_us"], 1) for x in seen[arm]] for arm in ARMS},
        "wall_us_per_image": {arm: round(med(arm, "wall_us"), 1) for arm in ARMS},
        "build_cpu_s": {arm: round(seen[arm][0]["build_cpu_s"], 2) for arm in ARMS},
        "maxrss_mb": {arm: round(seen[arm][-1]["maxrss_mb"]) for arm in ARMS},
        "skip_over_raise_cpu": round(statistics.median(s["cpu_us"] / r["cpu_us"]
                                                       for s, r in zip(seen["skip"], seen["raise"])), 3),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds, 1/16 of the images")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker()
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        parser.error(f"unknown set(s) {unknown}: choose from {', '.join(SETS)}")
    rounds, scale = (2, 1 / 16) if args.quick else (args.rounds, 1.0)
    if rounds < 5 and not args.quick:
        parser.error("--rounds must be at least 5 (a median of 5 or more)")
    folder = tempfile.mkdtemp(prefix="bench-images-skip-")
    started, load = time.time(), os.getloadavg()[0]
    try:
        report = {"benchmark": "images_skip", "rounds": rounds, "cpus": os.cpu_count(), "sets": {}}
        for name in sets:
            report["sets"][name] = measure_set(make(folder, name, scale), rounds)
            print(f"{name}: skip/raise CPU per image {report['sets'][name]['skip_over_raise_cpu']}", file=sys.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report["seconds"] = round(time.time() - started)
    report["load_average_before_after"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
