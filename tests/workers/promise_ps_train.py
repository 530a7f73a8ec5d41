"""The chief of a parameter-server cluster: `Scale.auto()`, then a Keras 3 model trained through TensorFlow's
ClusterCoordinator (Keras 3's `fit` cannot drive a ParameterServerStrategy). Prints one line of JSON.

Usage: TF_CONFIG=... (task chief) python promise_ps_train.py
The cluster's worker and ps tasks run tests/workers/ps_task.py.
"""

import json

import numpy as np

import tfscale as ts

scale = ts.Scale.auto()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

STEPS, BATCH = 40, 16
rng = np.random.RandomState(0)
x = rng.rand(256, 4).astype("float32")
true_w = np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")
y = x @ true_w

strategy = scale.strategy
with scale.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, use_bias=False)])
    optimizer = keras.optimizers.SGD(0.5)
    optimizer.build(model.trainable_variables)
    probe = tf.Variable(1.0)

try:  # what README says Keras 3 cannot do
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    fit_error = ""
except Exception as e:  # noqa: BLE001 -- reported, not raised
    fit_error = f"{type(e).__name__}: {e}"

coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
batches = iter(coordinator.create_per_worker_dataset(
    lambda: tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(BATCH)))


@tf.function
def step(iterator):
    def replica_step(features, labels):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(features) - labels) ** 2)
        optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    return strategy.run(replica_step, args=next(iterator))


losses = [coordinator.schedule(step, args=(batches,)) for _ in range(STEPS)]
coordinator.join()
print(json.dumps({"name": scale.name, "strategy": type(strategy).__name__, "variable_device": probe.device,
                  "kernel_device": model.trainable_variables[0].value.device,
                  "steps": int(optimizer.iterations.numpy()),
                  "first_loss": float(losses[0].fetch()), "last_loss": float(losses[-1].fetch()),
                  "kernel": np.asarray(model.trainable_variables[0].numpy()).ravel().tolist(),
                  "fit_error": fit_error}))
