"""`tfscale info [--json]`: versions, devices, the cluster found, the strategy auto picks and why."""

from __future__ import annotations

import json

from tfscale.cli.table import render


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="versions, devices, detected cluster, and the strategy auto picks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--replicas", type=int, default=None, help="CPU replicas to assume for auto's choice")
    p.set_defaults(func=run)


def run(args) -> int:
    from tfscale.recipes.info import collect

    report = collect(replicas=args.replicas)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print("tfscale " + report["versions"]["tfscale"])
    print(render(["package", "version"], sorted(report["versions"].items())))
    print()
    print(render(["device", "type"], [(d["name"], d["type"]) for d in report["devices"]]))
    print()
    topo = report["topology"]
    print(f"cluster: {topo['manager']}, {topo['task_type']} {topo['task_index']} of {topo['num_workers']} "
          f"worker(s), accelerator {topo['accelerator']}")
    for reason in topo["reasons"]:
        print(f"  - {reason}")
    print(f"auto picks: {report['auto']['strategy']} ({report['auto']['reason']})")
    print()
    print(render(["strategy", "description"], [(s["name"], s["description"]) for s in report["strategies"]]))
    return 0
