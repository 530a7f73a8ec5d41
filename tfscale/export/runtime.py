"""LiteRT (`ai_edge_litert`) interpreters for tfscale's TFLite files: loading, inputs and outputs.

The deprecated `tf.lite.Interpreter` is never used. Inputs are matched to the
model's input names (the files' serving signature), outputs are output_0,
output_1, ... in the Keras model's order, and int8/uint8 tensors are
(de)quantized with the file's own scale and zero point.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tfscale.errors import ExportError, install_hint
from tfscale.export.source import PreparedModel


def interpreter(path: Path, threads: int, delegate: bool = True):
    """A LiteRT interpreter for `path`, tensors allocated; `delegate` False turns off XNNPACK.

    Raises:
        ExportError: ai-edge-litert is missing, or it cannot load the file (e.g. flex ops).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as e:
        raise ExportError("validating TFLite files needs ai-edge-litert", where="import ai_edge_litert",
                          fix=install_hint("quantize", "ai-edge-litert")) from e
    resolver = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        loaded = Interpreter(model_path=str(path), num_threads=threads, experimental_op_resolver_type=resolver)
        loaded.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        raise ExportError(f"LiteRT cannot load {path.name}: {e}", where=str(path),
                          fix="flex (SELECT_TF_OPS) models need a runtime with the flex delegate") from e
    return loaded


def io_details(interpreter, source: PreparedModel):
    """(input details in source order, output details in output_0.. order)."""
    runner = interpreter.get_signature_runner()
    ins, outs = runner.get_input_details(), runner.get_output_details()
    if set(ins) == set(source.input_names):
        inputs = [ins[n] for n in source.input_names]
    elif len(ins) == len(source.specs) == 1:
        inputs = list(ins.values())
    else:
        inputs = sorted(ins.values(), key=lambda d: d["index"])
    by_name = sorted(outs, key=lambda n: (len(n), n))  # output_0, output_1, ..., output_10
    return inputs, [outs[n] for n in by_name]


def quantize(x: np.ndarray, detail) -> np.ndarray:
    """`x` in the input tensor's type: int8/uint8 by its scale and zero point, else cast."""
    scale, zero = detail["quantization"]
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return x.astype(dtype, copy=False)


def dequantize(q: np.ndarray, detail) -> np.ndarray:
    """An output tensor as float32 values."""
    scale, zero = detail["quantization"]
    if np.dtype(detail["dtype"]).kind in "iu" and scale:
        return (q.astype(np.float32) - zero) * scale
    return q.astype(np.float32, copy=False)


def set_batch(interpreter, inputs_detail, size: int) -> None:
    """Resizes every input to a batch of `size` and reallocates."""
    for d in inputs_detail:
        interpreter.resize_tensor_input(d["index"], [size, *d["shape_signature"][1:]], strict=False)
    interpreter.allocate_tensors()


def invoke_in_batches(interpreter, inputs_detail, inputs: list[np.ndarray], batch: int) -> Iterator[int]:
    """Runs `interpreter` on whole input arrays, `batch` examples at a time (one at a time where the model's batch
    is fixed at 1; the last batch smaller), quantizing each input as its tensor wants; yields after each invoke
    the number of examples it ran, for the caller to read the tensors it needs."""
    n = len(inputs[0])
    try:
        batch = min(batch, n)
        set_batch(interpreter, inputs_detail, batch)
    except (RuntimeError, ValueError):  # a model with a fixed batch of 1
        batch = 1
        set_batch(interpreter, inputs_detail, 1)
    for start in range(0, n, batch):
        chunk = [x[start:start + batch] for x in inputs]
        if len(chunk[0]) != batch:
            set_batch(interpreter, inputs_detail, len(chunk[0]))
        for x, detail in zip(chunk, inputs_detail):
            interpreter.set_tensor(detail["index"], quantize(x, detail))
        interpreter.invoke()
        yield len(chunk[0])
