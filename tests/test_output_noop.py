"""Honest no-ops: `tfscale train` on a finished run says it trained nothing and how to train further or afresh."""

from __future__ import annotations

import pytest

import procs

pytestmark = pytest.mark.slow


def test_rerunning_a_finished_run_says_it_trained_nothing(tmp_path, capsys):
    from tfscale.cli import main

    checkpoints = tmp_path / "checkpoints"
    argv = ["train", str(procs.REPO / "examples" / "train" / "digits.toml"),
            "--set", "train.epochs=1", "--set", f"train.checkpoint_dir={checkpoints}",
            "--set", f"export.dir={tmp_path / 'export'}", "--set", "export.modes=['float32']"]
    assert main(argv) == 0  # in this process, twice: a TensorFlow start-up less each
    first = capsys.readouterr().out
    assert "nothing was trained" not in first and "val_accuracy" in first
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert f"resumed after epoch 1 of 1 from the checkpoints in {checkpoints}" in again, again[-3000:]
    assert "nothing was trained" in again
    assert "--set train.epochs=2" in again and "--set train.resume=false" in again
    assert "checkpoint's model" in again and "val_accuracy" in again  # the restored model's figures, not an empty table
