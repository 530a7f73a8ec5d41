"""Ray Train: `ts.ray.fit(train_fn, num_workers=N)` runs a training function that uses `Scale.auto()` on N Ray workers.

    import tfscale as ts

    def train_fn(config):
        scale = ts.Scale.auto()        # multi_worker: each Ray worker was given the group's TF_CONFIG
        ts.fit(build_model, data, scale=scale, checkpoint_dir=config["checkpoint_dir"], ...)

    result = ts.ray.fit(train_fn, num_workers=2, train_loop_config={"checkpoint_dir": "/shared/ckpt"},
                        max_failures=1)        # num_workers=(2, 4): elastic, as many as the cluster holds

A thin layer over Ray Train (v2): Ray places the workers, sets each one's TF_CONFIG as its `TensorflowTrainer`
does (backend.py: without TF_USE_LEGACY_KERAS and without loading TensorFlow in the driver), and restarts the
worker group after a failure (`max_failures`: under Ray, Ray owns restarts; tfscale's `--max-restarts` is
not involved), with `num_workers=(min, max)` on as many workers as the cluster then holds (Ray Train's elastic
scaling). tfscale builds the strategy inside `train_fn`, so Keras 3 `fit` works where plain
`MultiWorkerMirroredStrategy` under Ray fails (ray-project/ray#47464), and tfscale's checkpoints (on a path
every node sees) resume a restarted group, of the same size or not, at the exact global batch after the last
checkpoint (`checkpoint_every_steps`). Each worker also gets the TFSCALE_* variables of
`tfscale.worker_env` (rank, local rank, node rank, restart), as under `tfscale launch`.
`import tfscale` does not import Ray: this package imports it inside `fit` (backend.py imports it at the top;
worker.py holds what runs on each worker).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from tfscale.compat import ray as ray_compat
from tfscale.errors import ClusterError, ConfigError, TfscaleError, install_hint
from tfscale.ray.worker import WorkerFailure, WorkerLoop
from tfscale.vocabulary import BACKENDS, Backend
from tfscale.worker_env import WorkerEnv

log = logging.getLogger("tfscale")

INSTALL = install_hint("ray", "ray[train]>=2.60")


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """How `fit` asks Ray for workers.

    Attributes:
        num_workers: training processes (Ray workers), each one TF_CONFIG task; or `(min, max)`: elastic (Ray
            Train's `ScalingConfig(num_workers=(min, max))`): each start of the group, the first and every restart,
            takes as many workers as the cluster's live nodes hold, up to `max`, and Ray waits until they hold
            `min`; a running group is restarted larger when nodes join. tfscale's checkpoints resume a group of
            any size at the same global batch, so every count from `min` to `max` must divide it.
        cpus_per_worker: CPUs Ray reserves for each worker.
        gpus_per_worker: GPUs Ray reserves for each worker (0: CPU training).
        resources_per_worker: other Ray resources per worker (e.g. {"TPU": 4}); CPU/GPU go in the fields above.
        max_failures: worker-group restarts Ray makes after a failure (-1: no limit). Under Ray, Ray owns
            restarts: each restart runs `train_fn` again on every worker, which resumes from tfscale's
            checkpoints.
        storage_path: where Ray keeps the run's state (a folder every node sees, or a cloud URI);
            default: Ray's (~/ray_results).
        name: the run's name under `storage_path` (default: Ray's, a time stamp).
        backend: the Keras backend the workers train on: "tensorflow" or "jax".
        env: environment variables set in each worker before `train_fn` runs (e.g. thread counts).
        collective_timeout: seconds a collective may wait for a peer before the worker fails (a dead peer
            becomes an error that Ray sees, never a hang); None: tfscale's default.
    """

    num_workers: int | tuple[int, int] = 2
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    resources_per_worker: Mapping[str, float] | None = None
    max_failures: int = 0
    storage_path: str | None = None
    name: str | None = None
    backend: Backend = "tensorflow"
    env: Mapping[str, str] | None = None
    collective_timeout: float | None = None

    def __post_init__(self):
        where = "tfscale.ray.fit(...)"
        object.__setattr__(self, "num_workers", _worker_count(self.num_workers, where))
        for field in ("cpus_per_worker", "gpus_per_worker"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{field}={value!r} must be a number of at least 0", where=where,
                                  fix=f"pass e.g. {field}=1")
        if self.cpus_per_worker == 0 and self.gpus_per_worker == 0 and not self.resources_per_worker:
            raise ConfigError("every worker asks Ray for no resource at all", where=where,
                              fix="give cpus_per_worker=1 (or GPUs / other resources per worker)")
        if self.resources_per_worker is not None:
            bad = [k for k in self.resources_per_worker if k in ("CPU", "GPU")]
            if bad:
                raise ConfigError(f"resources_per_worker holds {bad}", where=where,
                                  fix="give CPUs and GPUs with cpus_per_worker= and gpus_per_worker=")
        if isinstance(self.max_failures, bool) or not isinstance(self.max_failures, int) or self.max_failures < -1:
            raise ConfigError(f"max_failures={self.max_failures!r} must be a whole number of at least -1",
                              where=where, fix="pass 0 (no restart), N restarts, or -1 (no limit)")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is not a Keras backend tfscale trains on under Ray",
                              where=where, fix=f"pass one of {list(BACKENDS)}")
        if self.collective_timeout is not None and not (isinstance(self.collective_timeout, (int, float))
                                                        and self.collective_timeout > 0):
            raise ConfigError(f"collective_timeout={self.collective_timeout!r} must be a number of seconds above 0",
                              where=where, fix="pass e.g. collective_timeout=120, or None")
        if self.storage_path is not None and "://" not in str(self.storage_path):
            object.__setattr__(self, "storage_path", os.path.abspath(os.fspath(self.storage_path)))

    @property
    def elastic(self) -> bool:
        """`num_workers` is a range (min, max): Ray Train's elastic scaling."""
        return isinstance(self.num_workers, tuple)

    @property
    def min_workers(self) -> int:
        return self.num_workers[0] if self.elastic else self.num_workers

    @property
    def max_workers(self) -> int:
        return self.num_workers[1] if self.elastic else self.num_workers

    def worker_variables(self) -> dict[str, str]:
        """The variables `train_fn` finds set on every worker."""
        env = {str(k): str(v) for k, v in (self.env or {}).items()}
        env["KERAS_BACKEND"] = self.backend
        env.update(WorkerEnv(collective_timeout=self.collective_timeout).to_environ())
        return env


