"""A .keras file of a quantized model whose quantized layers sit inside composite layers, made loadable.

Checked on Keras 3.15.1 with keras-hub 0.32 (TensorFlow and JAX backends).

The bug: `model.quantize(mode)` on a functional model quantizes the Dense and
EinsumDense layers *inside* composite layers (a keras-hub `TransformerEncoder`,
any layer that builds sublayers), but the composite layer's config still holds
its float dtype policy. `keras.models.load_model` then rebuilds those sublayers
in float, and loading fails ("Layer 'query' expected 2 variables, but received 3").
keras-hub's own `Backbone` avoids it by saving a `DTypePolicyMap` (layer path →
policy) as its dtype; plain functional and Sequential models do not.

The fix, with public APIs only (`keras.dtype_policies.DTypePolicyMap`, `Layer.path`):
after `model.save`, rewrite config.json in the file so that each top-level composite
layer holding quantized sublayers gets a `DTypePolicyMap` of those sublayers'
paths. keras-hub layers (and any layer that passes ``dtype=self.dtype_policy`` to its
sublayers) then rebuild them quantized and the weights load. Where a layer does not
pass its policy down, loading still fails and the caller says so. Delete this module
the day `keras.models.load_model` restores nested quantized layers by itself.
"""

from __future__ import annotations

import json
import os
import zipfile

import keras

from tfscale.compat.keras import flatten_layers

CONFIG = "config.json"


def nested_policies(layer) -> dict:
    """{sublayer path: dtype policy} of the quantized sublayers of `layer` (empty for a plain layer)."""
    return {sub.path: sub.dtype_policy for sub in flatten_layers(layer)
            if getattr(sub, "quantization_mode", None) and sub.path}


def _patch(config: dict, model) -> bool:
    layers = config.get("config", {}).get("layers")
    if not isinstance(layers, list):
        return False
    by_name = {layer.name: layer for layer in getattr(model, "layers", [])}
    changed = False
    for entry in layers:
        layer = by_name.get(entry.get("config", {}).get("name"))
        policies = nested_policies(layer) if layer is not None else {}
        if not policies:
            continue
        policy_map = keras.dtype_policies.DTypePolicyMap(default_policy=layer.dtype_policy)
        for path, policy in policies.items():
            policy_map[path] = policy
        entry["config"]["dtype"] = keras.dtype_policies.serialize(policy_map)
        changed = True
    return changed


def make_loadable(path: str | os.PathLike, model) -> bool:
    """Rewrites config.json in the .keras file `path` (just saved from `model`); True if anything changed.

    Call it on a temporary file before it is moved into place: the file is rewritten in place.
    """
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info.filename)) for info in archive.infolist()]
    names = [info.filename for info, _ in entries]
    if CONFIG not in names:
        return False
    config = json.loads(dict((i.filename, b) for i, b in entries)[CONFIG])
    if not _patch(config, model):
        return False
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for info, data in entries:
            archive.writestr(info, json.dumps(config).encode() if info.filename == CONFIG else data)
    return True
