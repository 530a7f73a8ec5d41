"""Keras-native quantized variants (`model.quantize`), measured with the same columns as the TFLite files.

Modes (`KERAS_MODES`): keras_int8, keras_int4, keras_float8, keras_gptq and
keras_awq, each a clone of the model quantized by Keras itself, to serve inside
Keras on a server, GPU or TPU; `BASELINE` (keras_float32) is the float model as
serving loads it, the reference every Keras ratio refers to. Keras quantizes
Dense, EinsumDense and Embedding layers (not Conv); GPTQ and AWQ (4-bit, with
calibration data) quantize the Dense/EinsumDense layers of transformer blocks
over integer token ids.

Sizes are what serving holds: the bytes of the model's variables as Keras keeps
them (int8 and packed int4 included, scales included), not the .keras file.
Files are saved uncompiled: no optimizer state. Latency is ``predict_on_batch``
on the current Keras backend at batch 1 and 32, every variant in turn in each
round, the median of the per-round medians. Nothing here imports TensorFlow:
on JAX the variants are made and timed on JAX.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np

from tfscale.compat import keras as keras_compat
from tfscale.compat.keras import quantized as quantized_compat
from tfscale.errors import ConfigError, ExportError
from tfscale.export import files, metrics

log = logging.getLogger("tfscale")

KERAS_MODES = {"keras_int8": "int8", "keras_int4": "int4", "keras_float8": "float8", "keras_gptq": "gptq",
               "keras_awq": "awq"}
BASELINE = "keras_float32"
CALIBRATED = ("keras_gptq", "keras_awq")  # need calibration data
BATCHES = (1, 32)
NUM_SAMPLES = 64  # GPTQ/AWQ calibration sequences (Keras runs each block once per sequence)
MIN_ROUNDS = 5
QUANTIZABLE = ("Dense", "EinsumDense", "Embedding", "ReversibleEmbedding")


@dataclasses.dataclass
class KerasVariant:
    """One Keras variant: the model serving would load, its file, and which layers Keras quantized.

    Attributes:
        mode: "keras_float32" or a key of `KERAS_MODES`.
        model: the (quantized) clone; the user's model is never changed.
        path: the .keras file written (no optimizer state).
        quantized_layers: paths of the layers Keras quantized (empty for the baseline).
        reload_error: why `keras.models.load_model` cannot read the file back (a Keras bug), or None.
    """

    mode: str
    model: keras.Model
    path: Path
    quantized_layers: list[str]
    reload_error: str | None = None


def target(out_dir: Path, mode: str) -> Path:
    """The file of a Keras mode: <mode>.keras."""
    return Path(out_dir) / f"{mode}.keras"


def check_calibration(modes, calibration) -> None:
    """GPTQ and AWQ fit their 4-bit weights to calibration data: asking for them without any is an error.

    Raises:
        ConfigError: keras_gptq or keras_awq without calibration data.
    """
    wanted = [m for m in modes if m in CALIBRATED]
    if wanted and calibration is None:
        raise ConfigError(f"{', '.join(wanted)} need calibration data (GPTQ and AWQ fit the 4-bit weights to the "
                          f"activations of real inputs)", where="calibration",
                          fix="pass calibration= (training inputs, e.g. 128+ token-id sequences; tfscale quantize: "
                              "--calibration DATA), or drop those modes")


def keras_major(version: str) -> int:
    return int(str(version).split(".")[0])


def saved_version(path: str | os.PathLike) -> str | None:
    """The Keras version that wrote the .keras file (its metadata.json), or None if it does not say."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("metadata.json")).get("keras_version")
    except (KeyError, ValueError, OSError, zipfile.BadZipFile, AttributeError):
        return None


