"""The conv net that bench_cluster.py's workers train, on either engine (_launch_worker.py on TensorFlow,
_jax_cluster_worker.py on JAX): one definition, so that the arms compare the same model."""


def conv_net(image: int):
    """A small conv net on (image, image, 3) inputs with 10 logits (not compiled); build it in `scale.scope()`."""
    import keras  # after the worker's Scale (Keras must not be imported before it picks the backend)

    return keras.Sequential([
        keras.Input((image, image, 3)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
