"""Keras distributions that check their layout (imported only on the JAX engine: it imports Keras)."""

from __future__ import annotations

from keras import distribution

from tfscale.compat import keras as keras_compat
from tfscale.strategy.jax.layout import Placer, rules_from


class CheckedModelParallel(distribution.ModelParallel):
    """`keras.distribution.ModelParallel` whose variables are placed (and checked) by a `Placer`.

    Keras asks the distribution for each variable's layout as it creates it;
    this one answers from tfscale's rules and records the answer, so a wrong
    rule fails at that variable, and `check()` reviews the whole model.

    Args:
        mesh: the `keras.distribution.DeviceMesh`.
        config: the StrategyConfig (layout, min_shard_params, axis_names).
    """

    def __init__(self, mesh, config):
        super().__init__(layout_map=distribution.LayoutMap(mesh), batch_dim_name=mesh.axis_names[0],
                         auto_shard_dataset=False)
        rules, auto = rules_from(config.layout)
        self.placer = Placer(dict(zip(mesh.axis_names, mesh.shape)), rules, auto=auto,
                             min_shard_params=config.min_shard_params, model_axis=mesh.axis_names[-1],
                             has_layout=config.layout is not None)

    def get_variable_layout(self, variable):
        layout = keras_compat.variable_layout(variable)
        if layout is not None:  # optimizer slots follow their variable
            return layout
        placement = self.placer.place(variable.path, tuple(variable.shape), keras_compat.building_layer())
        return distribution.TensorLayout(placement.axes, self.device_mesh)

    def get_tensor_layout(self, path):
        axes = self.placer.tensor_axes(path)
        return None if axes is None else distribution.TensorLayout(axes, self.device_mesh)

    def check(self):
        """See `Placer.check`."""
        return self.placer.check()
