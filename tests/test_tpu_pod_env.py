"""A multi-host TPU slice, as far as it can be reached without a TPU: its workers' variables set by hand.

Cloud TPU VMs and GKE give each worker of a slice TPU_WORKER_ID and TPU_WORKER_HOSTNAMES (or
TPU_PROCESS_ADDRESSES), and Multislice adds MEGASCALE_*; `Scale.auto()` must read the same rank, world and
coordinator from them as `jax.distributed.initialize()` would. No TensorFlow is needed (the JAX-only leg runs
this file too: scripts/test_jax_only.sh).
"""

import json
import subprocess
import sys

import pytest

from tfscale.cluster import detect
from tfscale.config import StrategyConfig
from tfscale.errors import ClusterError
from tfscale.strategy import choose

import procs

HOSTS = "t1v-n-0a1b-w-0,t1v-n-0a1b-w-1,t1v-n-0a1b-w-2,t1v-n-0a1b-w-3"
POD = {"TPU_ACCELERATOR_TYPE": "v4-32", "TPU_WORKER_HOSTNAMES": HOSTS}


@pytest.mark.parametrize("worker", [0, 2])
def test_a_slice_worker_is_one_process_of_the_slice(worker):
    topo = detect(environ={**POD, "TPU_WORKER_ID": str(worker)}, gpus=0)
    assert (topo.manager, topo.accelerator, topo.tpu) == ("tpu", "TPU", "")
    assert (topo.rank, topo.num_workers, topo.is_chief) == (worker, 4, worker == 0)
    assert topo.coordinator == "t1v-n-0a1b-w-0:8482"  # worker 0 on JAX's TPU coordinator port
    assert "TPU slice: worker %d of 4" % worker in " ".join(topo.reasons)
    assert choose(topo, StrategyConfig(), "jax")[0] == "tpu"


def test_gke_process_addresses_and_multislice():
    """TPU_PROCESS_ADDRESSES wins over TPU_WORKER_HOSTNAMES (ports dropped); slice 1 of 2 counts after slice 0."""
    env = {"TPU_PROCESS_ADDRESSES": "10.0.0.5:8476,10.0.0.6:8476", "TPU_WORKER_HOSTNAMES": "a,b,c",
           "TPU_WORKER_ID": "1", "MEGASCALE_NUM_SLICES": "2", "MEGASCALE_SLICE_ID": "1",
           "MEGASCALE_COORDINATOR_ADDRESS": "10.0.9.9:8080"}
    topo = detect(environ=env, gpus=0)
    assert (topo.manager, topo.rank, topo.num_workers) == ("tpu", 3, 4)
    assert topo.coordinator == "10.0.9.9:8482"


def test_one_host_tpu_vm_is_one_process():
    topo = detect(environ={"TPU_ACCELERATOR_TYPE": "v5litepod-8", "TPU_WORKER_ID": "0",
                           "TPU_WORKER_HOSTNAMES": "localhost"}, gpus=0)
    assert (topo.manager, topo.num_workers, topo.coordinator) == ("tpu", 1, None)


@pytest.mark.parametrize(("env", "message"), [
    ({**POD}, "TPU_WORKER_ID"),                                   # several hosts, but which one is this?
    ({**POD, "TPU_WORKER_ID": "4"}, r"TPU_WORKER_ID=4 of 4 host\(s\)"),
    ({**POD, "TPU_WORKER_ID": "w1"}, "not numbers"),
    ({**POD, "TPU_WORKER_ID": "0", "MEGASCALE_NUM_SLICES": "2", "MEGASCALE_SLICE_ID": "2"}, "slice 2 of 2"),
])
def test_inconsistent_slice_variables_are_a_cluster_error(env, message):
    with pytest.raises(ClusterError, match=message) as e:
        detect(environ=env, gpus=0)
    assert "TPU_WORKER_ID" in e.value.where


# What JAX itself reads from the same variables: its Cloud TPU cluster (a private module of JAX, used by the
# test only, to check that tfscale and `jax.distributed.initialize()` agree). The MEGASCALE_* are set (empty
# is "none") so that JAX never asks the metadata server; GCE_METADATA_IP points at a closed local port anyway.
JAX_READS = """
import json, os
from jax._src.clusters.cloud_tpu_cluster import GkeTpuCluster as c
import tfscale as ts
topo = ts.cluster.detect(gpus=0)
print(json.dumps({"jax": [c.get_process_id(), c.get_process_count(), c.get_coordinator_address(1, None)],
                  "tfscale": [topo.rank, topo.num_workers, topo.coordinator]}))
"""


@pytest.mark.parametrize("env", [
    {"TPU_WORKER_HOSTNAMES": "localhost,127.0.0.1,localhost", "TPU_WORKER_ID": "1"},
    {"TPU_PROCESS_ADDRESSES": "127.0.0.1:8476,localhost:8476", "TPU_WORKER_ID": "0", "MEGASCALE_NUM_SLICES": "3",
     "MEGASCALE_SLICE_ID": "2", "MEGASCALE_COORDINATOR_ADDRESS": "127.0.0.1"},
])
def test_rank_world_and_coordinator_are_what_jax_detects(env):
    full = {"MEGASCALE_NUM_SLICES": "", "MEGASCALE_SLICE_ID": "", "MEGASCALE_COORDINATOR_ADDRESS": "",
            "TPU_ACCELERATOR_TYPE": "v4-16", "GCE_METADATA_IP": "127.0.0.1:9", "KERAS_BACKEND": "jax", **env}
    done = subprocess.run([sys.executable, "-c", JAX_READS], env=procs.base_env(**full), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    read = json.loads(done.stdout.splitlines()[-1])
    assert read["tfscale"] == read["jax"], read


# Two workers of a 2-host "slice" on this machine: Scale.auto() on JAX must start JAX's distributed runtime with
# the slice's rank and world (no TPU here: the `tpu` strategy then says JAX sees none, after the runtime is up).
WORKER = """
import jax, tfscale as ts
try:
    ts.Scale.auto()
except ts.ClusterError as e:
    print("error:", e.what)
print("jax:", jax.process_index(), jax.process_count())
"""


@pytest.mark.slow
def test_scale_auto_starts_jax_across_the_slice_from_its_variables():
    env = {"KERAS_BACKEND": "jax", "TPU_ACCELERATOR_TYPE": "v4-16", "TPU_WORKER_HOSTNAMES": "127.0.0.1,127.0.0.1",
           "JAX_PLATFORMS": "cpu"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER], env=procs.base_env(**env, TPU_WORKER_ID=str(i)),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outs = [w.communicate(timeout=180)[0] for w in workers]
    for i, out in enumerate(outs):
        assert f"jax: {i} 2" in out, out[-3000:]
        assert "a TPU was asked for but JAX sees none" in out, out[-3000:]
