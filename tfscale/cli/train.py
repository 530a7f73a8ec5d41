"""`tfscale train run.toml [--set key=value ...]`: config-driven training and export."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train from a run file (model as module:function, data, strategy, export)",
                              description="Train the model a run file names, under its strategy, and export it. "
                                          "Example: examples/train/digits.toml.")
    p.add_argument("config", metavar="RUN.toml", help="the run file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set train.epochs=3 (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tfscale.cli.table import render
    from tfscale.recipes.train import run_training
    from tfscale.train.throughput import describe

    done = run_training(args.config, args.overrides)
    fit = done.fit
    if not fit.scale.is_chief:
        return 0
    plan = fit.batch
    print(f"trained under {fit.scale!r}: {fit.scale.reason}")
    print(f"batch {plan.global_batch_size} ({plan.per_replica_batch_size} per replica, {plan.effective_batch_size} "
          f"per update), peak learning rate {fit.learning_rate:.3g}, precision {fit.precision}"
          + (f", resumed after epoch {fit.resumed_from_epoch}" if fit.resumed_from_epoch else ""))
    if fit.throughput:
        print(describe(fit.throughput))
    print(render(["metric", "last epoch"], [(k, f"{v:.4f}") for k, v in sorted(done.metrics.items())]))
    if done.report is not None:
        print()
        print(done.report.table())
        print("wrote: " + ", ".join(done.files.values()))
    return 0