def check_version(path: str | os.PathLike) -> None:
    """Refuses a .keras file written by another Keras major version (Keras 2 files differ in layout).

    Raises:
        ConfigError: the file's metadata.json names another major version than this Keras.
    """
    version = saved_version(path)
    if version is None:
        return
    try:
        same = keras_major(version) == keras_major(keras.__version__)
    except ValueError:
        same = False
    if not same:
        raise ConfigError(f"{Path(path).name} was saved by Keras {version}; this is Keras {keras.__version__}, "
                          f"whose .keras format differs between major versions", where=str(path),
                          fix=f"load it with Keras {version.split('.')[0]}.x and re-save it with Keras "
                              f"{keras_major(keras.__version__)} (model.save), or retrain with this version")


def load(path: str | os.PathLike) -> keras.Model:
    """A .keras model, in Keras' safe mode, after `check_version`.

    Raises:
        ConfigError: missing file, another Keras major version, or not loadable.
    """
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ConfigError(f"cannot load a Keras model: {path} is not a .keras file", where=str(path),
                          fix="give a .keras file written by model.save")
    check_version(path)
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as e:
        raise ConfigError(f"cannot load a Keras model from {path}: {str(e).splitlines()[0]}", where=str(path),
                          fix="register custom layers with @keras.saving.register_keras_serializable") from e


def _bytes_per_value(dtype) -> float:
    bits = re.search(r"(\d+)", str(dtype))
    return 1.0 if bits is None else int(bits.group(1)) / 8  # bool: 1 byte; int4 arrives packed in int8


def weight_bytes(model: keras.Model) -> int:
    """The bytes of the model's weights as Keras holds them (what serving loads; no optimizer state)."""
    return int(sum(int(np.prod(v.shape)) * _bytes_per_value(v.dtype) for v in model.weights))


def coverage(model: keras.Model) -> list[str]:
    """Paths of the layers `model.quantize` can quantize (Dense, EinsumDense, Embedding)."""
    return [layer.path or layer.name for layer in keras_compat.flatten_layers(model)
            if type(layer).__name__ in QUANTIZABLE and not list(keras_compat.flatten_layers(layer))]


def structure(model: keras.Model) -> dict | None:
    """Keras' GPTQ/AWQ layer structure: the model's own, or, for a functional model over integer token ids,
    the sub-model up to the first composite block holding Dense/EinsumDense layers, then those blocks in order."""
    own = getattr(model, "get_quantization_layer_structure", None)
    found = own("gptq") if own is not None else None
    if found:
        return found
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) != 1 or "int" not in str(inputs[0].dtype):
        return None
    blocks = [layer for layer in model.layers
              if any(type(sub).__name__ in ("Dense", "EinsumDense") for sub in keras_compat.flatten_layers(layer))]
    if not blocks:
        return None
    try:
        embed = keras.Model(inputs, blocks[0].input, name=f"{model.name}_pre_blocks")
    except (ValueError, AttributeError):
        return None
    return {"pre_block_layers": [embed], "sequential_blocks": blocks}


class _TokenIds:
    """The "tokenizer" GPTQ/AWQ configs insist on: the calibration data are token ids already (never called)."""

    def tokenize(self, ids):
        return ids


def _config(mode: str, model: keras.Model, calibration: np.ndarray):
    found = structure(model)
    if found is None:
        raise ExportError(f"{mode} quantizes transformer blocks over token ids; {model.name!r} has none (it takes "
                          f"{[str(t.dtype) for t in getattr(model, 'inputs', [])]} inputs)",
                          where=f"model {model.name!r}",
                          fix="use keras_int8 or keras_int4, or give the model get_quantization_layer_structure")
    ids = np.asarray(calibration)
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ExportError(f"{mode} calibration data must be token ids (batch, sequence) of integers, got "
                          f"{ids.dtype} {ids.shape}", where="calibration", fix="pass the token ids the model takes")
    options = dict(dataset=ids, tokenizer=_TokenIds(), num_samples=min(NUM_SAMPLES, len(ids)),
                   sequence_length=ids.shape[-1], group_size=-1, quantization_layer_structure=found)
    cls = keras.quantizers.GPTQConfig if mode == "gptq" else keras.quantizers.AWQConfig
    return cls(weight_bits=4, **options) if mode == "gptq" else cls(**options)


