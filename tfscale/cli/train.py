"""`tfscale train run.toml [--set key=value ...]`: config-driven training and export."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    from tfscale.cli import command

    p = command(subparsers, "train", help="train from a run file (model as module:function, data, strategy, export)",
                description="Train the model a run file names, on its data, under its strategy, then export every "
                            "TFLite variant it asks for with a report. Every key is checked: a typo or a wrong type "
                            "is an error naming the key. With train.checkpoint_dir set, running the same command "
                            "again resumes from the last checkpoint (a finished run trains nothing and says so).",
                examples=["tfscale train examples/train/digits.toml --set train.epochs=3",
                          "tfscale train examples/train/digits.toml --set strategy=laptop.toml   # a shipped preset "
                          "(tfscale info lists them)",
                          "tfscale launch -n 2 -- tfscale train examples/train/digits.toml"])
    p.add_argument("config", metavar="RUN.toml", help="the run file (see examples/train/digits.toml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key, e.g. --set train.epochs=3 (repeatable)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tfscale.table import render
    from tfscale.recipes.train import run_training
    from tfscale.scale.throughput import describe

    done = run_training(args.config, args.overrides)
    fit = done.fit
    if not fit.scale.is_chief:
        return 0
    plan = fit.batch
    print(f"trained under {fit.scale!r}: {fit.scale.reason}")
    print(f"batch {plan.global_batch_size} ({plan.per_replica_batch_size} per replica, {plan.effective_batch_size} "
          f"per update), peak learning rate {fit.learning_rate:.3g}, precision {fit.precision}"
          + (f", resumed after epoch {fit.resumed_from_epoch}" if fit.resumed_from_epoch else ""))
    note = done.nothing_trained()
    if note:
        print(note)
    elif fit.throughput:
        print(describe(fit.throughput))
    if done.metrics:
        print(render(["metric", "checkpoint's model" if note else "last epoch"],
                     [(k, f"{v:.4f}") for k, v in sorted(done.metrics.items())]))
    if done.report is not None:
        print()
        print(done.report.table())
        print("wrote: " + ", ".join(done.files.values()))
    return 0
