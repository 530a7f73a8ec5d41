"""`tfscale quantize MODEL --eval DATA`: every TFLite variant, validated, tabulated, the best one recommended."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("quantize", help="write and compare every TFLite variant of a .keras model")
    p.add_argument("model", help="a .keras model file")
    p.add_argument("--eval", required=True,
                   help="evaluation data: an .npz with arrays x and y (or a folder with x.npy, y.npy)")
    p.add_argument("--modes", default="float32,dynamic,float16,int8,int16x8",
                   help="comma-separated: float32,dynamic,float16,int8,int16x8,qat,prune,keras_int8")
    p.add_argument("--max-drop", type=float, default=0.5, help="accuracy budget in percentage points")
    p.add_argument("--out", default=None, help="output folder (default: saved_models/<model name>)")
    p.add_argument("--calibration", default=None, help="calibration data (.npz); default: the --eval inputs")
    p.add_argument("--train", default=None, help="labelled training data (.npz) for qat and prune")
    p.add_argument("--num-calibration-samples", type=int, default=200, help="calibration examples to draw")
    p.add_argument("--int8-io", default="int8", choices=("int8", "uint8", "float32"), help="int8 input/output type")
    p.add_argument("--latency-runs", type=int, default=200, help="timed runs per latency figure")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in the output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    from tfscale import export
    from tfscale.cli.export import load_model
    from tfscale.errors import ExportError
    from tfscale.export.files import check_target
    from tfscale.export.samples import load_arrays

    out = Path(args.out) if args.out else Path("saved_models") / Path(args.model).stem
    check_target(out / "report.png", overwrite=args.overwrite)
    model = load_model(args.model)
    calibration = load_arrays(args.calibration)[0] if args.calibration else None
    train = load_arrays(args.train) if args.train else None
    report = export.quantize_all(model, out, eval_data=load_arrays(args.eval), calibration=calibration,
                                 modes=args.modes, max_drop=args.max_drop, overwrite=args.overwrite,
                                 progress=not args.no_progress, num_calibration_samples=args.num_calibration_samples,
                                 int8_io=args.int8_io, train_data=train, latency_runs=args.latency_runs)
    try:
        report.plot(out / "report.png", overwrite=args.overwrite)
    except ExportError as e:
        print(f"tfscale quantize: no plot: {e}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
        print(f"files in {out}/ (report.json, report.png)")
    return 0
