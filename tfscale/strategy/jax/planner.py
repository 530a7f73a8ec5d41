"""The memory planner of `model_parallel`: bytes per device on each candidate mesh, before anything is sharded.

`tfscale info --backend jax --model M --device-memory 16GiB` (#26) builds the model once, unsharded, with its
optimizer's state (`variables_of`), and then, for every mesh (data, model) whose sizes multiply to the device
count, places each variable with the same `Placer` the `model_parallel` strategy uses (the same layout rules,
"auto" or a table or a LayoutMap's rules; optimizer slots follow their variable, as
`CheckedModelParallel` makes them) and adds up, per device:

- parameters: each variable's bytes divided by the sizes of the mesh axes it is sharded over;
- optimizer state: the same, for each slot of the optimizer (Adam: 2 a variable) and its scalars;
- activations, an estimate: the outputs of the model's layers, per example, times the batch of one data shard
  (each layer's output is kept for the backward pass; what a layer holds inside it, such as attention scores,
  is not counted, so this is a floor), replicated over the model axis.

It recommends the mesh with the smallest model axis whose total fits the device memory, and when none does,
says the smallest memory that would fit (`plan`). Pure arithmetic: no device is touched.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from tfscale.errors import ConfigError
from tfscale.strategy.jax.layout import Placer, Rule

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000 ** 2, "mb": 1000 ** 2, "mib": 1024 ** 2,
          "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3, "t": 1000 ** 4, "tb": 1000 ** 4, "tib": 1024 ** 4}


def parse_bytes(text: str, where: str = "--device-memory") -> int:
    """'16GiB', '16 GB', '512MiB', '1e9' -> bytes.

    Raises:
        ConfigError: not a positive size with a known unit.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in _UNITS or float(match.group(1)) <= 0:
        raise ConfigError(f"{text!r} is not a memory size", where=where,
                          fix="give a positive number with a unit, e.g. 16GiB, 80GB or 512MiB")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


@dataclasses.dataclass(frozen=True)
class Variable:
    """What the planner needs of one variable: its path, shape and bytes per element; `follows`: the path of the
    model variable an optimizer slot is laid out like (None: placed by its own path)."""

    path: str
    shape: tuple[int, ...]
    itemsize: int
    follows: str | None = None
    layer: Any = dataclasses.field(default=None, compare=False, repr=False)  # that creates it (for "auto")

    @property
    def bytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


@dataclasses.dataclass(frozen=True)
class MeshPlan:
    """Bytes per device of one mesh."""

    mesh: dict[str, int]
    parameters: int
    optimizer: int
    activations: int
    whole: tuple[str, ...]  # large variables no rule shards on this mesh

    @property
    def total(self) -> int:
        return self.parameters + self.optimizer + self.activations

    def to_dict(self) -> dict[str, Any]:
        return {"mesh": self.mesh, "parameters_bytes": self.parameters, "optimizer_bytes": self.optimizer,
                "activation_bytes": self.activations, "total_bytes": self.total, "whole": list(self.whole)}


