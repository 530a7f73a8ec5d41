"""layout="auto" by the model's structure (issue #26), on real models no one here wrote: every model of
benchmarks/bench_layouts.py (keras-hub Gemma, Llama, Qwen, Qwen-MoE, GPT-2, BERT; tiny configurations,
tests/workers/hub_models.py) on 2 CPU host devices (one JAX process, KERAS_BACKEND=jax; random initialization,
no download).
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

import procs
from procs import REPO, run_one

pytestmark = pytest.mark.slow
MODELS = ("gemma", "llama", "qwen", "qwen_moe", "gpt2", "bert")
VOCABULARY, EXPERTS = "auto: embedding over the vocabulary", "auto: over the experts"
HEADS_OUT, HEADS_IN = "auto: attention, over the heads it makes", "auto: attention output, over the heads it sums"
COLUMN = "auto: widening projection, over its output (first of a pair)"
ROW = "auto: narrowing projection, over its input (second of a pair)"


@pytest.fixture(scope="module")
def found():
    with procs.unhidden("jax"):
        out = run_one([str(REPO / "tests" / "workers" / "structured_auto.py")], timeout=400,
                      env={"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_every_benchmark_model_is_covered():
    spec = importlib.util.spec_from_file_location("bench_layouts", REPO / "benchmarks" / "bench_layouts.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert sorted(bench.CONFIGS) == sorted(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_auto_on_2_devices_trains_like_no_distribution(found, name):
    run = found[name]
    # the same training: losses over 10 steps within 1e-5, and every weight within 1e-5 after them
    assert len(run["sharded_losses"]) == len(run["plain_losses"]) == 10
    np.testing.assert_allclose(run["sharded_losses"], run["plain_losses"], rtol=0, atol=1e-5)
    assert run["weights"][0] == run["weights"][1] > 0, run["weights"]
    assert run["weight_difference"] <= 1e-5, run["weight_difference"]
    # and it is sharded: each device holds about half of the weights, placed by the model's structure
    assert run["bytes_per_device"] <= 0.55 * run["bytes"], run
    rules = {row["rule"] for row in run["auto"].values()}
    expected = {VOCABULARY, HEADS_OUT, HEADS_IN, COLUMN, ROW} | ({EXPERTS} if name == "qwen_moe" else set())
    assert expected <= rules, (name, expected - rules)


def test_auto_places_gemma_as_keras_hubs_hand_written_map(found):
    auto, hand = found["gemma"]["auto"], found["gemma"]["hand"]
    # every variable keras-hub's map shards, auto shards the same way (heads, vocabulary, Megatron pairs)
    sharded = [path for path, axes in hand.items() if axes is not None and "model" in axes]
    assert len(sharded) >= 7, hand
    for path in sharded:
        assert auto[path]["sharding"] == hand[path], (path, auto[path], hand[path])
    rules = {path: row["rule"] for path, row in auto.items()}
    assert rules["token_embedding/embeddings"] == VOCABULARY
    assert rules["decoder_block_0/attention/query/kernel"] == HEADS_OUT
    assert rules["decoder_block_0/attention/attention_output/kernel"] == HEADS_IN
    assert rules["decoder_block_0/ffw_gating/kernel"] == COLUMN
    assert rules["decoder_block_0/ffw_linear/kernel"] == ROW
