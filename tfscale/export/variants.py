"""`quantize_all`: every TFLite variant of one model, validated, compared, and the best one named."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import numpy as np

from tfscale import quiet
from tfscale.errors import ConfigError, TfscaleError
from tfscale.export import (converter, files, handoff, keras_modes, latency, optimization, report, samples,
                            validation)
from tfscale.export import layers, mixed  # the per-layer report; mixed precision to the budget (auto modes)
from tfscale.export.source import input_specs, is_chief, prepare

log = logging.getLogger("tfscale")

DEFAULT_MODES = ("float32", "dynamic", "float16", "int8", "int16x8")
EXTRA_MODES = ("qat", "prune", *keras_modes.KERAS_MODES, *mixed.MODES)
REPORT_FILE = "report.json"


class Progress:
    """quantize_all's progress: a tqdm bar on a terminal (`tfscale.quiet.progress`); nothing in logs or notebooks."""

    def __init__(self, total: int, enabled: bool = True):
        self.total = total
        self.bar = quiet.progress(total, enabled=enabled, desc="export", unit="step")

    def show(self, what: str) -> None:
        self.bar.set_description_str(what)

    def step(self, what: str) -> None:
        self.bar.set_description_str(what)
        self.bar.update(1)
        if self.bar.n >= self.total:
            self.bar.close()


def check_modes(modes) -> list[str]:
    """Modes in order, float32 first (the baseline every ratio refers to), no repeats."""
    modes = [m.strip() for m in (modes.split(",") if isinstance(modes, str) else modes) if m and m.strip()]
    unknown = [m for m in modes if m not in DEFAULT_MODES + EXTRA_MODES]
    if unknown:
        raise ConfigError(f"unknown mode(s) {unknown}", where="modes",
                          fix=f"use: {', '.join(DEFAULT_MODES + EXTRA_MODES)}")
    return list(dict.fromkeys(["float32", *modes]))


def target(out_dir: Path, mode: str) -> Path:
    keras_file = mode in keras_modes.KERAS_MODES or mode == mixed.KERAS_AUTO
    return keras_modes.target(out_dir, mode) if keras_file else out_dir / f"{mode}.tflite"