def meshes(devices: int, axis_names: Sequence[str] = ("data", "model")) -> list[dict[str, int]]:
    """Every (data, model) mesh of `devices`, the model axis smallest first."""
    data_axis, model_axis = axis_names[0], axis_names[-1]
    return [{data_axis: devices // m, model_axis: m} for m in range(1, devices + 1) if devices % m == 0]


def per_device(variables: Sequence[Variable], mesh: Mapping[str, int], rules: list[Rule], *, auto: bool,
               min_shard_params: int, model_axis: str) -> tuple[int, int, tuple[str, ...]]:
    """(parameter bytes, optimizer bytes, large variables left whole) on each device of `mesh`.

    Raises:
        ConfigError: a rule does not fit a variable on this mesh (as `Placer.place` raises it).
    """
    placer = Placer(dict(mesh), rules, auto=auto, min_shard_params=min_shard_params, model_axis=model_axis,
                    has_layout=True)
    axes_of: dict[str, tuple[str | None, ...]] = {}
    parameters = optimizer = 0
    for v in sorted(variables, key=lambda v: v.follows is not None):  # the model's first: slots follow them
        axes = axes_of.get(v.follows) if v.follows else None
        if axes is None or len(axes) != len(v.shape):
            axes = placer.place(v.path, v.shape, v.layer).axes if v.shape else ()
        axes_of[v.path] = axes
        split = math.prod(mesh[a] for a in axes if a is not None)
        share = -(-v.bytes // split)
        if v.follows is None:
            parameters += share
        else:
            optimizer += share
    whole = tuple(p.path for p in placer.placements.values()
                  if not p.sharded and p.parameters >= min_shard_params and mesh.get(model_axis, 1) > 1)
    return parameters, optimizer, whole


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Every candidate mesh's bytes per device, and the recommendation (None: no mesh fits)."""

    devices: int
    device_memory: int | None
    batch_size: int
    plans: tuple[MeshPlan, ...]
    recommended: MeshPlan | None
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"devices": self.devices, "device_memory_bytes": self.device_memory, "batch_size": self.batch_size,
                "meshes": [p.to_dict() for p in self.plans],
                "recommended": None if self.recommended is None else self.recommended.mesh,
                "notes": list(self.notes)}


def plan(variables: Sequence[Variable], devices: int, *, rules: list[Rule], auto: bool, min_shard_params: int,
         activation_bytes_per_example: int = 0, batch_size: int = 1, device_memory: int | None = None,
         axis_names: Sequence[str] = ("data", "model"), check: bool = True) -> MemoryPlan:
    """Bytes per device on every (data, model) mesh of `devices` devices; the mesh with the smallest model axis
    whose total fits `device_memory` (None: no limit given, the smallest model axis).

    A mesh a rule cannot be laid on (a dimension the model axis does not divide) is left out, with a note.

    Raises:
        ConfigError: `check` and no mesh fits `device_memory`: the error gives the smallest memory that would.
    """
    model_axis = axis_names[-1]
    plans, notes = [], []
    for mesh in meshes(devices, axis_names):
        try:
            parameters, optimizer, whole = per_device(variables, mesh, rules, auto=auto,
                                                      min_shard_params=min_shard_params, model_axis=model_axis)
        except ConfigError as e:
            notes.append(f"mesh {mesh} left out: {e.what}")
            continue
        data = mesh[axis_names[0]]
        activations = activation_bytes_per_example * -(-batch_size // data)
        plans.append(MeshPlan(mesh, parameters, optimizer, activations, whole))
    fitting = [p for p in plans if device_memory is None or p.total <= device_memory]
    recommended = fitting[0] if fitting else None
    result = MemoryPlan(devices, device_memory, batch_size, tuple(plans), recommended, tuple(notes))
    if check and recommended is None and plans:
        best = min(plans, key=lambda p: p.total)
        raise ConfigError(
            f"the model does not fit {human(device_memory)} per device on any mesh of {devices} device(s): the "
            f"smallest need is {human(best.total)} per device (mesh {best.mesh}: parameters {human(best.parameters)}"
            f", optimizer state {human(best.optimizer)}, activations {human(best.activations)} at batch "
            f"{batch_size})", where="--device-memory",
            fix=f"give devices with at least {human(best.total)} each, more devices, a smaller batch, or a smaller "
                "model")
    if check and not plans:
        raise ConfigError(f"no mesh of {devices} device(s) can hold this layout: " + "; ".join(notes),
                          where="strategy.layout", fix="change the layout rules, or the number of devices")
    return result


def variables_of(model) -> list[Variable]:
    """The model's variables and its optimizer's (built for the model's trainable variables when it is not yet:
    a compiled model's optimizer, else none), each slot tied to the variable it was made from."""
    from tfscale.compat import keras as keras_compat

    owner: dict[int, Any] = {}
    for layer in keras_compat.flatten_layers(model, include_self=True):  # outer first: the innermost owner wins
        for v in layer.weights:
            owner[id(v)] = layer
    found = [Variable(v.path, tuple(int(d) for d in v.shape), _itemsize(v), layer=owner.get(id(v)))
             for v in model.weights]
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return found
    if not getattr(optimizer, "built", False):
        optimizer.build(model.trainable_variables)
    by_name = {v.path.replace("/", "_"): v.path for v in model.trainable_variables}
    for v in optimizer.variables:
        shape = tuple(int(d) for d in v.shape)
        name = v.path.split("/")[-1]
        follows = next((path for key, path in by_name.items() if name.startswith(key + "_")), None)
        found.append(Variable(v.path, shape, _itemsize(v), follows=follows or "(optimizer)"))
    return found


def _itemsize(v) -> int:
    import numpy as np

    from keras import backend

    dtype = backend.standardize_dtype(v.dtype)
    return 2 if dtype == "bfloat16" else int(np.dtype(dtype).itemsize)


def activation_bytes_per_example(model, sequence_length: int | None = None) -> int:
    """The bytes of every layer's output for one example (a floor: see the module docstring); 0 where the model's
    layers have no known output shapes (a subclassed model not yet called symbolically). `sequence_length`
    stands for the dimensions left open after the batch (a text model's sequence); without it such outputs are
    not counted."""
    import numpy as np

    from keras import backend

    total = 0
    for layer in getattr(model, "layers", ()):
        try:
            outputs = layer.output
        except (AttributeError, ValueError, RuntimeError):
            continue
        for out in (outputs if isinstance(outputs, (list, tuple)) else
                    outputs.values() if isinstance(outputs, dict) else [outputs]):
            shape = getattr(out, "shape", None)
            if shape is None or len(shape) < 1:
                continue
            shape = [sequence_length if d is None else d for d in shape[1:]]
            if any(d is None for d in shape):
                continue
            dtype = backend.standardize_dtype(getattr(out, "dtype", "float32"))
            size = 2 if dtype == "bfloat16" else int(np.dtype(dtype).itemsize)
            total += math.prod(int(d) for d in shape) * size
    return total
