"""`tfscale train run.toml [--set key=value]`: config-driven training, from a run file to exported TFLite.

The run file names the model (``module:function``), the data, the strategy (a name,
a preset file or a table), the training options and the export; every key is
checked (unknown keys and wrong types are errors naming the key).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path

from tfscale.config import DataConfig, RunConfig, StrategyConfig, find_preset, load_run_config
from tfscale.config.functions import load_function
from tfscale.errors import ConfigError

log = logging.getLogger("tfscale")


@dataclasses.dataclass
class TrainRun:
    """What `run_training` did.

    Attributes:
        config: the run configuration, after overrides.
        fit: the `tfscale.fit` result.
        metrics: the last epoch's metrics (training and validation).
        report: the export report (None without export or on non-chief workers).
        files: what the export wrote (mode or "report_json"/"report_png"/"saved_model" -> path).
        trained_epochs: epochs this run trained; 0 when a checkpoint had already reached
            ``train.epochs`` (the run resumed after the last epoch and trained nothing).
    """

    config: RunConfig
    fit: object
    metrics: dict[str, float]
    report: object | None
    files: dict[str, str]
    trained_epochs: int = 0

    @property
    def finished_before(self) -> bool:
        """True when a checkpoint had already reached the last epoch, so nothing was trained."""
        return self.trained_epochs == 0 and self.fit.resumed_from_epoch >= self.config.train.epochs

    def nothing_trained(self) -> str | None:
        """What to tell a person when the run resumed after its last epoch; None when it trained."""
        if not self.finished_before:
            return None
        train = self.config.train
        resumed = self.fit.resumed_from_epoch
        return (f"resumed after epoch {resumed} of {train.epochs} from the checkpoints in {train.checkpoint_dir}: "
                f"the run had finished, so nothing was trained (the metrics are those of that checkpoint's model). "
                f"To train further: --set train.epochs={resumed + train.epochs}. To start fresh: "
                f"--set train.resume=false, or delete {train.checkpoint_dir}.")


def run_training(path: str | os.PathLike, overrides: tuple[str, ...] | list[str] = ()) -> TrainRun:
    """Loads the run file, trains under its strategy, exports on the chief.

    Raises:
        ConfigError: a mistake in the run file or an override, naming the key.
    """
    from tfscale.train.fit import fit

    run = load_run_config(path, overrides)
    base = Path(path).resolve().parent
    for folder in (os.getcwd(), str(base)):  # the user's modules sit beside the run file or in the project
        if folder not in sys.path:
            sys.path.insert(0, folder)
    scale = make_scale(run.strategy, base)
    train, validation = load_data(run.data)
    result = fit(run.model, train, scale=scale, validation_data=validation, config=run.train,
                 model_args=run.model_args)
    metrics = {k: float(v[-1]) for k, v in result.history.history.items() if v}
    trained = len(result.history.epoch)
    if not trained and result.resumed_from_epoch >= run.train.epochs:
        log.info("resumed after epoch %d of %d from %s: nothing left to train", result.resumed_from_epoch,
                 run.train.epochs, run.train.checkpoint_dir)
        if validation is not None:  # the restored model's figures instead of an empty table
            metrics = {f"val_{k}": float(v) for k, v in evaluate(result, validation).items()}
    report, files = None, {}
    if run.export.dir and scale.is_chief:
        report, files = export(result.model, run, validation if validation is not None else train, train)
    scale.barrier("tfscale_train_done")  # the other workers exit with the chief, not while it exports
    return TrainRun(run, result, metrics, report, files, trained)


def evaluate(result, validation) -> dict[str, float]:
    """The restored model's metrics on the validation data (every worker runs it: it is a collective)."""
    data = result.scale.distribute(validation, global_batch_size=result.batch.global_batch_size,
                                   drop_remainder=False)
    return result.model.evaluate(data, verbose=0, return_dict=True)


def make_scale(strategy: StrategyConfig | str, base: Path):
    """The Scale a run file asks for: a strategy name, a preset file, or a [strategy] table."""
    from tfscale.scale import Scale

    if isinstance(strategy, StrategyConfig):
        return Scale(config=strategy)
    if strategy.endswith(".toml"):  # a file from the run file's folder or the working directory, or a shipped preset
        return Scale.from_preset(find_preset(strategy, base))
    return Scale(strategy)


def load_data(data: DataConfig):
    """(train, validation or None) from the functions the [data] table names; train shuffled if asked.

    What the functions return goes to `Scale.distribute` as it is (arrays stay arrays, so the JAX engine
    reads them without TensorFlow); only a shuffle buffer makes arrays a tfscale.data pipeline, with an
    elastic order (each epoch shuffled by (seed, epoch)): a restarted job resumes at the exact next batch.
    """
    from tfscale.data.sharding import is_tf_input
    from tfscale.data.sharding.arrays import is_arrays
    train = _call(load_function(data.train, where="data.train"), data.args, "data.train")
    validation = None
    if data.validation:
        validation = _call(load_function(data.validation, where="data.validation"), data.args, "data.validation")
    if data.shuffle_buffer and hasattr(train, "batched_dataset_for"):
        log.warning("data.shuffle_buffer ignored: a tfscale.data pipeline shuffles itself")
    elif data.shuffle_buffer and is_arrays(train):  # an elastic order: a restart resumes at the exact batch
        from tfscale.data.sources import from_numpy

        train = from_numpy(*train).shuffle(data.shuffle_buffer, seed=data.seed, files=False).elastic()
    elif data.shuffle_buffer:
        from tfscale.data.sharding import as_dataset

        train = as_dataset(train, "data.train") if not is_tf_input(train) else train
        train = train.shuffle(data.shuffle_buffer, seed=data.seed, reshuffle_each_iteration=True)
    return train, validation


def _call(fn, args: dict, where: str):
    try:
        return fn(**args)
    except TypeError as e:
        if args and "argument" in str(e):
            raise ConfigError(f"{where} rejected the arguments {sorted(args)}: {e}", where="data.args",
                              fix="give only keyword arguments the data functions accept") from None
        raise


def export(model, run: RunConfig, eval_data, calibration) -> tuple[object, dict[str, str]]:
    """Every TFLite variant the [export] table asks for, the report JSON and PNG, and a SavedModel if asked."""
    from tfscale.export import quantize_all, saved_model
    from tfscale.export.variants import REPORT_FILE

    out = Path(run.export.dir)
    report = quantize_all(model, out, eval_data=eval_data, calibration=calibration, modes=run.export.modes,
                          max_drop=run.export.max_drop, overwrite=run.export.overwrite, progress=False)
    files = {row["mode"]: row["path"] for row in report.rows if "path" in row}
    files["report_json"] = str(out / REPORT_FILE)
    files["report_png"] = str(report.plot(out / "report.png", overwrite=run.export.overwrite))
    if run.export.saved_model:
        files["saved_model"] = str(saved_model(model, out / "saved_model", overwrite=run.export.overwrite))
    return report, files