def _worker_count(value, where: str) -> int | tuple[int, int]:
    """`num_workers` as Ray takes it: a whole number >= 1, or (min, max) with 1 <= min < max (min == max: min)."""
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    if isinstance(value, (tuple, list)):
        if len(value) == 2 and all(whole(v) for v in value) and value[0] <= value[1]:
            return (int(value[0]), int(value[1])) if value[0] < value[1] else int(value[0])
        raise ConfigError(f"num_workers={value!r} is not a range of workers: give (min, max), two whole numbers "
                          f"with 1 <= min <= max", where=where,
                          fix="pass e.g. num_workers=(2, 4) (elastic: 2 to 4 workers), or num_workers=4")
    if whole(value):
        return int(value)
    raise ConfigError(f"num_workers={value!r} must be a whole number of at least 1, or (min, max)", where=where,
                      fix="pass num_workers=2 (or more) for several workers, or (min, max) for an elastic group")


def fit(train_fn: Callable, *, num_workers: int | tuple[int, int] = 2,
        train_loop_config: Mapping[str, Any] | None = None, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
        resources_per_worker: Mapping[str, float] | None = None, max_failures: int = 0,
        storage_path: str | None = None, name: str | None = None, backend: Backend = "tensorflow",
        env: Mapping[str, str] | None = None, collective_timeout: float | None = None,
        datasets: Mapping[str, Any] | None = None, address: str | None = None, wait_for_resources: bool = False):
    """Runs `train_fn` on `num_workers` Ray workers as one multi-worker job; returns Ray's `Result`.

    `train_fn(config)` (or `train_fn()`) runs on every worker; inside it `ts.Scale.auto()` finds the cluster
    Ray made (TF_CONFIG). A dict it returns is reported to Ray (`result.metrics` holds rank 0's). Give its
    checkpoints a `checkpoint_dir` every node sees: after a failure Ray restarts every worker (up to
    `max_failures` times), with `num_workers=(min, max)` as many as the cluster then holds, and `tfscale.fit`
    resumes at the global batch after the last checkpoint.

    Args:
        train_fn: the training function (a module-level function, or one cloudpickle can ship).
        num_workers, cpus_per_worker, gpus_per_worker, resources_per_worker, max_failures, storage_path,
            name, backend, env, collective_timeout: see `RayOptions`.
        train_loop_config: passed to `train_fn` (Ray's `train_loop_config`).
        datasets: Ray Datasets by name; each worker reads its shard with `ray.train.get_dataset_shard(name)`
            (already sharded: hand it to Keras as is, not through `scale.distribute`).
        address: the Ray cluster to join when Ray is not initialized yet ("auto", "ray://..."; default:
            RAY_ADDRESS, else the cluster `ray start` made on this machine, else one started for this call and
            stopped after it).
        wait_for_resources: on an autoscaling cluster, let Ray wait for nodes to come; by default workers the
            cluster's nodes cannot hold are a ClusterError at once (Ray would wait for them forever).

    Returns:
        Ray Train's `Result` (`metrics`, `path`, `checkpoint`).

    Raises:
        ConfigError: Ray is not installed, or an argument is wrong.
        ClusterError: the cluster's nodes cannot hold `num_workers` (or `min`) workers of the resources asked for.
        TfscaleError: the one a worker's `train_fn` raised (e.g. a ConfigError in the model's options).
        ClusterError: training failed on Ray (a worker died more often than `max_failures` allows, ...).

    Example:
        result = ts.ray.fit(train_fn, num_workers=(2, 4), max_failures=1, train_loop_config={"epochs": 3})
        print(result.metrics)
    """
    if not callable(train_fn):
        raise ConfigError(f"train_fn must be a function, got {type(train_fn).__name__}", where="tfscale.ray.fit",
                          fix="pass the training function itself: ts.ray.fit(train_fn, ...), not train_fn()")
    if train_loop_config is not None and not isinstance(train_loop_config, Mapping):
        raise ConfigError(f"train_loop_config must be a dict, got {type(train_loop_config).__name__}",
                          where="tfscale.ray.fit", fix="pass train_loop_config={'epochs': 3, ...}")
    takes_config = _takes_config(train_fn)
    if train_loop_config and not takes_config:
        raise ConfigError("train_loop_config was given but train_fn takes no argument to receive it",
                          where=f"train_fn {getattr(train_fn, '__name__', train_fn)!r}",
                          fix="define it as train_fn(config)")
    options = RayOptions(num_workers=num_workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                         resources_per_worker=resources_per_worker, max_failures=max_failures,
                         storage_path=storage_path, name=name, backend=backend, env=env,
                         collective_timeout=collective_timeout)
    ray, train, adapter = _import_ray()
    started = not ray.is_initialized()  # then this call connects (or starts a local cluster) and disconnects after
    if started:
        ray.init(address=address, log_to_driver=True)
    try:
        if not wait_for_resources:
            _check_resources(ray, options)
        trainer = adapter.trainer(
            WorkerLoop(train_fn, takes_config), train_loop_config=dict(train_loop_config or {}),
            env=options.worker_variables(),
            scaling_config=train.ScalingConfig(num_workers=options.num_workers, use_gpu=options.gpus_per_worker > 0,
                                               resources_per_worker=_resources(options)),
            run_config=train.RunConfig(name=options.name, storage_path=options.storage_path,
                                       failure_config=train.FailureConfig(max_failures=options.max_failures)),
            datasets=dict(datasets) if datasets else None)
        try:
            return trainer.fit()
        except train.TrainingFailedError as e:
            raise _training_error(e, options) from e
    finally:
        if started:
            ray.shutdown()


