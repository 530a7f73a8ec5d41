"""The per-layer report: for every variant, each layer quantized or kept in float (and why), and its error.

The error figure is the signal-to-noise ratio of the layer's output against the float Keras model's output of
the same layer on the same evaluation inputs, in dB: ``snr_db = 10·log10(Σ float² / Σ (variant − float)²)``,
capped at `SNR_CAP_DB` (identical but for float rounding); higher is better. Errors add up along the model, so
a layer's SNR includes every error made before it; ``own_snr_db`` is the SNR of the error the layer adds
itself: its noise-to-signal ratio minus that of its noisiest input (the model's inputs count as exact).
Layers are listed worst first by ``own_snr_db``: the layer that quantization hurts comes first, not merely the
last one, which inherits every error.

TFLite files run in LiteRT (`ai_edge_litert`, no delegate) with every intermediate tensor kept
(``experimental_preserve_all_tensors``); each op belongs to the Keras layer whose TensorFlow name scope its
output or weights carry, and the layer's output is its last op's. Keras variants (``.keras``) and the float
model run as one sub-model returning every layer's output (``keras.Model(inputs, [layer.output, ...])``).
Layers are the model's own (top-level) layers; a nested block (a keras-hub `TransformerEncoder`) is one layer.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import keras
import numpy as np

from tfscale.compat import keras as keras_compat
from tfscale.compat import litert as litert_compat
from tfscale.errors import ExportError, install_hint
from tfscale.export import runtime
from tfscale.export.layer_report import LAYER_SAMPLES, SNR_CAP_DB
from tfscale.export.source import PreparedModel
from tfscale.vocabulary import ABSENT, FLOAT, NO_WEIGHTS, QUANTIZED

log = logging.getLogger("tfscale")

BATCH = 32
_LOW = ("int8", "int16", "uint8", "float16")  # dtypes below float32 that a quantized op stores or computes in


@dataclasses.dataclass
class FloatLayers:
    """The float model's layers and their outputs on the examples; computed once, compared with every variant.

    Attributes:
        source: the (detached) float model and its input specs.
        graph: the model's graph layers in order, InputLayers left out.
        inbound: layer name -> the names of the layers feeding it ([] for the model's inputs).
        inputs: the examples, one array per model input.
        outputs: layer name -> its float output on `inputs` (graph layers with one output only).
    """

    source: PreparedModel
    graph: list[str]
    inbound: dict[str, list[str]]
    inputs: list[np.ndarray]
    outputs: dict[str, np.ndarray]


def snr_db(reference: np.ndarray, value: np.ndarray) -> float | None:
    """The SNR of `value` against `reference` in dB, capped at `SNR_CAP_DB`; None when the shapes differ."""
    if reference.size != value.size:
        return None
    reference = reference.astype(np.float64).reshape(-1)
    noise = float(np.sum((value.astype(np.float64).reshape(-1) - reference) ** 2))
    signal = float(np.sum(reference ** 2))
    if noise <= signal * 10 ** (-SNR_CAP_DB / 10):
        return SNR_CAP_DB
    return float(10 * np.log10(max(signal, 1e-30) / noise))


def _history_names(value) -> list[str]:
    """The layer names in the `keras_history` entries of an inbound-node config (any nesting)."""
    if isinstance(value, dict):
        history = value.get("keras_history") if value.get("class_name") != "__keras_tensor__" else \
            value.get("config", {}).get("keras_history")
        if history:
            return [history[0]]
        return [n for v in value.values() for n in _history_names(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _history_names(v)]
    return []


def graph(model: keras.Model) -> tuple[list[str], dict[str, list[str]]]:
    """(the graph layers in order, without InputLayers; layer -> its inbound layers), from the public config."""
    try:
        config = model.get_config()
    except (NotImplementedError, TypeError, ValueError, AttributeError):  # a subclassed model without a config
        return [], {}
    layers = config.get("layers") if isinstance(config, dict) else None
    if not layers:
        return [], {}
    inputs = {entry["config"]["name"] for entry in layers if entry.get("class_name") == "InputLayer"}
    names, inbound = [], {}
    for entry in layers:
        name = entry.get("name") or entry["config"]["name"]
        if name in inputs:
            continue
        if "inbound_nodes" in entry:  # a functional model
            inbound[name] = [n for n in dict.fromkeys(_history_names(entry["inbound_nodes"])) if n not in inputs]
        else:  # a Sequential model: each layer feeds the next
            inbound[name] = names[-1:]
        names.append(name)
    return names, inbound


def _outputs_model(model: keras.Model, names: list[str]) -> tuple[keras.Model | None, list[str]]:
    """A model returning the outputs of the layers in `names` that have exactly one (shared layers do not)."""
    readable, tensors = [], []
    for name in names:
        try:
            output = model.get_layer(name).output
        except (AttributeError, ValueError):
            continue
        if isinstance(output, (list, tuple, dict)):
            continue
        readable.append(name)
        tensors.append(output)
    if not readable:
        return None, []
    return keras.Model(model.inputs, tensors), readable


def layer_outputs(model: keras.Model, names: list[str], inputs: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Layer name -> its output on `inputs`, for those of `names` whose output can be read."""
    try:
        sub, readable = _outputs_model(model, names)
    except (AttributeError, ValueError, TypeError) as e:  # a subclassed model has no graph of layers
        log.info("per-layer outputs of %s cannot be read: %s", model.name, e)
        return {}
    if sub is None:
        return {}
    parts = []
    for start in range(0, len(inputs[0]), BATCH):  # called directly: no predict function traced per sub-model
        chunk = [x[start:start + BATCH] for x in inputs]
        values = sub(chunk, training=False)
        parts.append([keras.ops.convert_to_numpy(v) for v in (values if isinstance(values, (list, tuple))
                                                              else [values])])
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(readable)}


