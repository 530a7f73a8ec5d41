"""Bad input on the JAX engine: each case's tfscale error, printed as JSON {case: "Kind: message"}.

Usage: python jax_errors.py   (KERAS_BACKEND=jax; 2 host devices are made by the first Scale)
"""

import json

import tfscale as ts

found = {}


def attempt(case, fn):
    try:
        fn()
        found[case] = "no error"
    except ts.TfscaleError as e:
        found[case] = f"{type(e).__name__}: {e}"


def build(scale, units=128):
    import keras

    with scale.scope():
        keras.Sequential([keras.Input((64,)), keras.layers.Dense(units), keras.layers.Dense(10)])


attempt("no_layout", lambda: build(ts.Scale("model_parallel", replicas=2)))
attempt("rule_matches_nothing", lambda: build(ts.Scale("model_parallel", replicas=2, layout={".*conv.*kernel": (None, "model")})))
attempt("indivisible", lambda: build(ts.Scale("model_parallel", replicas=2, layout={".*dense.*kernel": (None, "model")}), 127))
attempt("mesh", lambda: ts.Scale("model_parallel", replicas=2, mesh=(1, 3), layout="auto"))
attempt("tf_strategy", lambda: ts.Scale("mirrored"))
attempt("tf_option", lambda: ts.Scale("data_parallel", replicas=2, communication="ring"))
attempt("tpu", lambda: ts.Scale("tpu"))
attempt("generator_object_ok", lambda: ts.Scale("data_parallel", replicas=2).distribute(iter([]), global_batch_size=2))
attempt("bad_input", lambda: ts.Scale("data_parallel", replicas=2).distribute("text", global_batch_size=2))
print(json.dumps(found))