def _takes_config(train_fn: Callable) -> bool:
    try:
        parameters = list(inspect.signature(train_fn).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
    required = [p for p in positional if p.default is p.empty and p.kind != p.VAR_POSITIONAL]
    if len(required) > 1:
        raise ConfigError(f"train_fn takes {len(required)} arguments; Ray passes one (train_loop_config)",
                          where=f"train_fn {getattr(train_fn, '__name__', train_fn)!r}",
                          fix="define it as train_fn(config) or train_fn()")
    return bool(positional)


def _import_ray():
    try:
        import ray
        from ray import train
    except ImportError as e:
        raise ConfigError(f"tfscale.ray needs Ray Train, which is not installed ({e})", where="import ray",
                          fix=INSTALL) from None
    if not ray_compat.v2_enabled():
        raise ConfigError("tfscale.ray runs on Ray Train v2, and RAY_TRAIN_V2_ENABLED turns it off",
                          where="RAY_TRAIN_V2_ENABLED", fix="unset RAY_TRAIN_V2_ENABLED (or set it to 1)")
    from tfscale.ray import backend

    return ray, train, backend


def _resources(options: RayOptions) -> dict[str, float]:
    resources = {"CPU": float(options.cpus_per_worker)}
    if options.gpus_per_worker:
        resources["GPU"] = float(options.gpus_per_worker)
    resources.update({k: float(v) for k, v in (options.resources_per_worker or {}).items()})
    return resources


def _check_resources(ray, options: RayOptions) -> None:
    """Workers the alive nodes cannot hold are an error now: Ray would wait for them without end."""
    need = {k: v for k, v in _resources(options).items() if v > 0}
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    fits = sum(int(min(res.get(k, 0.0) / v for k, v in need.items()) + 1e-9) for res in nodes)
    if fits < options.min_workers:
        have = ", ".join(f"{res.get('CPU', 0):g} CPU" + (f" {res['GPU']:g} GPU" if res.get("GPU") else "")
                         for res in nodes) or "none"
        asked = f"num_workers={options.num_workers}" + (f" (at least {options.min_workers})" if options.elastic else "")
        raise ClusterError(f"the Ray cluster can hold {fits} worker(s) of {need}, and {asked} were asked for",
                           where=f"Ray nodes: {len(nodes)} alive ({have})",
                           fix="lower num_workers or the resources per worker, add nodes, or pass "
                               "wait_for_resources=True on a cluster that scales up")


def _training_error(error: Exception, options: RayOptions) -> TfscaleError:
    """The error a worker's train_fn raised when it is tfscale's; else a ClusterError naming the failed ranks."""
    failures = getattr(error, "worker_failures", None) or {}
    for rank in sorted(failures):
        own = _find_tfscale_error(failures[rank])
        if own is not None:
            return own
    ranks = ", ".join(str(r) for r in sorted(failures)) or "?"
    first = failures[min(failures)] if failures else getattr(error, "controller_failure", error)
    restarts = {0: "no restart allowed", -1: "restarts without limit"}.get(options.max_failures,
                                                                         f"after {options.max_failures} restart(s)")
    return ClusterError(f"training on Ray failed ({restarts}): {_summary(first)}", where=f"Ray worker rank(s) {ranks}",
                        fix="read the worker output above (or the run's logs under storage_path); "
                            "raise max_failures to let Ray restart the workers, with checkpoints on a shared path")


def _summary(error: BaseException) -> str:
    """`Type: first line` of the exception a worker raised (Ray wraps it: RayTaskError.cause), or of Ray's own."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, WorkerFailure):
        kind, text = cause.kind.rpartition(".")[2], cause.message
    else:
        kind, text = type(cause).__name__, str(cause)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{kind}: {lines[0][:300] if lines else ''}".rstrip(": ")


def _find_tfscale_error(error: BaseException | None, depth: int = 0) -> TfscaleError | None:
    if error is None or depth > 8:
        return None
    if isinstance(error, TfscaleError):
        return error
    for attr in ("cause", "__cause__", "__context__"):
        found = _find_tfscale_error(getattr(error, attr, None), depth + 1)
        if found is not None:
            return found
    return None
