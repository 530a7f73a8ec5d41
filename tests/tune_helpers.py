"""Run files and result readers shared by the tuning tests."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / "workers" / "tune_model.py"


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, list)):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)


def write_run(folder: Path, *, strategy: dict, **tune) -> Path:
    """A run file for the test model, with a [data], a [strategy] and a [tune] table."""
    lines = [f'model = "{MODEL}:build_model"', "", "[data]", f'train = "{MODEL}:train_data"',
             f'validation = "{MODEL}:validation_data"', "", "[strategy]"]
    lines += [f"{k} = {_toml(v)}" for k, v in strategy.items()]
    lines += ["", "[tune]", f'directory = "{folder / "searches"}"', 'project_name = "test"']
    lines += [f"{k} = {_toml(v)}" for k, v in tune.items()]
    path = folder / "run.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def trial_files(project: Path) -> dict[str, dict]:
    """keras-tuner's own record of each trial (trial_*/trial.json), by trial id."""
    found = {}
    for path in project.glob("trial_*/trial.json"):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):  # being written
            continue
        found[data["trial_id"]] = data
    return found


def same_weights_as_checkpoint(model_path, checkpoint_path) -> bool:
    """Whether the saved best model holds exactly the weights of a trial's checkpoint."""
    import keras
    import numpy as np

    model = keras.saving.load_model(model_path)
    saved = [w.copy() for w in model.get_weights()]
    model.load_weights(checkpoint_path)
    return all(np.array_equal(a, b) for a, b in zip(saved, model.get_weights()))
