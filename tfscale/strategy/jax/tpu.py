"""`tpu` (JAX): data parallelism over every TPU core of this VM or slice; bfloat16 by default."""

from __future__ import annotations

from tfscale.errors import ClusterError
from tfscale.strategy.backend import JAX
from tfscale.strategy.jax.data_parallel import data_parallel
from tfscale.strategy.jax.devices import mesh_devices
from tfscale.strategy.registry import register


@register("tpu", "every TPU core JAX sees (Colab, Kaggle, Cloud TPU VMs and pods; libtpu, no tensorflow-tpu "
                 "needed); bfloat16 by default", backend=JAX)
def build(topology, config):
    import jax

    if jax.default_backend() != "tpu":
        seen = ", ".join(sorted({d.platform for d in jax.devices()}))
        raise ClusterError(f"a TPU was asked for but JAX sees none (its devices: {seen})", where="tfscale.Scale('tpu')",
                           fix='on Colab choose Runtime > Change runtime type > TPU; on Kaggle enable the TPU '
                               'accelerator; on a Cloud TPU VM `pip install "jax[tpu]"`; or use Scale.auto() to '
                               'fall back to GPU/CPU')
    return data_parallel(mesh_devices(topology, config), config.axis_names[0])
