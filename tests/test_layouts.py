"""layout="auto" by the model's structure (issue #26 part 2), on a real model no one here wrote: a tiny keras-hub
GemmaCausalLM on 2 CPU host devices (a JAX process, KERAS_BACKEND=jax; random initialization, no download).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import procs
from procs import REPO, run_one

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _needs():
    with procs.unhidden("jax"):
        yield


def test_auto_places_gemma_as_keras_hubs_hand_written_map_and_trains_like_one_device():
    out = run_one([str(REPO / "tests" / "workers" / "structured_auto.py")], timeout=300,
                  env={"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}).stdout
    found = json.loads(out.strip().splitlines()[-1])
    # the same training: losses over 10 steps and the weights after them
    np.testing.assert_allclose(found["sharded_losses"], found["plain_losses"], rtol=1e-5)
    assert found["weight_difference"] < 1e-5, found["weight_difference"]
    auto, hand = found["auto"], found["hand"]
    # every variable keras-hub's map shards, auto shards the same way (heads, vocabulary, Megatron pairs)
    for path, axes in hand.items():
        if axes is not None and "model" in axes:
            assert auto[path]["sharding"] == axes, (path, auto[path], axes)
    rules = {path: row["rule"] for path, row in auto.items()}
    assert rules["token_embedding/embeddings"] == "auto: embedding over the vocabulary"
    assert rules["decoder_block_0/attention/query/kernel"] == "auto: attention, over the heads it makes"
    assert rules["decoder_block_0/attention/attention_output/kernel"] == (
        "auto: attention output, over the heads it sums")
    assert rules["decoder_block_1/ffw_gating/kernel"].startswith("auto: widening projection, over its output")
    assert rules["decoder_block_1/ffw_linear/kernel"].startswith("auto: narrowing projection, over its input")
    assert found["bytes_per_device"] <= 0.55 * found["bytes"], found
