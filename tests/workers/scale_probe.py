"""Builds a Scale from argv and prints what it found as JSON (run in a fresh process: devices are global).

Usage: python scale_probe.py STRATEGY [REPLICAS] | python scale_probe.py --preset PATH
"""

import json
import sys

import tfscale as ts

if sys.argv[1] == "--preset":
    scale = ts.Scale.from_preset(sys.argv[2])
else:
    scale = ts.Scale(sys.argv[1], replicas=int(sys.argv[2]) if len(sys.argv) > 2 else None)

import tensorflow as tf  # noqa: E402

with scale.scope():
    v = tf.Variable(1.0)
print(json.dumps({"name": scale.name, "replicas": scale.num_replicas, "workers": scale.num_workers,
                  "chief": scale.is_chief, "repr": repr(scale), "strategy": type(scale.strategy).__name__,
                  "variable_device": str(getattr(v, "device", "")), "reason": scale.reason}))
