"""benchmarks/bench_checkpoint.py --quick --exchange runs to its end and reports every figure it names.

A smoke test: the script runs in a subprocess as a user would run it, its stdout is one JSON object, the
preemption arm's worker really exited with 143 leaving a "preemption" checkpoint (the script fails otherwise),
tfscale's weights file holds what Keras' ModelCheckpoint writes (so the save times compare the same work), and
the exchange arm trained 2 workers with and without the preemption flags' exchange, and the JAX arm timed
tfscale's save against Keras' OrbaxCheckpoint. Nothing here asserts on
time: the figures only have to be there and positive.
"""

import json
import subprocess
import sys

import pytest

from procs import HIDDEN, REPO, base_env

SCRIPT = REPO / "benchmarks" / "bench_checkpoint.py"
QUICK_ROUNDS = 2


@pytest.fixture(scope="module")
def report() -> dict:
    # 540 s: under pytest's timeout, so that a hang fails with the script's output
    env = base_env(hide=tuple(n for n in HIDDEN if n != "jax"))  # its save arm on JAX runs in a child process
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--exchange"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=540)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout)


@pytest.mark.slow
def test_bench_checkpoint_reports_its_named_figures_and_positive_ratios(report):
    assert report["benchmark"] == "checkpoint" and report["rounds"] == QUICK_ROUNDS
    ratios = report["ratios"]
    for name in ("checkpoint_every_50_vs_none", "checkpoint_every_50_vs_none_per_cpu_s",
                 "checkpoint_every_50_vs_none_end_to_end", "keras_modelcheckpoint_over_tfscale",
                 "keras_backup_over_tfscale"):
        assert isinstance(ratios[name], float) and ratios[name] > 0, (name, ratios)
    assert set(report["examples_per_s"]) == {"checkpoint_every_50", "none"}
    assert set(report["save_seconds"]) == {"tfscale", "tfscale_blocking", "keras_modelcheckpoint", "keras_backup"}
    assert set(report["save_seconds_jax"]) == {"tfscale", "tfscale_blocking", "keras_orbax", "keras_orbax_blocking"}
    assert isinstance(ratios["keras_orbax_over_tfscale_jax"], float) and ratios["keras_orbax_over_tfscale_jax"] > 0
    for figures in (*report["examples_per_s"].values(), *report["examples_per_cpu_s"].values(),
                    *report["save_seconds"].values(), *report["save_seconds_jax"].values(),
                    report["sigterm_to_exit_seconds"], report["step_seconds"]):
        assert len(figures["all"]) == QUICK_ROUNDS and figures["median"] > 0, figures
    assert report["tfscale_blocking_seconds"] > 0
    assert report["settings"]["checkpoint_bytes"] > 4 * report["settings"]["params"]  # weights and Adam's state


@pytest.mark.slow
def test_bench_checkpoint_tfscale_file_holds_what_keras_modelcheckpoint_writes(report):
    assert report["tfscale_file_same_content_as_modelcheckpoint"] is True


@pytest.mark.slow
def test_bench_checkpoint_exchange_arm_trains_2_workers_with_and_without_the_flags_exchange(report):
    ratios, arms = report["ratios"], report["exchange_2_workers"]
    for name in ("save_on_preemption_on_vs_off_2_workers", "save_on_preemption_on_every_step_vs_off_2_workers"):
        assert isinstance(ratios[name], float) and ratios[name] > 0, (name, ratios)
    assert set(arms) == {"save_on_preemption_on", "save_on_preemption_off", "save_on_preemption_on_every_step"}
    for arm, figures in arms.items():
        assert len(figures["steps_per_s"]["all"]) == QUICK_ROUNDS and figures["steps_per_s"]["median"] > 0, arm
        every = {"save_on_preemption_off": 0.0, "save_on_preemption_on": 0.5, "save_on_preemption_on_every_step": 1.0}
        assert figures["exchanges_per_step"]["median"] == every[arm], (arm, figures)  # every 2 steps, each, none


@pytest.mark.slow
def test_bench_checkpoint_sigterm_arm_exits_143_with_a_preemption_checkpoint(report):
    sigterm = report["sigterm"]
    assert sigterm["exit_codes"] == [143] * QUICK_ROUNDS, sigterm
    assert sigterm["reasons"] == ["preemption"] * QUICK_ROUNDS, sigterm
    assert all(name.startswith("epoch-00000-step-") for name in sigterm["checkpoints"]), sigterm
    assert report["targets"]["sigterm_to_exit_seconds_max"] > 5.0  # one step + 5 s
