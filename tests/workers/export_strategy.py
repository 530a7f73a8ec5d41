"""One worker of the export-under-a-strategy test: train a few steps, export, report what was written.

Usage: python export_strategy.py OUT_DIR STRATEGY REPLICAS
Each worker exports into OUT_DIR/<rank>/ (only the chief writes) and prints one
"RESULT {json}" line: its rank, whether it is the chief, the files it wrote and,
on the chief, the int8 file's validation figures.
"""

import json
import sys
from pathlib import Path

import numpy as np

out, strategy_name, replicas = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

import tfscale as ts  # noqa: E402

scale = ts.Scale(strategy_name, replicas=replicas)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

rng = np.random.RandomState(0)
x = rng.rand(256, 8, 8, 1).astype("float32")
y = (x.reshape(256, -1).mean(1) > 0.5).astype("int32") + (x[:, 0, 0, 0] > 0.5).astype("int32")
train = scale.distribute(tf.data.Dataset.from_tensor_slices((x, y)), global_batch_size=32)

keras.utils.set_random_seed(1)
with scale.scope():
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
model.fit(train, epochs=1, steps_per_epoch=4, verbose=0)

mine = out / str(scale.rank)
# Calibration from the distributed training pipeline: every worker draws in step, only the chief writes.
# chief=None (the default) asks the model's strategy; chief=scale.is_chief says it outright.
ts.export.tflite(model, mine / "int8.tflite", quantize="int8", calibration=train, num_calibration_samples=64)
ts.export.saved_model(model, mine / "saved_model", chief=scale.is_chief)
ts.export.keras(model, mine / "model.keras")
report = ts.export.quantize_all(model, mine / "all", eval_data=(x, y), calibration=train, modes=["int8"],
                                num_calibration_samples=64, latency_runs=5, progress=False)
result = {"rank": scale.rank, "chief": scale.is_chief, "replicas": scale.num_replicas,
          "distributed": isinstance(model.weights[0].value, tf.distribute.DistributedValues),
          "files": sorted(p.name for p in mine.iterdir()) if mine.exists() else [],
          "report_modes": [row["mode"] for row in report.rows],
          "tf_keras_loaded": "tf_keras" in sys.modules}  # export never falls back to Keras 2
if scale.is_chief:
    row = ts.export.validate(mine / "int8.tflite", model, (x, y), latency_runs=3)
    result.update(agreement=row["agreement"], samples=row["samples"])
print("RESULT " + json.dumps(result), flush=True)
