"""`tfscale quantize MODEL --eval DATA`: every TFLite variant, validated, tabulated, the best one recommended."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ALL_MODES = ("float32,dynamic,float16,int8,int16x8,qat,prune,keras_int8,keras_int4,keras_float8,keras_gptq,keras_awq,"
             "auto,keras_auto")


def add_parser(subparsers) -> None:
    from tfscale.cli import command
    from tfscale.cli.export import add_unsafe_option

    p = command(subparsers, "quantize",
                help="write and compare every TFLite and Keras-native variant of a .keras model",
                description="Convert a .keras model to every TFLite variant asked for, run each with LiteRT on the "
                            "evaluation data, and print size, accuracy drop, agreement with the Keras model and "
                            "latency per file, with the recommended one and the rule that picked it. keras_* modes "
                            "are Keras' own quantization (a .keras model to serve inside Keras, sized by its "
                            "weights, timed with predict_on_batch at batch 1 and 32), with their own "
                            "recommendation. Writes <mode>.tflite, <mode>.keras, report.json and report.png into "
                            "the output folder; existing files are "
                            "left untouched unless --overwrite. A model holding Python code (a Lambda layer) is "
                            "refused unless --unsafe-deserialization.",
                examples=["tfscale quantize model.keras --eval test.npz",
                          "tfscale quantize model.keras --eval test.npz --calibration train.npz "
                          "--modes int8,dynamic --max-drop 1 --out saved_models/m",
                          "tfscale quantize model.keras --eval test.npz --calibration train.npz "
                          "--modes int8,keras_int8,keras_int4,keras_gptq"])
    p.add_argument("model", help="a .keras model file")
    p.add_argument("--eval", required=True, metavar="DATA",
                   help="evaluation data: an .npz with arrays x and y (or a folder with x.npy, y.npy), a folder "
                        "written by `tfscale data convert`, or an image folder (images resized to the model's "
                        "input and scaled to [0, 1])")
    p.add_argument("--modes", default="float32,dynamic,float16,int8,int16x8",
                   help=f"comma-separated, any of {ALL_MODES} (qat and prune need --train; keras_gptq and "
                        "keras_awq need --calibration)")
    p.add_argument("--max-drop", type=float, default=0.5, metavar="PP",
                   help="accuracy budget: the largest drop in percentage points (percent for error metrics)")
    p.add_argument("--budget", type=budget, default=None, metavar="PP",
                   help="mixed precision to this accuracy budget, e.g. 0.5pp: adds the mode auto (int8 with the "
                        "fewest layers kept in float that meets it; keras_auto too where --modes has a Keras mode), "
                        "and is the budget every variant is judged by (instead of --max-drop)")
    p.add_argument("--layers", action="store_true",
                   help="also print the per-layer report: each layer of each variant, quantized or kept in float "
                        "and why, and its error against the float model (SNR in dB), worst first")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: saved_models/<model name>)")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help="int8/int16x8 calibration data (as --eval); default: the --eval inputs; required by "
                        "keras_gptq and keras_awq")
    p.add_argument("--train", default=None, metavar="DATA", help="labelled training data (.npz) for qat and prune")
    p.add_argument("--num-calibration-samples", type=int, default=200, metavar="N", help="calibration examples")
    p.add_argument("--int8-io", default="int8", choices=("int8", "uint8", "float32"),
                   help="input and output type of the int8 file")
    p.add_argument("--latency-runs", type=int, default=200, metavar="N", help="timed runs per latency figure")
    p.add_argument("--overwrite", action="store_true", help="replace existing files in the output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is none outside a terminal)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    add_unsafe_option(p)
    p.set_defaults(func=run)


def budget(text: str) -> float:
    """--budget's value: percentage points, "0.5pp", "0.5" (or "0.5%" for error metrics); never negative."""
    number = text.strip().lower().removesuffix("pp").removesuffix("%").strip()
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a budget: give percentage points, e.g. 0.5pp") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a budget is a drop of 0 or more, e.g. 0.5pp")
    return value


def _budgeted(args) -> tuple[str, float]:
    """(the modes, the budget): --budget adds auto (and keras_auto beside Keras modes) and replaces --max-drop."""
    if args.budget is None:
        return args.modes, args.max_drop
    if args.max_drop != 0.5 and args.max_drop != args.budget:
        from tfscale.errors import ConfigError

        raise ConfigError(f"--budget {args.budget:g} and --max-drop {args.max_drop:g} disagree",
                          where="tfscale quantize", fix="give one of them (--budget also adds the auto mode)")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    extra = ["auto"] + (["keras_auto"] if any(m.startswith("keras_") for m in modes) else [])
    return ",".join(dict.fromkeys(modes + extra)), args.budget


def run(args) -> int:
    from tfscale import export
    from tfscale.cli.export import load_model
    from tfscale.errors import ExportError
    from tfscale.export.files import check_target
    from tfscale.export.keras_modes import check_calibration, check_version
    from tfscale.export.samples import load_arrays

    modes, max_drop = _budgeted(args)
    out = Path(args.out) if args.out else Path("saved_models") / Path(args.model).stem
    check_target(out / "report.png", overwrite=args.overwrite)
    check_calibration(export.variants.check_modes(args.modes), args.calibration)  # before any work
    check_version(args.model)  # a .keras file of another Keras major version: refused with the fix
    model = load_model(args.model, unsafe_deserialization=args.unsafe_deserialization)
    train = load_arrays(args.train) if args.train else None
    # --eval and --calibration: paths, read by tfscale.export.samples.from_path as the model takes them
    report = export.quantize_all(model, out, eval_data=args.eval, calibration=args.calibration,
                                 modes=modes, max_drop=max_drop, overwrite=args.overwrite,
                                 progress=not args.no_progress, num_calibration_samples=args.num_calibration_samples,
                                 int8_io=args.int8_io, train_data=train, latency_runs=args.latency_runs)
    try:
        report.plot(out / "report.png", overwrite=args.overwrite)
    except ExportError as e:
        print(f"tfscale quantize: no plot: {e}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.table())
        if args.layers:
            print("\n" + report.layers_table())
        print(f"files in {out}/ (report.json, report.png)")
    return 0
