"""`tfscale train run.toml [--set key=value]`: config-driven training, from a run file to exported TFLite.

The run file names the model (``module:function``), the data, the strategy (a name,
a preset file or a table), the training options and the export; every key is
checked (unknown keys and wrong types are errors naming the key).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from tfscale.config import RunConfig, StrategyConfig, load_run_config
from tfscale.config.functions import load_function
from tfscale.config.runfile import folder_of, strategy_from_run_file
from tfscale.errors import ConfigError, install_hint
from tfscale.strategy.backend import installed
from tfscale.train.loading import load_data

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
    _check_export_installed(run, path)  # before training, not after its last epoch
    base = folder_of(path)  # the user's functions sit beside the run file or in the working directory
    scale = make_scale(run.strategy, base)
    build_model = load_function(run.model, where="model", base_dir=base)
    train, validation = load_data(run.data, base_dir=base)
    result = fit(build_model, train, scale=scale, validation_data=validation, config=run.train,
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


def _check_export_installed(run: RunConfig, path) -> None:
    """An [export] table needs TensorFlow (the converter, LiteRT validation): say so before training."""
    if run.export.dir and not installed("tensorflow"):
        raise ConfigError("the [export] table needs TensorFlow, which is not installed", where=f"{path}: [export]",
                          fix=install_hint("tensorflow") + "; or train without exporting: --set export.dir=''")


def evaluate(result, validation) -> dict[str, float]:
    """The restored model's metrics on the validation data, every example once (every worker runs it: it is a
    collective)."""
    return result.scale.evaluate(result.model, validation, global_batch_size=result.batch.global_batch_size,
                                 verbose=0)


def make_scale(strategy: StrategyConfig | str, base: str | os.PathLike):
    """The Scale a run file asks for: a strategy name, a preset file, or a [strategy] table (the rules of every
    run file, `tfscale.config.runfile`)."""
    from tfscale.scale import Scale

    return Scale(config=strategy_from_run_file(strategy, source="strategy", base_dir=base))


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
