"""The memory planner's bytes per device against the arrays' own shardings, on 4 CPU host devices (JAX).

Usage: XLA_FLAGS=--xla_force_host_platform_device_count=4 KERAS_BACKEND=jax python planner_check.py

For every model of benchmarks/bench_layouts.py (keras-hub Gemma, Llama, Qwen, Qwen-MoE, GPT-2, BERT task models in
tiny configurations, hub_models.py) and an MLP, with Adam, on every (data, model) mesh of the 4 devices and with
layout="auto": the planner's parameter and optimizer bytes per device (the model built once, unsharded) and the
largest device totals read from the arrays after building under `Scale("model_parallel", mesh=..., layout="auto")`
with the optimizer built. Also the plan of a 1 MiB device (none fits: the error) and the recommendation at 8 MiB.
Prints one JSON object.
"""

import json

import tfscale as ts
from tfscale.errors import ConfigError
from tfscale.strategy.jax import planner
from tfscale.strategy.jax.layout import rules_from

import keras  # noqa: E402  (after tfscale: KERAS_BACKEND=jax is set by the caller)
from hub_models import MIN_SHARD_PARAMS, TINY, task_model  # noqa: E402  (beside this file)
from planner_models import mlp  # noqa: E402  (beside this file)

assert keras.config.backend() == "jax", keras.config.backend()
MODELS = {name: (lambda name=name: task_model(name)) for name in TINY}
MODELS["mlp"] = mlp


def compiled(build):
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def measured(build, mesh) -> dict:
    scale = ts.Scale("model_parallel", mesh=(mesh["data"], mesh["model"]), layout="auto",
                     min_shard_params=MIN_SHARD_PARAMS)
    with scale.scope():
        model = compiled(build)
    engine = scale.describe(model)["engine"]
    keras.distribution.set_distribution(None)
    return {"parameters": engine["bytes_per_device"], "optimizer": engine["optimizer_bytes_per_device"]}


result = {}
for name, build in MODELS.items():
    variables = planner.variables_of(compiled(build))
    rules, auto = rules_from("auto")
    planned = planner.plan(variables, 4, rules=rules, auto=auto, min_shard_params=MIN_SHARD_PARAMS)
    result[name] = [{"mesh": p.mesh, "planned": {"parameters": p.parameters, "optimizer": p.optimizer},
                     "measured": measured(build, p.mesh)} for p in planned.plans]

variables = planner.variables_of(compiled(mlp))
activations = planner.activation_bytes_per_example(mlp())
try:
    planner.plan(variables, 4, rules=[], auto=True, min_shard_params=65536, device_memory=1 << 20,
                 activation_bytes_per_example=activations, batch_size=64)
    result["too_small"] = None
except ConfigError as e:
    result["too_small"] = f"{type(e).__name__}: {e}"
fits = planner.plan(variables, 4, rules=[], auto=True, min_shard_params=65536, device_memory=8 << 20,
                    activation_bytes_per_example=activations, batch_size=64)
result["fits_8mib"] = {"recommended": fits.recommended.mesh, "totals": [p.total for p in fits.plans],
                       "activations_per_example": activations}
print(json.dumps(result))