def float_layers(source: PreparedModel, inputs: list[np.ndarray], max_samples: int = LAYER_SAMPLES) -> FloatLayers:
    """The float model's graph and its layers' outputs on the first `max_samples` examples of `inputs`."""
    inputs = [x[:max_samples] for x in inputs]
    names, inbound = graph(source.model)
    return FloatLayers(source, names, inbound, inputs, layer_outputs(source.model, names, inputs))


def _nsr(snr: float) -> float:
    return 0.0 if snr >= SNR_CAP_DB else 10 ** (-snr / 10)


def own_snr_db(snr: float, inputs: list[float]) -> float:
    """The SNR of the error a layer adds itself: its noise-to-signal ratio minus its noisiest input's, in dB."""
    added = _nsr(snr) - max([_nsr(s) for s in inputs] or [0.0])
    return SNR_CAP_DB if added <= 10 ** (-SNR_CAP_DB / 10) else min(SNR_CAP_DB, float(-10 * np.log10(added)))


def rank(ref: FloatLayers, entries: dict[str, dict], values: dict[str, np.ndarray]) -> list[dict]:
    """`entries` (layer -> status fields) with snr_db and own_snr_db added from `values`, worst first."""
    snr = {name: snr_db(ref.outputs[name], values[name]) if name in ref.outputs and name in values else None
           for name in entries}
    for name, entry in entries.items():
        entry["snr_db"] = snr[name]
        sources = [snr.get(n) for n in ref.inbound.get(name, [])]
        entry["own_snr_db"] = None if snr[name] is None or None in sources else own_snr_db(snr[name], sources)
    return sorted(entries.values(), key=lambda e: (e["own_snr_db"] is None, e["own_snr_db"] or 0.0))


# Keras variants --------------------------------------------------------------------------------------------------

def _keras_entry(layer, index: int, kept: dict[str, str], mode: str) -> dict:
    subs = keras_compat.flatten_layers(layer, include_self=True)
    modes = sorted({m for m in (getattr(s, "quantization_mode", None) for s in subs) if m})
    entry = {"layer": layer.name, "index": index, "type": type(layer).__name__,
             "precision": "/".join(modes) or "float32"}
    if modes:
        return {**entry, "status": QUANTIZED, "reason": None}
    if not layer.weights:
        return {**entry, "status": NO_WEIGHTS, "reason": None}
    return {**entry, "status": FLOAT,
            "reason": kept.get(layer.name) or f"Keras {mode} does not quantize {type(layer).__name__} layers"}


def keras_layers(model: keras.Model, ref: FloatLayers, kept: dict[str, str] | None = None) -> list[dict]:
    """The per-layer report of a Keras-quantized `model` (same layer names as the float one).

    Args:
        model: the quantized model.
        ref: the float model's layers and outputs (`float_layers`).
        kept: layer -> why it was kept in float on purpose (a filter; mixed precision).
    """
    found = sorted({getattr(s, "quantization_mode", None) for s in keras_compat.flatten_layers(model)} - {None})
    mode = "/".join(found) or "quantize"
    entries = {layer.name: _keras_entry(layer, i, kept or {}, mode) for i, layer in enumerate(model.layers)
               if type(layer).__name__ != "InputLayer"}
    return rank(ref, entries, layer_outputs(model, [n for n in ref.graph if n in entries], ref.inputs))


# TFLite files ----------------------------------------------------------------------------------------------------

