"""Builds a Scale from argv and prints what it found as JSON (run in a fresh process: devices are global).

Usage: python scale_probe.py SPEC [+ SPEC ...], SPEC being STRATEGY [REPLICAS] or --preset PATH.
Several specs (one line of JSON each) share the process: they must ask for the same CPU replicas.
"""

import json
import sys

import tfscale as ts

specs, spec = [], []
for arg in sys.argv[1:] + ["+"]:
    if arg == "+":
        specs.append(spec)
        spec = []
    else:
        spec.append(arg)

for spec in specs:
    if spec[0] == "--preset":
        scale = ts.Scale.from_preset(spec[1])
    else:
        scale = ts.Scale(spec[0], replicas=int(spec[1]) if len(spec) > 1 else None)

    import tensorflow as tf

    with scale.scope():
        v = tf.Variable(1.0)
    print(json.dumps({"name": scale.name, "replicas": scale.num_replicas, "workers": scale.num_workers,
                      "chief": scale.is_chief, "repr": repr(scale), "strategy": type(scale.strategy).__name__,
                      "variable_device": str(getattr(v, "device", "")), "reason": scale.reason}))
