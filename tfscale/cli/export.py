"""`tfscale export MODEL --format saved_model|keras|tflite --out PATH`: one file (or SavedModel folder)."""

from __future__ import annotations

import sys

FORMATS = ("saved_model", "keras", "tflite")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a SavedModel, .keras or TFLite file from a .keras model")
    p.add_argument("model", help="a .keras model file")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    p.add_argument("--out", required=True, help="the file (or SavedModel folder) to write")
    p.add_argument("--quantize", default=None,
                   help="tflite: dynamic, float16, int8 or int16x8; keras: int8, int4 or float8 (Keras' own)")
    p.add_argument("--calibration", default=None, help="int8/int16x8 calibration data: .npz with x (and y)")
    p.add_argument("--num-calibration-samples", type=int, default=200, help="calibration examples to draw")
    p.add_argument("--int8-io", default="int8", choices=("int8", "uint8", "float32"), help="int8 input/output type")
    p.add_argument("--allow-flex", action="store_true", help="allow SELECT_TF_OPS (flex), which mobile runtimes lack")
    p.add_argument("--eval", default=None, help="tflite: validate on this .npz (x, y) and print the figures")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.set_defaults(func=run)


def load_model(path: str):
    """The Keras model in `path`; a ConfigError when it cannot be read."""
    import keras

    from tfscale.errors import ConfigError

    try:
        return keras.models.load_model(path)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"cannot load a Keras model from {path}: {e}", where=path,
                          fix="give a .keras file written by model.save (custom layers must be registered)") from e


def run(args) -> int:
    from tfscale import export
    from tfscale.cli.table import render
    from tfscale.errors import ConfigError
    from tfscale.export.samples import load_arrays

    model = load_model(args.model)
    if args.format == "saved_model":
        if args.quantize:
            raise ConfigError("--quantize applies to tflite and keras only", where="--quantize",
                              fix="drop --quantize, or use --format tflite")
        path = export.saved_model(model, args.out, overwrite=args.overwrite)
    elif args.format == "keras":
        path = (export.keras_quantized(model, args.out, mode=args.quantize, overwrite=args.overwrite) if args.quantize
                else export.keras(model, args.out, overwrite=args.overwrite))
    else:
        calibration = load_arrays(args.calibration)[0] if args.calibration else None
        path = export.tflite(model, args.out, quantize=args.quantize, calibration=calibration,
                             num_calibration_samples=args.num_calibration_samples, allow_flex=args.allow_flex,
                             int8_io=args.int8_io, overwrite=args.overwrite)
    print(f"wrote {path}")
    if args.eval:
        if args.format != "tflite":
            print("--eval applies to --format tflite only; skipped", file=sys.stderr)
            return 0
        row = export.validate(path, model, load_arrays(args.eval))
        keys = ("size_bytes", "metric", "value", "keras_value", "drop", "agreement", "max_abs_diff",
                "p50_us_1t", "p90_us_1t", "p50_us_all", "p50_us_1t_no_xnnpack", "xnnpack")
        print(render(["figure", "value"], [(k, row[k]) for k in keys]))
    return 0
