"""Where each variable of a model-parallel model lives: layout rules, checked before training.

A layout is "auto" (every variable of at least `min_shard_params` parameters is
sharded over the model axis: by the structure of the layer that creates it where
it is known, structure.py: embeddings over the vocabulary, attention over heads,
projection pairs Megatron-style, experts over experts; else on its last dimension
that the axis divides, keras-team/keras#19420), a table of
rules ``{path regex: axes}``, or a `keras.distribution.LayoutMap`. Rule keys
match variable paths (``sequential/dense/kernel``) in full, as Keras' LayoutMap
does; each axis is a mesh axis name or None (replicated along that dimension).

Hand-written maps go wrong silently (keras-team/keras-hub#2807 found most
models' attention weights sharded on the wrong axis), so `Placer` checks every
variable as Keras creates it, and `check` looks at the whole model when the
Scale's scope closes:

- a dimension the mesh axis does not divide: a ConfigError at once, naming the
  variable, its shape and the axis (JAX would fail later, with a trace);
- a rule that matches no variable: a ConfigError listing the model's paths;
- no layout at all: a ConfigError listing the model's paths;
- a variable of at least `min_shard_params` parameters left whole: a warning naming it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from typing import Any

from tfscale.errors import ConfigError
from tfscale.strategy.jax.structure import structured_axes

log = logging.getLogger("tfscale")


@dataclasses.dataclass(frozen=True)
class Rule:
    """One layout rule: variables whose path matches `pattern` (in full) get `axes`."""

    pattern: str
    axes: tuple[str | None, ...]

    def matches(self, path: str) -> bool:
        return path == self.pattern or re.fullmatch(self.pattern, path) is not None


@dataclasses.dataclass(frozen=True)
class Placement:
    """What the layout decided for one variable.

    Attributes:
        path: the variable's path; shape: its shape.
        axes: the mesh axis of each dimension (None: replicated along it).
        rule: the rule that placed it ("auto", a pattern, or "" for none).
        parameters: its number of elements.
    """

    path: str
    shape: tuple[int, ...]
    axes: tuple[str | None, ...]
    rule: str
    parameters: int

    @property
    def sharded(self) -> bool:
        return any(a is not None for a in self.axes)


def rules_from(layout: Any) -> tuple[list[Rule], bool]:
    """(explicit rules, auto) for a config's `layout`: None, "auto", {regex: axes} or a LayoutMap.

    In a table, "" stands for None (TOML has no null): ``{".*dense.*kernel" = ["", "model"]}``. A
    `keras.distribution.LayoutMap` is a Mapping too, whose values are `TensorLayout`s (tuples given to it
    become TensorLayouts): each rule takes the layout's `axes`.
    """
    if layout is None:
        return [], False
    if isinstance(layout, str):
        return [], layout == "auto"
    if isinstance(layout, Mapping):
        return [Rule(str(k), _axes(v)) for k, v in layout.items()], False
    raise ConfigError(f"layout must be \"auto\", a table of rules or a keras.distribution.LayoutMap, got "
                      f"{type(layout).__name__}", where="strategy.layout",
                      fix='e.g. layout="auto", or {".*dense.*kernel": (None, "model")}')


def _axes(value: Any) -> tuple[str | None, ...]:
    """A rule's axes: a sequence of axis names ("" or None: replicated), or a keras TensorLayout's `axes`."""
    return tuple(a or None for a in getattr(value, "axes", value))


class Placer:
    """Decides and checks each variable's placement on a mesh.

    Args:
        mesh_shape: size of each mesh axis, by name (e.g. {"data": 1, "model": 2}).
        rules: explicit rules, tried in order; a path matching two is an error.
        auto: place variables no rule matches by the "auto" rule.
        min_shard_params: the size from which "auto" shards, and a whole variable is reported.
        model_axis: the axis "auto" shards over.
    """

    def __init__(self, mesh_shape: Mapping[str, int], rules: list[Rule], *, auto: bool, min_shard_params: int,
                 model_axis: str, has_layout: bool):
        self.mesh_shape = dict(mesh_shape)
        self.rules, self.auto, self.min_shard_params = rules, auto, min_shard_params
        self.model_axis, self.has_layout = model_axis, has_layout
        self.placements: dict[str, Placement] = {}
        self.used: set[str] = set()
        self.reported: set[str] = set()
        for rule in rules:
            unknown = [a for a in rule.axes if a is not None and a not in self.mesh_shape]
            if unknown:
                raise ConfigError(f"layout rule {rule.pattern!r} names axis {unknown[0]!r}, which the mesh does not "
                                  f"have", where="strategy.layout",
                                  fix=f"use the mesh's axes {tuple(self.mesh_shape)} (or None for replicated)")

    def place(self, path: str, shape: tuple[int, ...], layer=None) -> Placement:
        """The placement of variable `path`, recorded for `check`; `layer`: the layer that creates it, which
        "auto" reads (`structure.structured_axes`) where it is known.

        Raises:
            ConfigError: two rules match, a rule gives the wrong number of axes or uses one twice,
                or a mesh axis does not divide the dimension it shards.
        """
        shape = tuple(int(d) for d in shape)
        if not shape:  # scalars (counters, seeds) are whole everywhere and not the model's
            return Placement(path, shape, (), "", 1)
        matched = [r for r in self.rules if r.matches(path)]
        if len(matched) > 1:
            raise ConfigError(f"variable {path!r} matches {len(matched)} layout rules: "
                              f"{[r.pattern for r in matched]}", where="strategy.layout",
                              fix="make the patterns match each variable at most once")
        if matched:
            rule = matched[0]
            self.used.add(rule.pattern)
            axes = self._checked(path, shape, rule.axes, rule.pattern)
            placement = Placement(path, shape, axes, rule.pattern, math.prod(shape))
        elif self.auto:
            placement = self._auto(path, shape, layer)
        else:
            placement = Placement(path, shape, (None,) * len(shape), "", math.prod(shape))
        self.placements[path] = placement
        return placement

    def tensor_axes(self, path: str) -> tuple[str | None, ...] | None:
        """The axes an explicit rule gives an intermediate tensor (Keras asks by path), or None."""
        matched = [r for r in self.rules if r.matches(path)]
        if len(matched) != 1:
            return None
        self.used.add(matched[0].pattern)
        return matched[0].axes

    def _checked(self, path, shape, axes, pattern) -> tuple[str | None, ...]:
        where = f"layout rule {pattern!r}"
        if len(axes) != len(shape):
            raise ConfigError(f"{where} gives {len(axes)} axes {tuple(axes)} to {path!r} of shape {shape}",
                              where="strategy.layout",
                              fix=f"give one axis (or None) per dimension: {len(shape)} for {path!r}, or narrow "
                                  "the pattern so it does not match it")
        named = [a for a in axes if a is not None]
        if len(named) != len(set(named)):
            raise ConfigError(f"{where} uses a mesh axis twice for {path!r}: {tuple(axes)}", where="strategy.layout",
                              fix="shard each dimension over a different mesh axis")
        for dim, (size, axis) in enumerate(zip(shape, axes)):
            if axis is not None and size % self.mesh_shape[axis]:
                raise ConfigError(
                    f"{path!r} has shape {shape}: dimension {dim} ({size}) does not divide over the "
                    f"{self.mesh_shape[axis]} devices of mesh axis {axis!r} ({where})", where="strategy.layout",
                    fix=f"shard another dimension of {path!r}, make it a multiple of {self.mesh_shape[axis]}, or "
                        f"use a mesh whose {axis!r} axis divides {size}")
        return tuple(axes)

    def _auto(self, path: str, shape: tuple[int, ...], layer=None) -> Placement:
        size, devices = math.prod(shape), self.mesh_shape.get(self.model_axis, 1)
        axes: list[str | None] = [None] * len(shape)
        if size >= self.min_shard_params and devices > 1:
            found = structured_axes(layer, path.rsplit("/", 1)[-1], shape, self.model_axis, devices)
            if found is not None:
                return Placement(path, shape, found[0], found[1], size)
            dims = [d for d in range(len(shape) - 1, -1, -1) if shape[d] % devices == 0]
            if dims:
                axes[dims[0]] = self.model_axis
        return Placement(path, shape, tuple(axes), "auto", size)

    def check(self) -> list[Placement]:
        """Checks the whole model once its variables exist; returns the large variables left whole (none on a
        model axis of one device, where every variable is whole by design).

        Raises:
            ConfigError: no layout was given, or a rule matched no variable (both list the model's paths).
        """
        model = [p for p in self.placements.values()]
        paths = ", ".join(f"{p.path} {p.shape}" for p in model[:40]) + (" ..." if len(model) > 40 else "")
        if not self.has_layout and model:
            raise ConfigError(f"model_parallel has no layout: all {len(model)} variables would be whole on every "
                              "device", where="tfscale.Scale('model_parallel', layout=...)",
                              fix=f'give layout="auto" (every variable of >= {self.min_shard_params} parameters '
                                  f"sharded over the {self.model_axis!r} axis) or rules {{path regex: axes}}, e.g. "
                                  f"{{'.*dense.*kernel': (None, {self.model_axis!r})}}; this model's variables: "
                                  f"{paths}")
        unused = [r.pattern for r in self.rules if r.pattern not in self.used]
        if unused and model:
            raise ConfigError(f"layout rule(s) {unused} match no variable of the model", where="strategy.layout",
                              fix=f"rules match whole paths (as keras.distribution.LayoutMap does); this model's "
                                  f"variables: {paths}")
        if self.mesh_shape.get(self.model_axis, 1) < 2:  # a model axis of one device: whole by design
            return []
        whole = [p for p in model if not p.sharded and p.parameters >= self.min_shard_params]
        for p in (p for p in whole if p.path not in self.reported):
            self.reported.add(p.path)
            log.warning("%s %s (%d parameters) is whole on every device: no layout rule shards it (%s)", p.path,
                        p.shape, p.parameters, "no dimension divides over the model axis" if p.rule == "auto"
                        else "add a rule, or raise min_shard_params")
        return whole
