"""`layout="auto"` by the model's structure: where a variable goes, read from the layer that creates it.

Today's rule alone (shard a large variable on its last dimension the model axis divides) splits both matmuls
of a feed-forward pair the same way and attention kernels over `head_dim`: each block then needs several
collectives (an all-gather before a matmul, an all-to-all between). The way the experts' maps split them
(Megatron-LM; keras-hub's `get_layout_map`) needs one reduction per pair, and no gather. The rules, per layer
type, decided from the layer itself as Keras builds it (`compat.keras.building_layer`):

- **Embedding** (and keras-hub's ReversibleEmbedding, a subclass): over the vocabulary (dimension 0).
- **EinsumDense**, read from its equation (input, kernel -> output):
  - a label in all three (a batch of experts, ``ebd,edf->ebf``): over that label (experts);
  - two or more labels the kernel adds to the output (``btd,dnh->btnh``, query/key/value): over the first
    (the heads): each device computes its heads;
  - two or more labels the kernel contracts (``btnh,nhd->btd``, attention's output): over the first (the
    heads): each device's heads' partial sums, one all-reduce;
  - one added and one contracted label (a dense projection): the pair rule below.
- **Dense** (kernel ``(in, out)``), the pair rule: a projection that widens (out > in, the first of a
  feed-forward pair) is split on its output, one that narrows (out < in, the second) on its input, so the
  activation between them stays split and the pair needs one all-reduce; equal sizes: on the output.
- **Mixture of experts**, a layer whose weight's first dimension is its `num_experts`: over the experts.

Anything else, or a dimension the axis does not divide, falls back to today's rule, and each placement says
which rule made it (`scale.describe(model)`). Biases and norms are below `min_shard_params` as a rule and stay
whole, which costs no collective: a device slices what it needs.
"""

from __future__ import annotations

import re

# What each rule is called in a Placement's `rule` (scale.describe(model))
VOCABULARY = "auto: embedding over the vocabulary"
EXPERTS = "auto: over the experts"
HEADS_OUT = "auto: attention, over the heads it makes"
HEADS_IN = "auto: attention output, over the heads it sums"
COLUMN = "auto: widening projection, over its output (first of a pair)"
ROW = "auto: narrowing projection, over its input (second of a pair)"


def structured_axes(layer, name: str, shape: tuple[int, ...], axis: str, devices: int
                    ) -> tuple[tuple[str | None, ...], str] | None:
    """(axes, rule) for the variable `name` of shape `shape` that `layer` creates, or None where no structural
    rule applies (the caller falls back to its own)."""
    if layer is None or devices < 2 or not shape:
        return None
    kind = _kind(layer)
    dim = None
    rule = ""
    if kind == "embedding" and name == "embeddings" and len(shape) == 2:
        dim, rule = 0, VOCABULARY
    elif kind == "einsum" and name == "kernel":
        dim, rule = _einsum_dim(getattr(layer, "equation", ""), shape)
    elif kind == "dense" and name == "kernel" and len(shape) == 2:
        dim, rule = (1, COLUMN) if shape[1] >= shape[0] else (0, ROW)
    elif getattr(layer, "num_experts", None) and len(shape) >= 2 and shape[0] == layer.num_experts:
        dim, rule = 0, EXPERTS
    if dim is None or shape[dim] % devices:
        return None
    axes: list[str | None] = [None] * len(shape)
    axes[dim] = axis
    return tuple(axes), rule


def _kind(layer) -> str:
    names = {c.__name__ for c in type(layer).__mro__}
    if "Embedding" in names:
        return "embedding"
    if "EinsumDense" in names:
        return "einsum"
    if "Dense" in names:
        return "dense"
    return ""


def _einsum_dim(equation: str, shape: tuple[int, ...]) -> tuple[int | None, str]:
    """The kernel dimension to split, from an EinsumDense equation ("btd,dnh->btnh"), and its rule."""
    match = re.fullmatch(r"\s*([\w.]+)\s*,\s*([\w.]+)\s*->\s*([\w.]+)\s*", equation.replace("...", "."))
    if not match:
        return None, ""
    source, kernel, out = match.groups()
    if len(kernel) != len(shape):
        return None, ""
    both = [i for i, c in enumerate(kernel) if c in source and c in out]
    added = [i for i, c in enumerate(kernel) if c in out and c not in source]
    summed = [i for i, c in enumerate(kernel) if c in source and c not in out]
    if both:
        return both[0], EXPERTS
    if len(added) >= 2:
        return added[0], HEADS_OUT
    if len(summed) >= 2:
        return summed[0], HEADS_IN
    if len(added) == 1 and len(summed) == 1:
        a, s = added[0], summed[0]
        return (a, COLUMN) if shape[a] >= shape[s] else (s, ROW)
    return None, ""
