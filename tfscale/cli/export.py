"""`tfscale export MODEL --format saved_model|keras|tflite --out PATH`: one file (or SavedModel folder)."""

from __future__ import annotations

import os
import sys

FORMATS = ("saved_model", "keras", "tflite")


def add_parser(subparsers) -> None:
    from tfscale.cli import command

    p = command(subparsers, "export", help="write a SavedModel, .keras or TFLite file from a .keras model",
                description="Write one file (or SavedModel folder) from a .keras model: a SavedModel, a .keras file "
                            "(optionally Keras' own int8/int4/float8), or a TFLite file with builtin ops only, in "
                            "any post-training mode. With --eval the TFLite file is run with LiteRT and compared "
                            "with the Keras model. An existing file is left untouched unless --overwrite. A model "
                            "holding Python code (a Lambda layer) is refused unless --unsafe-deserialization.",
                examples=["tfscale export model.keras --format tflite --quantize int8 --calibration train.npz "
                          "--out m_int8.tflite --eval test.npz",
                          "tfscale export model.keras --format saved_model --out saved_models/m"])
    p.add_argument("model", help="a .keras model file")
    p.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    p.add_argument("--out", required=True, metavar="PATH", help="the file (or SavedModel folder) to write")
    p.add_argument("--quantize", default=None, metavar="MODE",
                   help="tflite: dynamic, float16, int8 or int16x8; keras: int8, int4 or float8 (Keras' own); "
                        "default: none (float32)")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help="int8/int16x8 calibration data: .npz with x (and y); required for those modes")
    p.add_argument("--num-calibration-samples", type=int, default=200, metavar="N", help="calibration examples")
    p.add_argument("--int8-io", default="int8", choices=("int8", "uint8", "float32"),
                   help="input and output type of an int8 file")
    p.add_argument("--allow-flex", action="store_true", help="allow SELECT_TF_OPS (flex), which mobile runtimes lack")
    p.add_argument("--eval", default=None, metavar="DATA",
                   help="tflite: run the file on this .npz (x, y) and print its figures against the Keras model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    add_unsafe_option(p)
    p.set_defaults(func=run)


def add_unsafe_option(parser) -> None:
    """The opt-in for .keras files holding Python code, which Keras' safe mode refuses."""
    parser.add_argument("--unsafe-deserialization", action="store_true",
                        help="load a model holding Python code (a Lambda layer's function) with Keras' safe mode "
                             "off; the code runs as you, so only for files you trust (default: refused)")


def figures(row: dict) -> list[tuple[str, str]]:
    """`validate`'s row as (figure with its unit, rounded value) pairs for the table `--eval` prints."""
    from tfscale.export.report import drop_unit

    def num(value, spec):
        return "-" if value is None else format(value, spec)

    metric, threads = row.get("metric"), row.get("threads_all")
    accuracy = metric in ("accuracy", "binary_accuracy")
    scale = 100 if accuracy else 1
    pairs = [("size KB", num(row["size_bytes"] / 1024, ".1f"))]
    if metric:
        unit = " %" if accuracy else ""
        pairs += [(f"{metric}{unit} (TFLite)", num(None if row["value"] is None else scale * row["value"], ".4g")),
                  (f"{metric}{unit} (Keras)", num(None if row["keras_value"] is None else scale * row["keras_value"],
                                                  ".4g")),
                  (f"drop {drop_unit(metric)} (negative: TFLite scored higher)", num(row["drop"], "+.2f"))]
    pairs += [("agreement with Keras %", num(None if row.get("agreement") is None else 100 * row["agreement"], ".2f")),
              ("max abs output difference", num(row.get("max_abs_diff"), ".3g")),
              ("p50 µs (batch 1, 1 thread)", num(row.get("p50_us_1t"), ".1f")),
              ("p90 µs (batch 1, 1 thread)", num(row.get("p90_us_1t"), ".1f")),
              (f"p50 µs ({threads} threads: this process's cores)", num(row.get("p50_us_all"), ".1f")),
              ("p50 µs (1 thread, no XNNPACK)", num(row.get("p50_us_1t_no_xnnpack"), ".1f")),
              ("XNNPACK ran it", "yes" if row.get("xnnpack") else "no")]
    return pairs


def load_model(path: str, *, unsafe_deserialization: bool = False):
    """The Keras model in `path`, loaded in Keras' safe mode unless `unsafe_deserialization`.

    Raises:
        ConfigError: the file is missing, a folder, not a .keras model, or holds Python code
            (a Lambda layer) that safe mode refuses; the fix names --unsafe-deserialization.
    """
    import zipfile

    import keras

    from tfscale.errors import ConfigError

    fix = "give a .keras file written by model.save (custom layers must be registered)"
    if not os.path.isfile(path):
        found = "is a folder" if os.path.isdir(path) else "does not exist"
        raise ConfigError(f"cannot load a Keras model: {path} {found}", where=path, fix=fix)
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"cannot load a Keras model: {path} is not a .keras model (not a zip archive)", where=path,
                          fix=fix)
    try:
        return keras.models.load_model(path, safe_mode=not unsafe_deserialization)
    except Exception as e:  # a .keras file fails in many ways: no config.json, unknown layers, bad weights, ...
        if "safe_mode" in str(e):
            raise ConfigError(f"cannot load a Keras model: {path} holds Python code, which Keras' safe mode does not "
                              f"run ({str(e).split('. ')[0]})", where=path,
                              fix="if you trust whoever wrote the file, pass --unsafe-deserialization (the code "
                                  "runs as you)") from None
        if isinstance(e, KeyError) and "config.json" in str(e):
            raise ConfigError(f"cannot load a Keras model: {path} is not a .keras model (no config.json in it)",
                              where=path, fix=fix) from None
        raise ConfigError(f"cannot load a Keras model from {path}: {type(e).__name__}: {e}", where=path,
                          fix=fix) from e


def evaluation_arrays(path: str, model):
    """The (x, y) of an --eval .npz, checked against the model's input before anything is written."""
    from tfscale.export.samples import check, load_arrays
    from tfscale.export.source import input_specs

    x, y = load_arrays(path)
    specs = input_specs(model)
    if len(specs) == 1:  # an .npz holds one x: a model of several inputs is checked when validated
        check(x, specs[0], where=f"--eval {path}")
    return x, y


def run(args) -> int:
    from tfscale import export
    from tfscale.table import render
    from tfscale.errors import ConfigError
    from tfscale.export.samples import load_arrays

    model = load_model(args.model, unsafe_deserialization=args.unsafe_deserialization)
    evaluation = evaluation_arrays(args.eval, model) if args.eval and args.format == "tflite" else None
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
        row = export.validate(path, model, evaluation)
        print(render(["figure", "value"], figures(row)))
    return 0