def scope_names(names: list[str]) -> dict[str, str]:
    """TensorFlow name scope -> layer, for the scopes a traced Keras 3 model gives its layers.

    Keras on TensorFlow enters each layer's scope twice while tracing, so TensorFlow's unique-name rule gives
    the second: "dense" -> "dense_1", and a layer named "dense_1" then -> "dense_1_2". Simulated here in the
    model's layer order; `_owner` falls back to stripping "_N" suffixes for scopes not predicted.
    """
    used: dict[str, int] = {}

    def unique(name: str) -> str:
        key, count = name.lower(), used.get(name.lower(), 0)
        used[key] = count + 1
        if count == 0:
            return name
        candidate = f"{key}_{count}"
        while candidate in used:
            count += 1
            candidate = f"{key}_{count}"
        used[candidate] = 1
        return f"{name}_{count}"

    scopes = {}
    for name in names:
        unique(name)
        scopes[unique(name)] = name
    return scopes


def _owner(tensor_name: str, scopes: dict[str, str], order: dict[str, int]) -> str | None:
    """The latest (in model order) layer named in a TFLite tensor name like 'model_1/dense_1/MatMul;...'."""
    found = []
    for part in tensor_name.split(";"):
        parts = part.split("/")
        if len(parts) < 2:
            continue
        scope = parts[1]
        name = scopes.get(scope)
        while name is None and re.search(r"_\d+$", scope):
            scope = re.sub(r"_\d+$", "", scope)
            name = scope if scope in order else None
        if name is not None:
            found.append(name)
    return max(found, key=order.get) if found else None