@contextlib.contextmanager
def keras_progress_off():
    """GPTQ/AWQ draw a Keras progress bar per block; quantize_all has its own."""
    was = keras.utils.is_interactive_logging_enabled()
    keras.utils.disable_interactive_logging()
    try:
        yield
    finally:
        if was:
            keras.utils.enable_interactive_logging()


def quantize(model: keras.Model, mode: str, calibration=None) -> tuple[keras.Model, list[str]]:
    """(a quantized clone of `model`, the paths of the layers Keras quantized); `model` is untouched.

    Raises:
        ExportError: the clone fails, Keras fails, or Keras quantized no layer (e.g. int4 on a pure CNN).
    """
    keras_mode = KERAS_MODES.get(mode, mode)
    try:
        clone = model.__class__.from_config(model.get_config())  # uncompiled: no optimizer state
        clone.set_weights(model.get_weights())
    except Exception as e:
        raise ExportError(f"could not copy {model.name!r} to quantize it: {e}", where=f"model {model.name!r}",
                          fix="give custom layers get_config so the model can be cloned") from e
    config = _config(keras_mode, clone, calibration) if keras_mode in ("gptq", "awq") else None
    filters = None
    if config is not None:  # only the blocks' layers: GPTQ/AWQ fit nothing else (a head would hold both kernels)
        inside = {id(sub) for block in config.quantization_layer_structure["sequential_blocks"]
                  for sub in keras_compat.flatten_layers(block, include_self=True)}
        filters = lambda layer: id(layer) in inside  # noqa: E731
    with warnings.catch_warnings(), keras_progress_off():
        warnings.simplefilter("ignore")  # one warning per layer Keras leaves in float
        try:
            clone.quantize(keras_mode, config=config, filters=filters)
        except Exception as e:
            raise ExportError(f"Keras could not quantize {model.name!r} to {keras_mode}: {e}",
                              where=f"model {model.name!r}", fix="try keras_int8, or a TFLite mode") from e
    if config is not None:  # saved in each layer's config: the structure (layers, the model) would recurse
        config.quantization_layer_structure = config.dataset = config.tokenizer = None
    done = [layer.path or layer.name for layer in keras_compat.flatten_layers(clone)
            if getattr(layer, "quantization_mode", None)]
    if not done:
        kinds = sorted({type(layer).__name__ for layer in keras_compat.flatten_layers(model)})
        raise ExportError(f"Keras {keras_mode} quantizes none of {model.name!r}'s layers ({', '.join(kinds)}); it "
                          f"quantizes Dense, EinsumDense and Embedding", where=f"model {model.name!r}",
                          fix="use a TFLite mode (int8 quantizes Conv layers too)")
    log.info("Keras %s quantized %d layer(s): %s", keras_mode, len(done), ", ".join(done))
    return clone, done


def save(model: keras.Model, path: Path, *, overwrite: bool) -> Path:
    """Writes `model` (uncompiled: no optimizer state) as .keras, atomically, loadable by `keras.models.load_model`."""
    with files.atomic_file(path, overwrite=overwrite, suffix=".keras") as tmp:
        try:
            model.save(tmp)
            quantized_compat.make_loadable(tmp, model)
        except Exception as e:
            raise ExportError(f"could not save {model.name!r} as .keras: {e}", where=str(path),
                              fix="register custom layers with @keras.saving.register_keras_serializable") from e
    return path


def reload_error(path: Path) -> str | None:
    """Why the saved file does not load back with plain `keras.models.load_model`, or None when it does."""
    try:
        keras.models.load_model(path)
    except Exception as e:
        return f"keras.models.load_model cannot read {path.name} back with Keras {keras.__version__}: " \
               f"{str(e).splitlines()[0]}"
    return None


