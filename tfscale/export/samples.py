"""Examples for calibration and validation, drawn from whatever the user trains on.

Accepted: numpy arrays (``x``, ``(x, y)``, or a list of arrays per input), a
`tf.data.Dataset` (batched or not, of ``x`` or ``(x, y[, weight])``), a
tf.distribute distributed dataset (as `Scale.distribute` returns), a tfscale
pipeline (anything with ``dataset_for(input_context)``), or a path (`from_path`:
an .npz, a folder of .npy files, a folder written by `tfscale data convert`, or
an image folder). The first N examples are taken, in order, and checked against
the model's input specs.
"""

from __future__ import annotations

import os
import types
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfscale.data.badrecords import as_data_error
from tfscale.data.image_folder import image_folder
from tfscale.data.records.format import read_meta
from tfscale.data.tfrecord import tfrecord
from tfscale.errors import DataError


def _leaves(value) -> list:
    return [_numpy(v) for v in tf.nest.flatten(value)]


def _numpy(value) -> np.ndarray:
    if isinstance(value, tf.distribute.DistributedValues):  # one batch per local replica
        return np.concatenate([np.asarray(v) for v in value.values])
    return np.asarray(value)


def _split(element, n_inputs: int, input_names: Sequence[str]):
    """(inputs, label) from one element: x, (x,), (x, y) or (x, y, sample_weight)."""
    if isinstance(element, Mapping):
        return [element[k] for k in input_names], None
    if isinstance(element, (tuple, list)):
        if n_inputs > 1 and len(element) == n_inputs and not isinstance(element[0], (tuple, list, Mapping)):
            return list(element), None
        x = element[0]
        y = element[1] if len(element) > 1 else None
        if isinstance(x, Mapping):
            x = [x[k] for k in input_names]
        return (list(x) if isinstance(x, (tuple, list)) else [x]), y
    return [element], None


def _as_dataset(data, specs: Sequence[tf.TensorSpec], where: str):
    """`data` as an iterable of batches; unbatched tf.data elements are batched here."""
    if isinstance(data, (str, os.PathLike)):
        data = from_path(data, specs, where)
    if hasattr(data, "batched_dataset_for") and hasattr(data, "deterministic"):  # a tfscale pipeline: per batch
        return _batches(data.deterministic())
    if hasattr(data, "dataset_for") and not isinstance(data, tf.data.Dataset):
        data = data.dataset_for(tf.distribute.InputContext())
    if isinstance(data, tf.data.Dataset):
        x, _ = _split(data.element_spec, len(specs), [s.name for s in specs])
        first = tf.nest.flatten(x)[0]
        if _batched(np.empty([1 if d is None else d for d in first.shape], np.float32), specs[0], where):
            return data
        return data.batch(256)
    return data


def _batches(pipeline, size: int = 256):
    """A tfscale pipeline's batches; a bad record (raise mode) is the DataError naming it, as when iterating it."""
    try:
        yield from pipeline.dataset(batch_size=size)
    except tf.errors.OpError as e:
        error = as_data_error(e)
        if error is e and isinstance(e, tf.errors.InvalidArgumentError):  # a decoder's own message
            error = pipeline.source.find_bad() or e
        raise error from None


def _batched(first: np.ndarray, spec: tf.TensorSpec, where: str) -> bool:
    rank = len(spec.shape)
    if first.ndim == rank:
        return True
    if first.ndim == rank - 1:
        return False
    raise DataError(f"examples have shape {first.shape} but the model input {spec.name!r} takes "
                    f"{_shape(spec)} (batch first)", where=where,
                    fix="pass examples shaped like the training input, e.g. the same tf.data pipeline")


def _shape(spec: tf.TensorSpec) -> str:
    return "(" + ", ".join("N" if i == 0 else str(d) for i, d in enumerate(spec.shape.as_list())) + ")"


def collect(data, specs: Sequence[tf.TensorSpec], *, max_samples: int | None, where: str):
    """Up to `max_samples` examples of `data` (all when None) as ([array per input], labels or None).

    Raises:
        DataError: the data is empty, of an unsupported kind, or its shape or dtype
            does not fit the model's inputs.
    """
    data = _as_dataset(data, specs, where)
    names = [s.name for s in specs]
    xs_parts: list[list[np.ndarray]] = [[] for _ in specs]
    ys: list[np.ndarray] = []
    count = 0
    if isinstance(data, (np.ndarray, tuple, list, Mapping)):
        elements = [data]
    elif isinstance(data, (tf.data.Dataset, tf.distribute.DistributedDataset, types.GeneratorType)):
        elements = iter(data)
    else:
        raise DataError(f"cannot read examples from a {type(data).__name__}", where=where,
                        fix="pass a tf.data.Dataset, numpy arrays (x or (x, y)), or a tfscale pipeline")
    for element in elements:
        x, y = _split(element, len(specs), names)
        x = [_numpy(v) for v in x]
        if len(x) != len(specs):
            raise DataError(f"examples have {len(x)} input(s), the model takes {len(specs)}", where=where,
                            fix="give one array per model input")
        if y is not None:
            y = _leaves(y)[0]
        if x[0].ndim == 0:
            raise DataError("examples are scalars", where=where, fix="pass arrays with a batch dimension first")
        take = len(x[0]) if max_samples is None else min(len(x[0]), max_samples - count)
        for part, v in zip(xs_parts, x):
            part.append(v[:take])
        if y is not None:
            ys.append(np.asarray(y)[:take])
        count += take
        if max_samples is not None and count >= max_samples:
            break
    if count == 0:
        raise DataError("no examples found", where=where, fix="pass a non-empty dataset or array")
    inputs = [check(np.concatenate(p), s, where) for p, s in zip(xs_parts, specs)]
    labels = np.concatenate(ys) if len(ys) == len(xs_parts[0]) and ys else None
    return inputs, labels


