"""The keras-hub models of benchmarks/bench_layouts.py in the tests' smallest configurations (1 layer, hidden 64,
vocabulary 256, random initialization, nothing downloaded): what tests/test_layouts.py and tests/test_planner.py
build, with the benchmark's own `task_model` and `batch_of`. Imported by the workers beside this file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_layouts  # noqa: E402  (from the path above)

SEQUENCE, BATCH = 8, 4
MIN_SHARD_PARAMS = 1024  # these variables are small: "auto" shards from this size (65,536 by default)
_HEADS = dict(num_query_heads=4, num_key_value_heads=4)
_COMMON = dict(vocabulary_size=256, num_layers=1, hidden_dim=64)
TINY = {  # every model of the benchmark; dropout off (the same steps with and without distribution)
    "gemma": dict(_COMMON, **_HEADS, intermediate_dim=256, head_dim=16),
    "llama": dict(_COMMON, **_HEADS, intermediate_dim=128),
    "qwen": dict(_COMMON, **_HEADS, intermediate_dim=128),
    "qwen_moe": dict(_COMMON, **_HEADS, intermediate_dim=128, moe_intermediate_dim=32,
                     shared_expert_intermediate_dim=128, num_experts=4, top_k=2),
    "gpt2": dict(_COMMON, num_heads=4, intermediate_dim=128, max_sequence_length=SEQUENCE, dropout=0.0),
    "bert": dict(_COMMON, num_heads=4, intermediate_dim=128, max_sequence_length=SEQUENCE, dropout=0.0),
}
TASK_OPTIONS = {"bert": dict(dropout=0.0)}  # the classifier's own dropout (0.1 by default)
assert set(TINY) == set(bench_layouts.CONFIGS), "a model of the benchmark without a tiny configuration here"


def task_model(name: str):
    """`name`'s task model (not compiled) in its tiny configuration, built in the current scope."""
    return bench_layouts.task_model(name, TINY[name], **TASK_OPTIONS.get(name, {}))


def batch(name: str):
    """(inputs, targets) of one batch of random tokens for `name`."""
    return bench_layouts.batch_of(name, TINY[name], BATCH, SEQUENCE)
