"""Keras 3 model config → tf-keras (Keras 2) model config, for tensorflow-model-optimization.

tfmot accepts only tf-keras models (tensorflow/model-optimization#1119), so the
tfmot worker rebuilds the user's Keras 3 model from its config in tf-keras and
copies the weights over. The two formats differ in a few known ways, handled here:

- objects are ``{"module", "class_name", "config", "registered_name"}`` in Keras 3,
  ``{"class_name", "config"}`` in tf-keras;
- dtype policies are objects in Keras 3, names in tf-keras;
- InputLayer has ``batch_shape``/``optional`` instead of ``batch_input_shape``;
- functional ``inbound_nodes`` are call args holding ``__keras_tensor__`` references
  in Keras 3, ``[[layer, node, tensor, kwargs], ...]`` lists in tf-keras;
- newer Keras 3 arguments (``quantization_config``, GlorotUniform ``input_axes``...)
  that tf-keras does not know are dropped (reported back, as they may matter).

Only this module and `tfmot_worker` know about tf-keras; delete both the day
tfmot supports Keras 3.
"""

from __future__ import annotations

import inspect
from typing import Any

# Keyword arguments every tf-keras layer accepts through its base class.
LAYER_KWARGS = {"input_dim", "input_shape", "batch_input_shape", "batch_size", "weights", "activity_regularizer",
                "autocast", "implementation", "name", "trainable", "dtype", "dynamic"}
MODEL_CLASSES = ("Sequential", "Functional", "Model")


def _tensor_refs(obj: Any, out: list) -> None:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(list(obj["config"]["keras_history"]))
            return
        for value in obj.values():
            _tensor_refs(value, out)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _tensor_refs(value, out)


def _legacy_nodes(nodes: list) -> list:
    legacy = []
    for node in nodes:
        refs: list = []
        _tensor_refs(node.get("args", []), refs)
        kwargs = {k: v for k, v in node.get("kwargs", {}).items()
                  if not (isinstance(v, dict) and v.get("class_name") == "__keras_tensor__")}
        legacy.append([[name, index, tensor, kwargs] for name, index, tensor in refs])
    return legacy


def to_legacy(obj: Any) -> Any:
    """A Keras 3 serialized object (from `model.get_config()` / `to_json`) in tf-keras' format."""
    if isinstance(obj, list):
        return [to_legacy(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "class_name" in obj and "config" in obj:
        kind = obj["class_name"]
        if kind in ("DTypePolicy", "FloatDTypePolicy"):
            return obj["config"]["name"]
        config = {k: to_legacy(v) for k, v in (obj["config"] or {}).items()}
        if kind == "InputLayer":
            config["batch_input_shape"] = config.pop("batch_shape", config.get("batch_input_shape"))
            config.pop("optional", None)
        new = {"class_name": kind, "config": config}
        if "name" in obj:
            new["name"] = obj["name"]
        if "inbound_nodes" in obj:
            new["inbound_nodes"] = _legacy_nodes(obj["inbound_nodes"])
        return new
    return {k: to_legacy(v) for k, v in obj.items()}


def _accepted(cls: type) -> set[str]:
    """Keyword arguments `cls(...)` accepts, following **kwargs up the class hierarchy."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def _find(name: str, modules: list) -> type | None:
    for module in modules:
        cls = getattr(module, name, None)
        if inspect.isclass(cls):
            return cls
    return None


def prune_unknown(obj: Any, tf_keras, dropped: list[str]) -> Any:
    """Drops config keys the tf-keras classes do not accept; appends "Class.key" to `dropped`."""
    modules = [tf_keras.layers, tf_keras.initializers, tf_keras.regularizers, tf_keras.constraints, tf_keras.losses]
    if isinstance(obj, list):
        return [prune_unknown(v, tf_keras, dropped) for v in obj]
    if not isinstance(obj, dict):
        return obj
    config = obj.get("config")
    if "class_name" in obj and isinstance(config, dict):
        if obj["class_name"] in MODEL_CLASSES:
            config["layers"] = [prune_unknown(layer, tf_keras, dropped) for layer in config.get("layers", [])]
            return obj
        cls = _find(obj["class_name"], modules)
        if cls is not None:
            allowed = _accepted(cls) | (LAYER_KWARGS if issubclass(cls, tf_keras.layers.Layer) else set())
            for key in [k for k in config if k not in allowed]:
                dropped.append(f"{obj['class_name']}.{key}")
                del config[key]
        for key, value in config.items():
            config[key] = prune_unknown(value, tf_keras, dropped)
    return obj


def translate(keras3_config: dict, tf_keras) -> tuple[dict, list[str]]:
    """(tf-keras config, dropped "Class.key" names) for a Keras 3 model config."""
    dropped: list[str] = []
    config = prune_unknown(to_legacy(keras3_config), tf_keras, dropped)
    return config, sorted(set(dropped))


def translate_object(obj: dict, tf_keras) -> dict:
    """One serialized Keras 3 object (a loss, an initializer) in tf-keras' format."""
    return prune_unknown(to_legacy(obj), tf_keras, [])