def _keras_latency(model, example: list[np.ndarray], runs: int = 50) -> float:
    x = example[0] if len(example) == 1 else example
    model.predict_on_batch(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        model.predict_on_batch(x)
        times.append(time.perf_counter_ns() - start)
    return float(np.percentile(times, 50) / 1e3)


def _keras_rows(model, modes: list[str], out_dir: Path, data, calibration, metric, overwrite: bool,
                runs: int) -> tuple[list[dict], dict]:
    """Rows of the Keras-native variants (and their keras_float32 baseline), made on the current backend, and the
    variants' models by mode (the per-layer report reads them where Keras cannot load its own file back)."""
    if not any(m in keras_modes.KERAS_MODES for m in modes):
        return [], {}
    inputs, labels = data
    calib = handoff.examples(calibration, model, 256, "calibration data") if calibration is not None else None
    made = keras_modes.variants(model, modes, out_dir, calibration=None if calib is None else calib[0][0],
                                overwrite=overwrite)
    found = keras_modes.rows(made, inputs, labels, metric, runs=max(20, runs // 4))
    models = {m: v.model for m, v in made.items() if isinstance(v, keras_modes.KerasVariant)}
    return [{"mode": m, **found[m]} for m in [keras_modes.BASELINE, *modes] if m in found], models


def _tfmot_rows(model, wanted: list[str], out_dir: Path, ref: validation.Reference, train_data, overwrite: bool,
                progress: Progress, tfmot_options: dict) -> dict[str, dict]:
    """Rows for "qat" and "prune", trained together in one tfmot worker process."""
    if not wanted:
        return {}
    if train_data is None:
        return {m: {"error": "qat and prune need train_data=(x, y) or a labelled dataset"} for m in wanted}
    options = dict(tfmot_options)
    sparsity = options.pop("sparsity", 0.5)
    progress.show(f"{', '.join(wanted)}: fine-tuning in a tfmot worker process")
    try:
        with contextlib.ExitStack() as stack:
            temps = {m: stack.enter_context(files.atomic_file(target(out_dir, m), overwrite=overwrite)) for m in wanted}
            tasks = [{"kind": "qat", "out": str(temps[m])} if m == "qat" else
                     {"kind": "prune", "sparsity": sparsity, "quantize": "int8", "out": str(temps[m])} for m in wanted]
            results = optimization.run_tasks(model, tasks, train_data, input_signature=ref.source.specs, **options)
    except TfscaleError as e:
        return {m: {"error": str(e)} for m in wanted}
    rows = {}
    for m, result in zip(wanted, results):
        rows[m] = {**validation.evaluate_file(target(out_dir, m), ref),
                   "training_loss": result.get("history"), "sparsity": result.get("sparsity")}
        progress.step(f"{m}: validated")
    return rows


def _tflite_row(source, mode: str, out_dir: Path, ref: validation.Reference, calibration, int8_io: str,
                overwrite: bool, progress: Progress) -> dict:
    path = target(out_dir, mode)
    progress.show(f"{mode}: converting")
    try:
        flatbuffer = converter.convert(source, mode, calibration=calibration, int8_io=int8_io)
        files.write_bytes(path, flatbuffer, overwrite=overwrite)
        progress.show(f"{mode}: validating")
        row = validation.evaluate_file(path, ref)
    except TfscaleError as e:
        if mode == "float32":
            raise  # no baseline, nothing to compare: the model itself does not convert
        row = {"error": str(e)}
    progress.step(f"{mode}: failed" if "error" in row else f"{mode}: {row['size_bytes']:,} bytes")
    return row


def _add_ratios(rows: list[dict]) -> None:
    base = next(r for r in rows if r["mode"] == "float32")
    for row in rows:
        if "error" in row:
            continue
        row["size_vs_float32"] = row["size_bytes"] / base["size_bytes"]
        if row.get("p50_us_1t") and base.get("p50_us_1t"):
            row["speedup_vs_float32"] = base["p50_us_1t"] / row["p50_us_1t"]


def _calibration(modes: list[str], source, ref: validation.Reference, calibration, num_samples: int):
    if not any(m in ("int8", "int16x8", mixed.AUTO) for m in modes):
        return None
    if calibration is None:
        log.info("calibrating on the evaluation inputs; pass calibration= (training data) to keep them apart")
        return [x[:num_samples] for x in ref.inputs]
    return converter.calibration_inputs(source.specs, calibration, num_samples)


def _report(rows: list[dict], ref: validation.Reference, max_drop: float) -> report.ExportReport:
    _add_ratios([r for r in rows if r.get("target") != "keras"])
    rows = report.rounded(rows)  # the JSON holds exactly the figures the recommendation was made from
    reference = {"metric": ref.metric, "keras_value": ref.keras_value, "samples": len(ref.inputs[0]),
                 "predict_on_batch_p50_us": _keras_latency(ref.source.model, [x[:1] for x in ref.inputs]),
                 "threads_all": latency.usable_cores()}
    return report.ExportReport(rows, report.recommend(rows, max_drop), report.review(rows, max_drop), max_drop,
                               reference, report.recommendations(rows, max_drop))


def _keras_targets(out_dir: Path, modes: list[str]) -> list[Path]:
    wanted = [m for m in modes if m in keras_modes.KERAS_MODES]
    return [keras_modes.target(out_dir, m) for m in ([keras_modes.BASELINE, *wanted] if wanted else [])]


def _merged(edge: report.ExportReport, keras_rows: list[dict], out_dir: Path) -> report.ExportReport:
    """The TFLite report made in the TensorFlow process, with the Keras rows made here (report.json rewritten)."""
    rows = edge.rows + report.rounded(keras_rows)
    result = report.ExportReport(rows, edge.recommended, report.review(rows, edge.max_drop), edge.max_drop,
                                 edge.reference, report.recommendations(rows, edge.max_drop))
    result.to_json(out_dir / REPORT_FILE, overwrite=True)  # the child's, written moments ago
    return result


def quantize_all(model, out_dir: str | os.PathLike, *, eval_data, calibration=None, modes=DEFAULT_MODES,
                 max_drop: float = 0.5, overwrite: bool = False, progress: bool = True,
                 num_calibration_samples: int = 200, int8_io: str = "int8", train_data=None,
                 tfmot_options: dict | None = None, metric: str | None = "auto", max_eval_samples: int | None = None,
                 latency_runs: int = 200, input_signature=None, chief: bool | None = None) -> report.ExportReport:
    """Writes every TFLite variant of `model` into `out_dir`, validates each, and recommends one.

    Files: <mode>.tflite per TFLite mode, <mode>.keras per Keras mode (with keras_float32.keras,
    their baseline: the float model without optimizer state), and report.json.

    Args:
        model: a trained Keras 3 model, built under any strategy scope (or none), or a .keras file.
        out_dir: the folder to write, e.g. "saved_models/<name>".
        eval_data: labelled evaluation data ((x, y) arrays or dataset); x alone
            gives agreement with the Keras model instead of accuracy.
        calibration: int8/int16x8 calibration data (default: the evaluation inputs);
            keras_gptq and keras_awq require it.
        modes: any of float32, dynamic, float16, int8, int16x8, qat, prune (TFLite
            files; float32 is always made: it is the baseline), keras_int8, keras_int4,
            keras_float8, keras_gptq, keras_awq (`keras_modes`: Keras' own quantization,
            made and timed on the current backend), auto, keras_auto (`mixed`: int8 with
            the fewest layers kept in float that meets max_drop; auto.tflite, keras_auto.keras).
            Every row gets "layers", the per-layer report (`layers`; `ExportReport.layers_table`).
        max_drop: the accuracy budget in percentage points (percent for error metrics).
        overwrite: replace existing files; without it nothing is written if any exists.
        progress: show a progress bar on stderr.
        num_calibration_samples: calibration examples for int8/int16x8.
        int8_io: input/output type of the int8 file: "int8", "uint8" or "float32".
        train_data: labelled training data for qat and prune.
        tfmot_options: for qat/prune: epochs, batch_size, learning_rate, loss,
            max_train_samples, sparsity, timeout.
        metric: as for `validate`.
        max_eval_samples: evaluate on the first N examples only.
        latency_runs: timed runs per latency figure, spread over 5-20 rounds in which
            every file and setting runs in turn (p50: median of the rounds' p50s).
        input_signature: as for `tflite`.
        chief: work only when True; other workers get an empty report. None: ask
            the model's strategy (see `tflite`). Distributed datasets are drawn
            on every worker first, so call it on every worker then.

    Returns:
        An `ExportReport` (rows, recommended, warnings, table(), to_json(), plot()).

    Example:
        report = tfscale.export.quantize_all(model, "saved_models/digits", eval_data=(x_test, y_test))
        print(report.table())
    """
    if isinstance(model, (str, os.PathLike)):
        model = keras_modes.load(model)
    modes = check_modes(modes)
    keras_modes.check_calibration(modes, calibration)
    out_dir = Path(out_dir)
    if handoff.needed():  # Keras here runs on JAX: convert and validate in a TensorFlow process
        if not handoff.is_chief(chief):
            return report.ExportReport([], None, [], max_drop)
        for path in _keras_targets(out_dir, modes):
            files.check_target(path, overwrite=overwrite)
        limits = {"calibration": num_calibration_samples, "eval_data": max_eval_samples,
                  "train_data": (tfmot_options or {}).get("max_train_samples", 10_000)}
        edge = handoff.run("quantize_all", model, out_dir, limits=limits, eval_data=eval_data,
                           calibration=calibration, train_data=train_data, max_drop=max_drop,
                           modes=[m for m in modes if m not in keras_modes.KERAS_MODES],
                           overwrite=overwrite, progress=progress, num_calibration_samples=num_calibration_samples,
                           int8_io=int8_io, tfmot_options=tfmot_options, metric=metric,
                           max_eval_samples=max_eval_samples, latency_runs=latency_runs)
        data = handoff.examples(eval_data, model, max_eval_samples, "evaluation data")
        rows, _ = _keras_rows(model, modes, out_dir, data, calibration, edge.reference.get("metric", metric),
                              overwrite, latency_runs)  # on JAX: no per-layer section for these (see DESIGN)
        return _merged(edge, rows, out_dir) if rows else edge
    specs = input_specs(model, input_signature)
    eval_data = samples.localize(eval_data, specs, max_samples=max_eval_samples, where="evaluation data")
    calibration = samples.localize(calibration, specs, max_samples=num_calibration_samples, where="calibration data")
    train_data = samples.localize(train_data, specs, where="train_data",
                                  max_samples=(tfmot_options or {}).get("max_train_samples", 10_000))
    if not is_chief(model, chief):
        return report.ExportReport([], None, [], max_drop)
    for path in [target(out_dir, m) for m in modes] + _keras_targets(out_dir, modes) + [out_dir / REPORT_FILE]:
        files.check_target(path, overwrite=overwrite)
    bar = Progress(len(modes) + 1, progress)
    bar.show("running the Keras model on the evaluation data")
    source = prepare(model, input_signature)
    ref = validation.reference(source, eval_data, metric=metric, max_samples=max_eval_samples)
    calib = _calibration(modes, source, ref, calibration, num_calibration_samples)
    rows = {m: _tflite_row(source, m, out_dir, ref, calib, int8_io, overwrite, bar)
            for m in modes if m in converter.MODES}
    rows.update(_tfmot_rows(model, [m for m in modes if m in optimization.TFMOT_MODES], out_dir, ref, train_data,
                            overwrite, bar, {"int8_io": int8_io, **(tfmot_options or {})}))
    fref = layers.float_layers(source, ref.inputs)  # each layer's float output: the per-layer report's reference
    auto = {m: target(out_dir, m) for m in mixed.MODES}
    rows.update(mixed.rows([m for m in modes if m == mixed.AUTO], ref, fref, calib, max_drop, auto,
                           rows.get("float16", {}).get("size_bytes"), overwrite))
    bar.show("timing every TFLite file at batch 1 (alternating rounds)")
    timed = latency.measure({m: r["path"] for m, r in rows.items() if "error" not in r}, source,
                            [x[:1] for x in ref.inputs], runs=latency_runs)
    for m, figures in timed.items():
        rows[m].update(figures)
    bar.show("Keras-native variants: quantizing and timing with predict_on_batch")
    found, in_memory = _keras_rows(source.model, modes, out_dir, (ref.inputs, ref.labels), calibration, ref.metric,
                                   overwrite, latency_runs)
    rows.update(mixed.rows([m for m in modes if m == mixed.KERAS_AUTO], ref, fref, calib, max_drop, auto, None,
                           overwrite))
    made = [{"mode": m, "target": "edge", **rows[m]} for m in modes if m in rows] + found
    layers.add_to_rows(made, fref, in_memory)
    result = _report(made, ref, max_drop)
    result.to_json(out_dir / REPORT_FILE, overwrite=overwrite)
    bar.step(f"report written; recommended: {result.recommended}")
    return result