def variants(model: keras.Model, modes, out_dir: Path, *, calibration=None,
             overwrite: bool = False) -> dict[str, KerasVariant | ExportError]:
    """The baseline and each Keras mode in `modes`, saved as <mode>.keras; a mode that fails maps to its error."""
    out_dir = Path(out_dir)
    baseline = model.__class__.from_config(model.get_config())
    baseline.set_weights(model.get_weights())
    made: dict[str, KerasVariant | ExportError] = {
        BASELINE: KerasVariant(BASELINE, baseline, save(baseline, target(out_dir, BASELINE), overwrite=overwrite), [])}
    for mode in [m for m in modes if m in KERAS_MODES]:
        try:
            clone, done = quantize(model, mode, calibration)
            path = save(clone, target(out_dir, mode), overwrite=overwrite)
            made[mode] = KerasVariant(mode, clone, path, done, reload_error(path))
        except ExportError as e:
            made[mode] = e
    return made


def _predict(model: keras.Model, inputs: list[np.ndarray], batch_size: int = 256) -> np.ndarray:
    x = inputs[0] if len(inputs) == 1 else inputs
    out = model.predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


def timings(models: dict[str, keras.Model], inputs: list[np.ndarray], *, runs: int = 50,
            rounds: int = MIN_ROUNDS) -> dict[str, dict]:
    """predict_on_batch latency per model at each of `BATCHES`: median over rounds (all arms in turn) of each
    round's median; p50_us_b<N>, and the per-round figures at batch 1 (p50_rounds_us_b1)."""
    arms = {}
    for name, model in models.items():
        for batch in BATCHES:
            x = [np.resize(v, (batch, *v.shape[1:])) for v in inputs]
            x = x[0] if len(x) == 1 else x
            model.predict_on_batch(x)  # compile (traced per shape)
            arms[(name, batch)] = (model, x)
    per_round = max(2, runs // rounds)
    medians: dict = {key: [] for key in arms}
    keys = list(arms)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            model, x = arms[key]
            times = []
            for _ in range(per_round):
                start = time.perf_counter_ns()
                model.predict_on_batch(x)
                times.append((time.perf_counter_ns() - start) / 1e3)
            medians[key].append(float(np.median(times)))
    result: dict[str, dict] = {}
    for (name, batch), values in medians.items():
        row = result.setdefault(name, {"backend": keras.backend.backend()})
        row[f"p50_us_b{batch}"] = float(f"{np.median(values):.4g}")
        if batch == 1:
            row["p50_rounds_us_b1"] = [float(f"{v:.4g}") for v in values]
    return result


def rows(made: dict, inputs: list[np.ndarray], labels, metric: str | None, *, runs: int = 50) -> dict[str, dict]:
    """One report row per Keras variant: size (weights), metric and drop, agreement, latency at batch 1 and 32."""
    base = made[BASELINE]
    reference = _predict(base.model, inputs)
    metric = metrics.pick(metric, reference, labels) if metric == "auto" else metric
    base_value = metrics.score(metric, reference, labels, reference)
    base_bytes = weight_bytes(base.model)
    found: dict[str, dict] = {}
    for mode, variant in made.items():
        if isinstance(variant, ExportError):
            found[mode] = {"target": "keras", "error": str(variant)}
            continue
        outputs = reference if mode == BASELINE else _predict(variant.model, inputs)
        value = metrics.score(metric, outputs, labels, reference)
        size = weight_bytes(variant.model)
        found[mode] = {"target": "keras", "path": str(variant.path), "size_bytes": size,
                       "file_bytes": variant.path.stat().st_size, "size_vs_float32": size / base_bytes,
                       "metric": metric, "value": value, "drop": metrics.drop(metric, value, base_value),
                       "agreement": metrics.agreement(metric, outputs, reference),
                       "quantized_layers": len(variant.quantized_layers)}
        if variant.reload_error:
            found[mode]["reload_error"] = variant.reload_error
    timed = timings({m: v.model for m, v in made.items() if not isinstance(v, ExportError)},
                    [x[:32] for x in inputs], runs=runs)
    for mode, figures in timed.items():
        found[mode].update(figures)
    return found
