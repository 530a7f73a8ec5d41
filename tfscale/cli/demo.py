"""`tfscale demo [--replicas N]`: the main job on real bundled data: train under auto, export every TFLite, report."""

from __future__ import annotations

import os
import time


def add_parser(subparsers) -> None:
    from tfscale.cli import command
    from tfscale.recipes.demo import DEFAULT_OUT, EPOCHS

    p = command(subparsers, "demo", help="train a conv net on bundled digits under auto, export every TFLite variant",
                description="Train a small conv net on scikit-learn's 1,797 handwritten digits under Scale.auto() "
                            "(one CPU, N CPU replicas, GPUs, or the workers of `tfscale launch`), then write the "
                            "float32, dynamic, float16 and int8 TFLite files, validate each with LiteRT, and print "
                            "a table with the recommended one; report.json and report.png go beside them. Files "
                            "in the output folder are replaced. Under `tfscale launch` only the chief exports "
                            "and prints.",
                examples=["tfscale demo", "tfscale demo --replicas 2 --epochs 4 --out /tmp/demo",
                          "tfscale launch -n 2 -- tfscale demo"])
    p.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="replicas per worker: N logical CPU devices when there is no GPU (default: what auto finds)")
    p.add_argument("--epochs", type=int, default=EPOCHS, metavar="E", help="training epochs")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help="export folder")
    p.add_argument("--no-export", action="store_true", help="train and evaluate only")
    p.add_argument("--progress", action="store_true", help="show Keras' progress bar while training")
    p.set_defaults(func=run)


def run(args) -> int:
    from tfscale.recipes.demo import run_demo

    result = run_demo(replicas=args.replicas, epochs=args.epochs, out_dir=args.out, export=not args.no_export,
                      verbose=1 if args.progress else 0)
    if result.scale.is_chief:
        print("\n".join(summary(result)))
    return 0


def summary(result, started: float | None = None) -> list[str]:
    """The lines the chief prints: what ran where, how fast, how accurate, and what was written.

    Args:
        result: the `DemoResult`.
        started: `time.monotonic()` when the process started (default: when the `tfscale` command did), so the
            total includes loading TensorFlow.
    """
    from tfscale.cli import STARTED
    from tfscale.scale.throughput import describe

    fit, scale = result.fit, result.scale
    plan = fit.batch
    lines = [f"tfscale demo on {scale!r}: {scale.reason}",
             f"batch {plan.global_batch_size} ({plan.per_replica_batch_size} per replica), peak learning rate "
             f"{fit.learning_rate:.3g}, precision {fit.precision}",
             f"trained {len(fit.history.epoch)} epoch(s) in {result.seconds['train']:.1f} s"
             + (f"; last {describe(fit.throughput)}" if fit.throughput else ""),
             f"test accuracy: {100 * result.test_accuracy:.2f} % on {result.test_examples} held-out digits"]
    if result.report is not None:
        lines += ["", result.report.table(), ""]
        written = [os.path.basename(p) for p in result.files.values()]
        folder = os.path.dirname(result.files["report_json"])
        lines.append(f"wrote {folder}/: {', '.join(written)}")
    total = time.monotonic() - (STARTED if started is None else started)
    seconds = result.seconds
    start_up = max(0.0, total - seconds["total"])
    lines.append(f"done in {total:.1f} s: start-up (loading TensorFlow) {start_up:.1f} s, training "
                 f"{seconds['train']:.1f} s, export {seconds['export']:.1f} s")
    return lines
