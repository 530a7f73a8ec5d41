"""`one_device` (JAX): no distribution; Keras places everything on JAX's first device."""

from __future__ import annotations

from tfscale.strategy.backend import JAX
from tfscale.strategy.registry import register


@register("one_device", "no distribution: JAX's first device (a GPU or TPU core if there is one, else the CPU)",
          backend=JAX, one_process=True)
def build(topology, config):
    return None
