"""`tfscale demo [--replicas N]`: the main job on real bundled data: train under auto, export every TFLite, report."""

from __future__ import annotations

import os


def add_parser(subparsers) -> None:
    from tfscale.recipes.demo import DEFAULT_OUT, EPOCHS

    p = subparsers.add_parser("demo", help="train a conv net on bundled digits under auto, export every TFLite variant",
                              description="Train a small conv net on scikit-learn's digits under Scale.auto(), then "
                                          "export float32/dynamic/float16/int8 TFLite with a report. Works under "
                                          "`tfscale launch -n 2 -- tfscale demo` (the chief exports and prints).")
    p.add_argument("--replicas", type=int, default=None, metavar="N",
                   help="replicas per worker (N logical CPU devices when there is no GPU)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help=f"training epochs (default {EPOCHS})")
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR", help=f"export folder (default {DEFAULT_OUT})")
    p.add_argument("--no-export", action="store_true", help="train and evaluate only")
    p.add_argument("--progress", action="store_true", help="Keras progress bar while training")
    p.set_defaults(func=run)


def run(args) -> int:
    from tfscale.recipes.demo import run_demo

    result = run_demo(replicas=args.replicas, epochs=args.epochs, out_dir=args.out, export=not args.no_export,
                      verbose=1 if args.progress else 0)
    if result.scale.is_chief:
        print("\n".join(summary(result)))
    return 0


def summary(result) -> list[str]:
    """The lines the chief prints: what ran where, how fast, how accurate, and what was written."""
    from tfscale.train.throughput import describe

    fit, scale = result.fit, result.scale
    plan = fit.batch
    lines = [f"tfscale demo on {scale!r}: {scale.reason}",
             f"batch {plan.global_batch_size} ({plan.per_replica_batch_size} per replica), peak learning rate "
             f"{fit.learning_rate:.3g}, precision {fit.precision}",
             f"trained {len(fit.history.epoch)} epoch(s) in {result.seconds['train']:.1f} s"
             + (f"; last {describe(fit.throughput)}" if fit.throughput else ""),
             f"test accuracy: {result.test_accuracy:.4f} on {result.test_examples} held-out digits"]
    if result.report is not None:
        lines += ["", result.report.table(), ""]
        written = [os.path.basename(p) for k, p in result.files.items()]
        folder = os.path.dirname(result.files["report_json"])
        lines.append(f"wrote {folder}/: {', '.join(written)}")
    lines.append(f"done in {result.seconds['total']:.1f} s")
    return lines
