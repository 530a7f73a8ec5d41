"""What a search found: one row per trial (hyperparameters, score, time, tuner), as JSON and a PNG.

The rows come from keras-tuner's oracle (the chief's, in a distributed search),
so they hold every trial of the project, from this run and the runs before it.
Which tuner ran which trial is kept beside them in ``tfscale_tuners.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any

from tfscale.errors import install_hint
from tfscale.storage import atomic_write

log = logging.getLogger("tfscale")

SECONDS_METRIC = "trial_seconds"  # reported with each trial's metrics, so it reaches the chief with them
RESULTS_JSON = "tfscale_results.json"
SCORES_PNG = "tfscale_scores.png"
TUNERS_JSON = "tfscale_tuners.json"
BEST_MODEL = "best_model.keras"
HEADERS = ("trial", "status", "hyperparameters", "score", "seconds", "tuner")


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One trial of a search.

    Attributes:
        trial: keras-tuner's trial id.
        status: COMPLETED, RUNNING (unfinished: a rerun finishes it), FAILED or INVALID.
        hyperparameters: the values tried (Hyperband adds its ``tuner/...`` bookkeeping).
        score: the objective's best value in the trial, None if it did not complete.
        seconds: wall time of the trial's training, None if unknown.
        tuner: the tuner process that ran it ("tuner0" in a one-process search).
    """

    trial: str
    status: str
    hyperparameters: dict[str, Any]
    score: float | None = None
    seconds: float | None = None
    tuner: str | None = None

    def cells(self) -> tuple[str, ...]:
        """The row as table cells, in `HEADERS` order."""
        shown = {("epochs" if k == "tuner/epochs" else k): v for k, v in self.hyperparameters.items()
                 if k == "tuner/epochs" or not k.startswith("tuner/")}
        values = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
        return (self.trial, self.status, values, "" if self.score is None else f"{self.score:.4f}",
                "" if self.seconds is None else f"{self.seconds:.1f}", self.tuner or "")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass
class TuneResult:
    """The outcome of `tfscale.tune`: every trial, the best one, and where the best model went.

    Attributes:
        project_dir: the search's folder (``directory/project_name``).
        objective: the metric optimized; direction: "max" or "min".
        rows: every trial of the project, in trial order.
        info: the run's settings (tuner, strategy, replicas, batch sizes).
        best_model_path: the best model as a ``.keras`` file (None on tuner workers).
        export: what the export returned (a path or an export report), None if not asked.
        model: the best model, rebuilt outside any strategy (None on tuner workers).
        role: "chief" for the process that owns the results, else the tuner id.
    """

    project_dir: str
    objective: str
    direction: str
    rows: list[TrialRow]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    best_model_path: str | None = None
    export: Any = None
    model: Any = None
    role: str = "chief"

    @property
    def best(self) -> TrialRow | None:
        """The completed trial with the best score, or None."""
        done = [r for r in self.rows if r.status == "COMPLETED" and r.score is not None and not math.isnan(r.score)]
        if not done:
            return None
        return (max if self.direction == "max" else min)(done, key=lambda r: r.score)

    @property
    def best_hyperparameters(self) -> dict[str, Any]:
        best = self.best
        return {} if best is None else dict(best.hyperparameters)

    @property
    def unfinished(self) -> list[TrialRow]:
        """Trials started but not finished (their tuner died): rerunning the search finishes them."""
        return [r for r in self.rows if r.status in ("RUNNING", "IDLE")]

    def table_rows(self) -> list[tuple[str, ...]]:
        return [row.cells() for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {"project_dir": self.project_dir, "objective": self.objective, "direction": self.direction,
                **self.info, "best": None if best is None else dataclasses.asdict(best),
                "best_model": self.best_model_path, "export": _plain(self.export),
                "trials": [dataclasses.asdict(r) for r in self.rows]}

    def save(self) -> tuple[str, str | None]:
        """Writes ``tfscale_results.json`` and ``tfscale_scores.png`` into the project; returns their paths."""
        path = os.path.join(self.project_dir, RESULTS_JSON)
        _write_json(path, self.to_dict())
        png = os.path.join(self.project_dir, SCORES_PNG)
        return path, png if plot_scores(self, png) else None

    @classmethod
    def load(cls, project_dir: str) -> "TuneResult":
        """The results a chief saved in `project_dir` (without the model)."""
        with open(os.path.join(project_dir, RESULTS_JSON), encoding="utf-8") as f:
            data = json.load(f)
        rows = [TrialRow(**row) for row in data.pop("trials")]
        fixed = {k: data.pop(k) for k in ("project_dir", "objective", "direction")}
        best_model, export = data.pop("best_model"), data.pop("export")
        data.pop("best")
        return cls(**fixed, rows=rows, info=data, best_model_path=best_model, export=export)


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def _write_json(path: str, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=str), sync=False)


# --------------------------------------------------------------------------- from the oracle


def rows_from_oracle(oracle, project_dir: str) -> list[TrialRow]:
    """Every trial the oracle knows, in trial order, with the tuner that last ran it."""
    tuners = read_tuners(project_dir)
    rows = []
    for trial_id in sorted(oracle.trials, key=lambda t: (len(t), t)):
        trial = oracle.trials[trial_id]
        seconds = (trial.metrics.get_last_value(SECONDS_METRIC)
                   if trial.metrics.exists(SECONDS_METRIC) else None)
        score = trial.score if trial.status == "COMPLETED" else None
        rows.append(TrialRow(trial_id, str(trial.status), dict(trial.hyperparameters.values),
                             None if score is None else float(score),
                             None if seconds is None else float(seconds), tuners.get(trial_id)))
    return rows


def record_tuner(project_dir: str, trial_id: str, tuner_id: str) -> None:
    """Notes that `tuner_id` runs trial `trial_id` (a rerun trial keeps the last tuner)."""
    tuners = read_tuners(project_dir)
    tuners[trial_id] = tuner_id
    _write_json(os.path.join(project_dir, TUNERS_JSON), tuners)


def read_tuners(project_dir: str) -> dict[str, str]:
    try:
        with open(os.path.join(project_dir, TUNERS_JSON), encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


# --------------------------------------------------------------------------- the plot


def plot_scores(result: TuneResult, path: str) -> bool:
    """A PNG of each completed trial's score and the best so far; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no score plot (%s)", install_hint("demo", "matplotlib"))
        return False
    done = [(i, r.score) for i, r in enumerate(result.rows) if r.status == "COMPLETED" and r.score is not None]
    better = max if result.direction == "max" else min
    best, running = [], None
    for _, score in done:
        running = score if running is None else better(running, score)
        best.append(running)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([i for i, _ in done], [s for _, s in done], "o", label="trial")
    ax.step([i for i, _ in done], best, where="post", label="best so far")
    ax.set_xticks(range(len(result.rows)), [r.trial for r in result.rows], fontsize=7)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{result.objective} ({result.direction})")
    ax.set_title(os.path.basename(result.project_dir.rstrip(os.sep)))
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
