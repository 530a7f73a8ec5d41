"""Mixed precision to an accuracy budget: int8 everywhere except the layers that cost the accuracy.

Two variants: ``auto`` (a TFLite file, auto.tflite) and ``keras_auto`` (a Keras model, keras_auto.keras). Both
search greedily from the per-layer report of plain int8 (tfscale/export/layers.py):

1. Start from int8 everywhere. While the accuracy loss on the evaluation data exceeds the budget
   (`max_drop`), keep in float the quantized layer with the worst ``own_snr_db`` not kept yet, and measure again.
2. Once within the budget, try putting each kept layer but the last back into int8, and keep it there if the
   mix stays within the budget: float only where it must be.
3. A mix no smaller than float16 is never chosen (float16 then serves better and is simpler). When the budget
   cannot be met below that size, the variant is not made, and its error names the closest mix tried.

TFLite: the converter calibrates once, then quantizes with the kept layers' ops denylisted
(`tfscale.compat.tensorflow`, 4.); the file has float32 input and output; its size is the file's. Keras:
``model.quantize("int8", filters=...)`` (Keras 3.13+) on a clone, saved without optimizer state; its size is the
weights' bytes as loaded for inference (`keras_modes.weight_bytes`), and float16 means half the float32 weights'
bytes; it is not timed (see `keras_auto`).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tfscale.compat import keras as keras_compat
from tfscale.compat import tensorflow as tf_compat
from tfscale.errors import ExportError, TfscaleError
from tfscale.export import converter, files, keras_modes, layers, report, validation
from tfscale.export.source import copy_model, detach, prepare
from tfscale.vocabulary import QUANTIZED

log = logging.getLogger("tfscale")

AUTO, KERAS_AUTO = "auto", "keras_auto"
MODES = (AUTO, KERAS_AUTO)


@dataclasses.dataclass
class Mix:
    """One candidate: the layers kept in float, its size, and (once measured) its accuracy loss and row."""

    kept: list[str]
    size_bytes: int
    payload: object = None  # the flatbuffer, or the Keras model
    loss: float | None = None
    row: dict | None = None

    def summary(self) -> dict:
        return {"float_layers": list(self.kept), "size_bytes": self.size_bytes, "loss": self.loss}


def search(order: list[str], build: Callable[[list[str]], Mix], measure: Callable[[Mix], None], budget: float,
           cap: int) -> tuple[Mix | None, list[Mix]]:
    """(the mix `build` makes that meets `budget` below `cap` bytes keeping the fewest layers float, or None;
    every mix measured or refused for its size, in order)."""
    tried: list[Mix] = []
    kept: list[str] = []
    for step in range(len(order) + 1):
        kept = order[:step]
        mix = build(kept)
        tried.append(mix)
        if step and mix.size_bytes >= cap:
            return None, tried
        measure(mix)
        if mix.loss is not None and mix.loss <= budget:
            return _prune(mix, build, measure, budget, tried), tried
    return None, tried


def _prune(best: Mix, build, measure, budget: float, tried: list[Mix]) -> Mix:
    """`best` with every kept layer that int8 can take back (within the budget) put back."""
    for name in best.kept[:-1]:
        mix = build([n for n in best.kept if n != name])
        measure(mix)
        tried.append(mix)
        if mix.loss is not None and mix.loss <= budget:
            best = mix
    return best


def _unmet(mode: str, tried: list[Mix], budget: float, unit: str, cap: int, what: str) -> ExportError:
    measured = [m for m in tried if m.loss is not None]
    closest = min(measured, key=lambda m: m.loss) if measured else None
    last = tried[-1]
    described = (f"the closest, {_named(closest)}, lost "
                 f"{closest.loss:.2f} {unit} at {closest.size_bytes / 1024:.1f} KB") if closest else "nothing measured"
    over = (f"; keeping {', '.join(last.kept)} in float makes it {last.size_bytes / 1024:.1f} KB"
            if last.loss is None and last.kept else "")
    return ExportError(f"no int8/float mix meets the {budget:g} {unit} budget below float16's {what} "
                       f"({cap / 1024:.1f} KB): {described}{over}", where=f"mode {mode!r}",
                       fix="raise the budget (max_drop, --budget), or deploy float16 or float32 (see their rows)")


def _named(mix: Mix) -> str:
    return f"int8 with {', '.join(mix.kept)} kept in float" if mix.kept else "plain int8"


def _reason(entry: dict, budget: float, unit: str) -> str:
    return (f"kept in float to meet the {budget:g} {unit} budget (in int8 it adds error at "
            f"{round(entry['own_snr_db'], 1) + 0.0:.1f} dB SNR)")


def _finish(mode: str, best: Mix | None, tried: list[Mix], int8_report: list[dict], budget: float, unit: str,
            cap: int, what: str) -> dict:
    if best is None:
        raise _unmet(mode, tried, budget, unit, cap, what)
    by_name = {e["layer"]: e for e in int8_report}
    return {**best.row, "float_layers": [{"layer": n, "reason": _reason(by_name[n], budget, unit)} for n in best.kept],
            "search": [m.summary() for m in tried]}


# TFLite: auto.tflite ---------------------------------------------------------------------------------------------

def _converted(source, convert: Callable[[], bytes]) -> bytes:
    """`convert()`, its failures explained as an ExportError naming the op and layer (`converter.explain`)."""
    try:
        return convert()
    except TfscaleError:
        raise
    except Exception as e:  # ConverterError, and RuntimeError/ValueError from calibration
        raise converter.explain(e, source, AUTO, False) from e


def tflite_auto(ref: validation.Reference, fref: layers.FloatLayers, calibration: list[np.ndarray], budget: float,
                path: Path, float16_bytes: int | None, overwrite: bool) -> dict:
    """The ``auto`` row: int8 with the fewest layers kept in float that meets `budget`, written to `path`."""
    source = ref.source
    calibrated = _converted(source, lambda: tf_compat.calibrated_model(
        converter._converter(source, "int8", calibration, False, "float32")))  # tfscale's own converter set-up
    ops = layers.file_layers(calibrated, source.model, fref.inbound)
    nodes = {name: [ops.tensors[op["outputs"][0]]["name"] for op in layer_ops
                    if not all(i in ops.static for i in op["inputs"] if i >= 0)]
             for name, layer_ops in ops.ops.items()}
    int8_report = layers.tflite_layers(_converted(source, lambda: tf_compat.quantize_calibrated(calibrated, [])),
                                       fref, "int8")
    order = [e["layer"] for e in int8_report if e["status"] == QUANTIZED and nodes.get(e["layer"])]
    cap = float16_bytes or len(converter.convert(source, "float16"))
    unit = report.drop_unit(ref.metric)

    def build(kept: list[str]) -> Mix:
        content = _converted(source, lambda: tf_compat.quantize_calibrated(calibrated, [n for k in kept
                                                                                   for n in nodes[k]]))
        return Mix(list(kept), len(content), content)

    with tempfile.TemporaryDirectory(prefix="tfscale-auto-") as tmp:
        def measure(mix: Mix) -> None:
            candidate = Path(tmp) / "candidate.tflite"
            candidate.write_bytes(mix.payload)
            mix.row = validation.compare(validation.run(candidate, source, ref.inputs), ref)
            mix.loss = report.budget_loss(mix.row)

        best, tried = search(order, build, measure, budget, cap)
    row = _finish(AUTO, best, tried, int8_report, budget, unit, cap, "file")
    files.write_bytes(path, best.payload, overwrite=overwrite)
    return {"path": str(path), "size_bytes": path.stat().st_size, **row}


# Keras: keras_auto.keras -----------------------------------------------------------------------------------------

def keras_int8(model, kept: list[str]):
    """A clone of `model` quantized by ``model.quantize("int8")``, but for the top-level layers in `kept`
    (and everything inside them), which stay float (Keras' `filters=`)."""
    clone = copy_model(detach(model))  # uncompiled: no optimizer state in the file
    skip = {id(sub) for name in kept for sub in keras_compat.flatten_layers(clone.get_layer(name), include_self=True)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning per layer Keras leaves in float
        clone.quantize("int8", filters=lambda layer: id(layer) not in skip)
    return clone


def keras_auto(ref: validation.Reference, fref: layers.FloatLayers, budget: float, path: Path,
               overwrite: bool) -> dict:
    """The ``keras_auto`` row: Keras int8 with the fewest layers kept in float that meets `budget`.

    Sized and scored, not timed: it is made in the TensorFlow process, which for a model on JAX is not the
    backend the other Keras rows are timed on.
    """
    model = ref.source.model
    int8, _ = keras_modes.quantize(model, "keras_int8")  # an ExportError for a model Keras int8 cannot cover
    int8_report = layers.keras_layers(int8, fref)
    order = [e["layer"] for e in int8_report if e["status"] == QUANTIZED]
    base_bytes = keras_modes.weight_bytes(model)
    cap = base_bytes // 2
    unit = report.drop_unit(ref.metric)

    def build(kept: list[str]) -> Mix:
        clone = int8 if not kept else keras_int8(model, kept)
        return Mix(list(kept), keras_modes.weight_bytes(clone), clone)

    def measure(mix: Mix) -> None:
        outputs = prepare(mix.payload, ref.source.specs).predict(ref.inputs)
        mix.row = validation.compare(outputs, ref)
        mix.loss = report.budget_loss(mix.row)

    best, tried = search(order, build, measure, budget, cap)
    row = _finish(KERAS_AUTO, best, tried, int8_report, budget, unit, cap, "weights")
    keras_modes.save(best.payload, path, overwrite=overwrite)
    quantized = [s for s in keras_compat.flatten_layers(best.payload) if getattr(s, "quantization_mode", None)]
    return {"target": "keras", "path": str(path), "size_bytes": best.size_bytes, "file_bytes": path.stat().st_size,
            "size_vs_float32": best.size_bytes / base_bytes, **row, "quantized_layers": len(quantized)}


def rows(wanted: list[str], ref: validation.Reference, fref: layers.FloatLayers, calibration, budget: float,
         paths: dict[str, Path], float16_bytes: int | None, overwrite: bool) -> dict[str, dict]:
    """The rows of the auto modes in `wanted` ({"error": ...} where one cannot be made)."""
    made = {}
    for mode in [m for m in MODES if m in wanted]:
        try:
            if ref.metric is None and ref.outputs[0].ndim < 2:
                raise ExportError("mixed precision needs an accuracy to budget: labels, or a classifier",
                                  where=f"mode {mode!r}", fix="give eval_data=(x, y)")
            made[mode] = (tflite_auto(ref, fref, calibration, budget, paths[mode], float16_bytes, overwrite)
                          if mode == AUTO else keras_auto(ref, fref, budget, paths[mode], overwrite))
        except TfscaleError as e:
            made[mode] = {"error": str(e), **({"target": "keras"} if mode == KERAS_AUTO else {})}
    return made
