"""The JAX engine: Keras' own distribution API (keras.distribution) behind the same `Scale`.

One module per strategy (data_parallel, model_parallel, tpu, one_device), each
registered for the "jax" backend and importing Keras and JAX only inside its
builder; engine.py is the `Engine`, runtime.py what JAX needs before its devices
start, layout.py the model-parallel layout rules and their checks.
"""
