"""Ray Train's side of `tfscale.ray.fit` (this module imports Ray; `tfscale.ray` loads it inside `fit`).

`TfscaleBackendConfig` is Ray's `TensorflowConfig` for Keras 3: its backend gives every worker of the
group the TF_CONFIG of the group (each worker's node address and a free port, ranks in Ray's order),
exactly as Ray's TensorFlow backend does, plus the variables tfscale's options ask for. Unlike Ray's,
it does not set TF_USE_LEGACY_KERAS=1 (ray/train/tensorflow/config.py: Keras 2 wherever tf-keras is
installed) and does not import TensorFlow into the driver and Ray's train controller (Ray's
`TensorflowTrainer` does, through `ray.train.tensorflow`): only the workers load TensorFlow, or JAX.
Each worker also gets tfscale's own launcher-to-worker contract (`tfscale.worker_env.WorkerEnv`: rank,
world size, local rank, node rank, restart count), as under `tfscale launch`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from typing import Any

import ray
from ray.train import DataConfig
from ray.train.backend import Backend, BackendConfig
from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

from tfscale.compat import ray as ray_compat
from tfscale.worker_env import WorkerEnv


def _address() -> str:
    """This worker's node address and a port free on it (Ray's TensorFlow backend picks them alike)."""
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    host = ray.util.get_node_ip_address()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _join(addresses: list[str], index: int, env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})


def places(addresses: list[str], restart: int) -> list[WorkerEnv]:
    """Each worker's `WorkerEnv` (the TFSCALE_* contract `tfscale launch` writes too), from the group's addresses
    in rank order: hosts numbered in order of their first worker, workers on one host in rank order; each
    worker's own address (its Ray node's IP: where the JAX engine's CPU collectives listen, whatever the
    node's hostname resolves to)."""
    hosts = [address.rpartition(":")[0] for address in addresses]
    order = list(dict.fromkeys(hosts))
    return [WorkerEnv(rank=rank, world_size=len(hosts), local_rank=hosts[:rank].count(host),
                      local_world_size=hosts.count(host), node_rank=order.index(host), restart=restart,
                      address=addresses[rank])
            for rank, host in enumerate(hosts)]


class TfscaleBackend(Backend):
    """Sets TF_CONFIG, the TFSCALE_* contract and the options' variables on every worker before `train_fn` runs.

    Ray calls `on_start` for each new worker group of the run (in the train controller, which holds this one
    object): the first start, then each restart after a failure (TFSCALE_RESTART counts them).
    """

    starts = 0

    def on_start(self, worker_group, backend_config: "TfscaleBackendConfig"):
        addresses = worker_group.execute(_address)
        restart, self.starts = self.starts, self.starts + 1
        envs = [{**backend_config.env, **place.to_environ()} for place in places(addresses, restart)]
        ray.get([worker_group.execute_single_async(i, _join, addresses=addresses, index=i, env=env)
                 for i, env in enumerate(envs)])


@dataclasses.dataclass
class TfscaleBackendConfig(BackendConfig):
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def backend_cls(self):
        return TfscaleBackend

    @property
    def framework(self):  # Ray's name for what a run trains with (its run state shows it)
        return ray_compat.training_framework(jax=self.env.get("KERAS_BACKEND") == "jax")

    def to_dict(self) -> dict[str, Any]:
        return {"keras_backend": self.env.get("KERAS_BACKEND", "tensorflow")}


def trainer(loop, *, train_loop_config, env, scaling_config, run_config, datasets) -> DataParallelTrainer:
    """Ray's TensorflowTrainer, built on `TfscaleBackendConfig` (what `TensorflowTrainer` is on `TensorflowConfig`)."""
    return DataParallelTrainer(loop, train_loop_config=train_loop_config, backend_config=TfscaleBackendConfig(env=env),
                               scaling_config=scaling_config, run_config=run_config, datasets=datasets,
                               dataset_config=DataConfig() if datasets else None)
