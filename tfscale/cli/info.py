"""`tfscale info [--json] [--backend B] [--model M]`: versions, devices, cluster, auto's choice and why, presets.

With ``--model module:function`` it also builds that model under the strategy
asked for (``--strategy``, ``--mesh``, ``--layout``) and shows where each
variable lives: its sharding and bytes per device.
"""

from __future__ import annotations

import argparse
import json

from tfscale.table import render
from tfscale.vocabulary import BACKENDS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "info", help="versions, devices, detected cluster, and the strategy auto picks",
        description="Show versions, devices, the cluster found, the strategy `auto` picks here and why, and every "
                    "strategy of both engines (TensorFlow: tf.distribute; JAX: keras.distribution), and the strategy "
                    "presets shipped with tfscale.",
        epilog="examples:\n  tfscale info\n  tfscale info --backend jax --replicas 2\n"
               "  tfscale info --backend jax --replicas 2 --strategy model_parallel --mesh 1,2 --layout auto "
               "--model examples/model_parallel/train.py:build_model",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--replicas", type=int, default=None, help="CPU replicas to assume (default: 1)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="the Keras backend to report on (default: KERAS_BACKEND, else tensorflow)")
    model = p.add_argument_group("where a model's variables live")
    model.add_argument("--model", default=None, metavar="MODULE:FUNCTION",
                       help="build this model under --strategy and show each variable's sharding and bytes per device")
    model.add_argument("--strategy", default="auto", help="the strategy to build it under (default: auto)")
    model.add_argument("--mesh", default=None, metavar="D,M", help="(JAX) mesh sizes, e.g. 1,2")
    model.add_argument("--layout", default=None, help='(JAX) "auto", or a JSON table {"regex": [axes]}')
    plan = p.add_argument_group("the memory planner (JAX, model_parallel)")
    plan.add_argument("--device-memory", default=None, metavar="SIZE",
                      help="each device's memory, e.g. 16GiB: bytes per device of --model's parameters, optimizer "
                           "state and activations on every (data, model) mesh, and the smallest model axis that fits")
    plan.add_argument("--batch-size", type=int, default=1, help="the global batch the activations are estimated at")
    plan.add_argument("--sequence-length", type=int, default=None,
                      help="(text models) the length that stands for open sequence dimensions in the estimate")
    plan.add_argument("--optimizer", default="adam", help="the optimizer whose state is counted, where --model's "
                                                          "function returns an uncompiled model (default: adam)")
    p.set_defaults(func=run)


def _options(args) -> dict:
    options = {}
    if args.mesh:
        options["mesh"] = tuple(int(n) for n in args.mesh.split(","))
    if args.layout:
        options["layout"] = args.layout if args.layout == "auto" else json.loads(args.layout)
    return options


def run(args) -> int:
    from tfscale.recipes import info

    info.set_backend(args.backend)
    report = info.collect(replicas=args.replicas, backend=args.backend)
    if args.device_memory and not args.model:
        from tfscale.errors import ConfigError

        raise ConfigError("--device-memory plans a model's memory, and no --model was given", where="tfscale info",
                          fix="add --model MODULE:FUNCTION (a function that returns the Keras model)")
    if args.model and not args.device_memory:  # the planner builds the model once, unsharded, itself
        report["placement"] = info.placement(args.model, args.strategy, replicas=args.replicas,
                                             options=_options(args))
    if args.device_memory:
        report["memory_plan"] = info.memory_plan(
            args.model, devices=args.replicas, layout=_options(args).get("layout", "auto"),
            device_memory=args.device_memory, batch_size=args.batch_size, sequence_length=args.sequence_length,
            optimizer=args.optimizer)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    print(f"tfscale {report['versions']['tfscale']} on Keras' {report['backend']} backend")
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
    print(render(["strategy", "backend", "description"],
                 [(s["name"], s["backend"] + (" (this one)" if s["backend"] == report["backend"] else ""),
                   s["description"]) for s in report["strategies"]]))
    print()
    print(render(["preset", "strategy", "description"],
                 [(p["name"], p["strategy"], p["description"]) for p in report["presets"]]))
    print('presets: ts.Scale.from_preset("NAME"), or strategy = "NAME.toml" in a run file')
    if "placement" in report:
        _print_placement(report["placement"])
    if "memory_plan" in report:
        _print_memory_plan(report["memory_plan"])
    return 0


def _print_placement(described: dict) -> None:
    engine = described["engine"]
    print()
    print(f"{described['strategy']} ({described['backend']}): mesh {engine.get('mesh')}, devices "
          f"{', '.join(engine.get('devices', []))}")
    rows = [(v["path"], "x".join(map(str, v["shape"])) or "scalar", v["sharding"], _kb(v["bytes"]),
             _kb(v["bytes_per_device"])) for v in engine["variables"]]
    rows.append(("total (largest device)", "", "", _kb(engine["bytes"]), _kb(engine["bytes_per_device"])))
    print(render(["variable", "shape", "sharding", "KB", "KB per device"], rows))


def _kb(size: int) -> str:
    return f"{size / 1024:.1f}"


def _print_memory_plan(plan: dict) -> None:
    from tfscale.strategy.jax.planner import human

    print()
    print(f"memory per device on {plan['devices']} device(s), batch {plan['batch_size']} "
          f"(device memory {human(plan['device_memory_bytes'])}):")
    print(render(["mesh", "parameters", "optimizer", "activations (floor)", "total", "fits"],
                 [(", ".join(f"{k}={v}" for k, v in m["mesh"].items()), human(m["parameters_bytes"]),
                   human(m["optimizer_bytes"]), human(m["activation_bytes"]), human(m["total_bytes"]),
                   "yes" if m["total_bytes"] <= plan["device_memory_bytes"] else "no") for m in plan["meshes"]]))
    for note in plan["notes"]:
        print(f"  - {note}")
    mesh = plan["recommended"]
    print(f"recommended: mesh {', '.join(f'{k}={v}' for k, v in mesh.items())} (the smallest model axis that fits): "
          f"tfscale.Scale('model_parallel', mesh=({', '.join(str(v) for v in mesh.values())}), layout=...)")
