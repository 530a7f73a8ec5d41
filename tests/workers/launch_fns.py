"""Functions that tests run on workers with `tfscale.launch` (importable, so pickled by reference)."""

import os


def train(steps: int) -> dict:
    """A Keras 3 fit through Scale.auto(); returns this worker's rank, replicas, initial and final weights."""
    import numpy as np

    import tfscale as ts

    scale = ts.Scale.auto()
    import keras
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = rng.rand(steps * 8, 4).astype("float32")
    y = x.sum(1, keepdims=True)
    data = scale.distribute(tf.data.Dataset.from_tensor_slices((x, y)), global_batch_size=8)
    keras.utils.set_random_seed(1)
    with scale.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    initial = model.get_weights()
    model.fit(data, epochs=1, verbose=0)
    return {"rank": scale.rank, "num_replicas": scale.num_replicas, "initial": initial,
            "weights": model.get_weights()}


def fail_on(rank_to_fail: int) -> int:
    """Raises ValueError on one rank; returns the rank elsewhere."""
    rank = int(os.environ["TFSCALE_RANK"])
    if rank == rank_to_fail:
        raise ValueError(f"bad value on rank {rank}")
    return rank