def _interpreter(content: bytes):
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as e:
        raise ExportError("the per-layer report needs ai-edge-litert", where="import ai_edge_litert",
                          fix=install_hint("quantize", "ai-edge-litert")) from e
    interpreter = Interpreter(model_content=content, num_threads=1, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


@dataclasses.dataclass
class FileLayers:
    """The ops of a TFLite file grouped by the Keras layer they belong to (`file_layers`)."""

    interpreter: object
    ops: dict[str, list[dict]]  # layer -> its ops, in execution order
    tensors: list[dict]  # the interpreter's tensor details
    weights: set[int]  # tensor indices of constants (weights, biases, shapes)
    static: set[int]  # constants and what ops compute from constants alone
    low_activations: bool  # some op of the file computes in int8/int16


def file_layers(content: bytes, model: keras.Model, inbound: dict[str, list[str]] | None = None) -> FileLayers:
    """Reads a TFLite flatbuffer's ops and assigns each to a top-level layer of `model`.

    An op whose tensors carry no layer's scope (the model's last op writes "StatefulPartitionedCall:0") goes to
    the layer that `inbound` says its input's layer feeds, if that layer has no op yet (a final softmax layer),
    else to its input's layer (a softmax split off a Dense).
    """
    interpreter = _interpreter(content)
    ops = litert_compat.op_details(interpreter)
    if ops is None:
        raise ExportError("this ai-edge-litert does not list a model's ops", where="ai_edge_litert",
                          fix=f"install ai-edge-litert {litert_compat.CHECKED_TEXT}")
    tensors = interpreter.get_tensor_details()
    names = [layer.name for layer in model.layers]
    scopes, order = scope_names(names), {n: i for i, n in enumerate(names)}
    produced = {i for op in ops for i in op["outputs"]}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    weights = {i for op in ops for i in op["inputs"] if i >= 0 and i not in produced and i not in inputs}
    static = set(weights)  # weights, and what ops make of weights alone (float16 weights dequantized)
    grouped: dict[str, list[dict]] = {}
    made_by: dict[int, str] = {}  # tensor -> the layer of the op that wrote it
    for op in ops:
        used = [i for i in op["inputs"] if i >= 0]
        if used and all(i in static for i in used):
            static.update(op["outputs"])
        named = [tensors[i]["name"] for i in list(op["outputs"]) + [i for i in used if i in static]]
        owners = [o for o in (_owner(n, scopes, order) for n in named) if o]
        owner = max(owners, key=order.get) if owners else _successor(used, made_by, inbound or {}, grouped)
        if owner:
            grouped.setdefault(owner, []).append(op)
            made_by.update({i: owner for i in op["outputs"]})
    low = any(np.dtype(t).name in _LOW[:3] for op in ops for t in op["result_types"])
    return FileLayers(interpreter, grouped, tensors, weights, static, low)


def _successor(used: list[int], made_by: dict[int, str], inbound: dict[str, list[str]],
               grouped: dict[str, list[dict]]) -> str | None:
    """For an op whose tensors name no layer: the one layer fed only by the layer that wrote its input, if that
    has no op yet (a final softmax layer); else the writing layer itself (an activation split off its op)."""
    source = next((made_by[i] for i in used if i in made_by), None)
    fed = [name for name, feeding in inbound.items() if feeding == [source] and name not in grouped]
    return fed[0] if source and len(fed) == 1 else source


def _precision(ops: list[dict], fl: FileLayers) -> tuple[str, bool]:
    """(what the layer's ops store and compute in, whether it has weights)."""
    stored = {np.dtype(fl.tensors[i]["dtype"]).name for op in ops for i in op["inputs"] if i in fl.weights}
    computed = {np.dtype(t).name for op in ops for t in op["result_types"]}
    has_weights = bool(stored & {"float32", *_LOW})
    if "int16" in computed:
        return "int16x8", has_weights
    if "int8" in computed or "uint8" in computed:
        return "int8", has_weights
    if "int8" in stored:
        return "int8 weights", has_weights
    if "float16" in stored:
        return "float16 weights", has_weights
    return "float32", has_weights


def _tflite_entry(layer, index: int, ops: list[dict], fl: FileLayers, mode: str, kept: dict[str, str]) -> dict:
    entry = {"layer": layer.name, "index": index, "type": type(layer).__name__}
    if not ops:
        return {**entry, "status": ABSENT, "precision": None,
                "reason": "no op of its own in the file (folded into a neighbour, or removed like Dropout)"}
    precision, has_weights = _precision(ops, fl)
    entry["precision"] = precision
    if precision != "float32":
        return {**entry, "status": QUANTIZED, "reason": None}
    if not has_weights and not fl.low_activations:
        return {**entry, "status": NO_WEIGHTS, "reason": None}
    if layer.name in kept:
        reason = kept[layer.name]
    elif mode == "float32":
        reason = "the float32 variant quantizes nothing"
    else:
        reason = f"the converter kept its ops in float ({', '.join(sorted({op['op_name'] for op in ops}))})"
    return {**entry, "status": FLOAT, "reason": reason}


def _read_outputs(fl: FileLayers, ref: FloatLayers) -> dict[str, np.ndarray]:
    """Each layer's last op's output (dequantized) over the examples, in batches."""
    interpreter = fl.interpreter
    ins, _ = runtime.io_details(interpreter, ref.source)
    last = {}
    for name, ops in fl.ops.items():
        computing = [op for op in ops if not all(i in fl.static for i in op["inputs"] if i >= 0)]
        if computing:
            last[name] = computing[-1]["outputs"][0]
    parts: dict[str, list[np.ndarray]] = {name: [] for name in last}
    for _ in runtime.invoke_in_batches(interpreter, ins, ref.inputs, BATCH):
        for name, index in last.items():
            parts[name].append(runtime.dequantize(interpreter.get_tensor(index), fl.tensors[index]).copy())
    return {name: np.concatenate(p) for name, p in parts.items() if p}


def tflite_layers(content: bytes, ref: FloatLayers, mode: str, kept: dict[str, str] | None = None) -> list[dict]:
    """The per-layer report of a TFLite flatbuffer converted from `ref`'s model.

    Args:
        content: the flatbuffer.
        ref: the float model's layers and outputs (`float_layers`).
        mode: the variant ("float32" keeps everything float by design).
        kept: layer -> why it was kept in float on purpose (mixed precision).
    """
    fl = file_layers(content, ref.source.model, ref.inbound)
    entries = {layer.name: _tflite_entry(layer, i, fl.ops.get(layer.name, []), fl, mode, kept or {})
               for i, layer in enumerate(ref.source.model.layers) if type(layer).__name__ != "InputLayer"}
    return rank(ref, entries, _read_outputs(fl, ref))


def variant_layers(row: dict, ref: FloatLayers, model: keras.Model | None = None) -> list[dict]:
    """The per-layer report of one report row (a .tflite or .keras file); `row["float_layers"]` names the layers
    kept in float on purpose, with the reason. A .keras row is read from its file, or from `model` (the variant
    as it was made) where Keras cannot load the file back (`row["reload_error"]`: GPTQ and AWQ in Keras 3.15)."""
    path, kept = Path(row["path"]), {k["layer"]: k["reason"] for k in row.get("float_layers") or []}
    if path.suffix == ".keras":
        if row.get("reload_error") and model is not None:
            return keras_layers(model, ref, kept)
        return keras_layers(keras.saving.load_model(path, compile=False), ref, kept)
    return tflite_layers(path.read_bytes(), ref, row["mode"], kept)


def add_to_rows(rows: list[dict], ref: FloatLayers, models: dict | None = None) -> None:
    """Adds "layers" to every report row that has a file, or "layers_error" saying why it could not be made;
    `models`: the Keras variants as made, by mode (for files Keras cannot load back)."""
    for row in rows:
        if "error" in row or not row.get("path"):
            continue
        try:
            row["layers"] = variant_layers(row, ref, (models or {}).get(row["mode"]))
        except Exception as e:  # a report section, never a failed export: say why it is missing
            log.info("no per-layer report for %s: %s", row["mode"], e)
            row["layers_error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"
