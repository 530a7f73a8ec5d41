"""`tfscale tune run.toml [--workers N] [--set k=v]`: a keras-tuner search under a strategy, across tuners."""

from __future__ import annotations

import os
import sys

from tfscale.table import render


def add_parser(subparsers) -> None:
    from tfscale.cli import command

    p = command(subparsers, "tune", help="keras-tuner search under a strategy, optionally across tuner processes",
                description="Search hyperparameters as the run file says (keras-tuner: random, bayesian or "
                            "hyperband), each trial trained under the run file's strategy with the same global "
                            "batch. Prints every trial's score and the best one; results go to the project folder "
                            "(tfscale_results.json, tfscale_scores.png). Running the same command again continues "
                            "the search: a trial a killed run left unfinished runs again, a finished one never does.",
                examples=["tfscale tune examples/tune/digits.toml",
                          "tfscale tune examples/tune/digits.toml --workers 2 --set tune.max_trials=4"])
    p.add_argument("run_file", metavar="RUN.toml",
                   help="a run file: model, [data] and strategy as in a `tfscale train` file, then [tune]")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="run a chief oracle and N tuner processes on this machine (default: one process)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the run file, e.g. --set tune.max_trials=4 (repeatable)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="with --workers: stop every process after S seconds (default: no limit)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.workers:
        from tfscale.tuning.workers import run_workers

        result, dead = run_workers(args.run_file, args.overrides, args.workers, verbose=args.verbose,
                                   timeout=args.timeout)
        for tuner in dead:
            print(f"tfscale tune: {tuner.describe()}; the search went on without it. Its last lines:",
                  *(f"  [{tuner.name}] {line}" for line in tuner.tail[-5:]), sep="\n", file=sys.stderr)
    else:
        from tfscale.tuning.run import run as run_search
        from tfscale.tuning.workers import CONTROL_ENV

        result = run_search(args.run_file, args.overrides)
        if result.role != "chief" or os.environ.get(CONTROL_ENV):  # the launching `--workers` process reports
            return 0
    report(result)
    return 0


def report(result) -> None:
    """Prints the results table, the best trial and where everything went."""
    from tfscale.tuning.results import HEADERS, RESULTS_JSON, SCORES_PNG

    print(render(HEADERS, result.table_rows()))
    best = result.best
    if best is None:
        print("no trial completed")
    else:
        print(f"best: trial {best.trial}, {result.objective} = {best.score:.4f} "
              f"({result.info.get('strategy')}, {result.info.get('num_replicas')} replica(s), "
              f"global batch {result.info.get('global_batch_size')})")
    for row in result.unfinished:
        print(f"trial {row.trial} did not finish: run the same command again to finish it")
    print(f"results: {result.project_dir}/{RESULTS_JSON}, plot: {result.project_dir}/{SCORES_PNG}")
    if result.best_model_path:
        print(f"best model: {result.best_model_path}")
    if isinstance(result.export, str):
        print(f"export: {result.export}")
    elif hasattr(result.export, "table"):  # every TFLite variant: tfscale.export's report
        print(result.export.table())
    elif isinstance(result.export, dict):  # the same report, read back from the results JSON
        print(f"export: every TFLite variant; recommended: {result.export.get('recommended')}")