def check(x: np.ndarray, spec: tf.TensorSpec, where: str) -> np.ndarray:
    """`x` cast to the spec's dtype, after checking its shape and kind of dtype.

    Raises:
        DataError: shape differs from the spec, or the dtype cannot carry the
            model's input (text, or integers where the model takes floats).
    """
    expected = spec.shape.as_list()[1:]
    if x.ndim != len(expected) + 1 or any(e is not None and e != g for e, g in zip(expected, x.shape[1:])):
        raise DataError(f"examples have shape {tuple(x.shape)} but the model input {spec.name!r} takes {_shape(spec)}",
                        where=where, fix="pass examples shaped like the training input (same preprocessing)")
    want = spec.dtype.as_numpy_dtype
    if x.dtype.kind not in "biuf" or (np.dtype(want).kind == "f" and x.dtype.kind != "f"):
        raise DataError(f"examples are {x.dtype} but the model input {spec.name!r} takes {spec.dtype.name}",
                        where=where, fix="pass the data after the same preprocessing as in training "
                                         "(e.g. images scaled to float with x / 255)")
    return x.astype(want, copy=False)


def from_path(path, specs: Sequence[tf.TensorSpec], where: str):
    """Examples stored at `path`, read as the model takes them.

    An .npz (arrays x and y) or a folder of x.npy / y.npy: (x, y) arrays. A folder written
    by `tfscale data convert`: its records, images decoded and resized to the model's input
    (height, width, channels) and scaled to [0, 1] as `ts.data.image_folder` does. An image
    folder (one subfolder per class): the same, from the files.

    Raises:
        DataError: nothing readable at `path`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist", where=where, fix="give an .npz, a folder of .npy files, a folder "
                        "written by `tfscale data convert`, or an image folder (one subfolder per class)")
    meta = read_meta(str(path)) if path.is_dir() else None
    if meta is not None and meta.get("kind") != "images":
        return tfrecord(str(path))
    if path.is_dir() and not list(path.glob("*.npy")):
        shape = specs[0].shape.as_list()
        if len(specs) != 1 or len(shape) != 4 or None in shape[1:]:
            raise DataError(f"{path} holds images but the model takes {_shape(specs[0])}", where=where,
                            fix="give images to a model of one (N, height, width, channels) input, or an .npz")
        return image_folder(str(path), image_size=tuple(shape[1:3]), channels=shape[3])
    x, y = load_arrays(path)
    return x if y is None else (x, y)


def load_arrays(path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y or None) from an .npz file with arrays "x" and "y", or a folder holding x.npy and y.npy.

    Raises:
        DataError: the file is missing or holds no "x".
    """
    path = Path(path)
    if path.is_dir():
        arrays = {p.stem: p for p in path.glob("*.npy")}
        if "x" not in arrays:
            raise DataError(f"no x.npy in {path}", where=str(path), fix="save inputs as x.npy (and labels as y.npy)")
        return np.load(arrays["x"]), (np.load(arrays["y"]) if "y" in arrays else None)
    if not path.is_file():
        raise DataError(f"{path} does not exist", where=str(path), fix="give an .npz file or a folder of .npy files")
    if not zipfile.is_zipfile(path):  # np.load would take it for a pickle
        raise DataError(f"{path} is not an .npz file (numpy.savez writes a zip archive)", where=str(path),
                        fix="np.savez(path, x=inputs, y=labels)")
    try:
        with np.load(path) as data:
            arrays = {name: data[name] for name in data.files}
    except (ValueError, OSError, AttributeError, TypeError) as e:
        raise DataError(f"cannot read {path}: {e}", where=str(path), fix="give an .npz written by numpy.savez") from e
    if "x" not in arrays:
        raise DataError(f"{path.name} holds {sorted(arrays)}, not an array named x", where=str(path),
                        fix="np.savez(path, x=inputs, y=labels)")
    return arrays["x"], arrays.get("y")


def localize(data, specs: Sequence[tf.TensorSpec], *, max_samples: int | None, where: str):
    """`data` as numpy ((x, y) or x) when it is a tf.distribute distributed dataset, else unchanged.

    Call it on every worker, before deciding who writes: iterating a multi-worker
    distributed dataset reduces across workers at each batch, so all must draw in step.
    """
    if not isinstance(data, tf.distribute.DistributedDataset):
        return data
    inputs, labels = collect(data, specs, max_samples=max_samples, where=where)
    x = inputs[0] if len(inputs) == 1 else list(inputs)
    return x if labels is None else (x, labels)
