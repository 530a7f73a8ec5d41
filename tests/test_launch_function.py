"""`tfscale.launch(fn, n=2, args=...)`: a function on N workers, from a script or a notebook."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfscale
from procs import THREAD_ENV, base_env
from workers import launch_fns

pytestmark = pytest.mark.slow


def test_launch_runs_a_keras_fit_on_two_workers_and_returns_each_result():
    results = tfscale.launch(launch_fns.train, n=2, args=(4,), env=THREAD_ENV, collective_timeout=120)
    assert [r["rank"] for r in results] == [0, 1]
    assert [r["num_replicas"] for r in results] == [2, 2]
    for a, b in zip(results[0]["weights"], results[1]["weights"], strict=True):
        np.testing.assert_array_equal(a, b)
    # it trained: the weights moved from where they started
    assert any(not np.allclose(a, b) for a, b in zip(results[0]["initial"], results[0]["weights"], strict=True))
    # and as one process would: 2 workers x 4 examples per step give the one-process batch of 8 (mean of the
    # two halves' gradients), so the same 4 SGD steps from the same seed end at the same weights
    reference, = tfscale.launch(launch_fns.train, n=1, args=(4,), env=THREAD_ENV)
    assert reference["num_replicas"] == 1
    for a, b in zip(reference["initial"], results[0]["initial"], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(reference["weights"], results[0]["weights"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_launch_raises_the_workers_own_exception_with_its_rank():
    with pytest.raises(ValueError, match="bad value on rank 1") as caught:
        tfscale.launch(launch_fns.fail_on, n=2, args=(1,), env=THREAD_ENV)
    assert caught.value.tfscale_rank == 1
    notes = "\n".join(caught.value.__notes__)
    assert "raised on worker 1 of 2" in notes and "launch_fns.py" in notes  # the worker's traceback


def test_launch_refuses_what_cannot_be_sent():
    with pytest.raises(tfscale.ConfigError, match="needs a function"):
        tfscale.launch("train.py", n=2)


NOTEBOOK = textwrap.dedent("""
    # As in a notebook cell: the function lives in __main__, which has no file to import.
    import tfscale

    SCALE = 10

    def helper(x):
        return x * SCALE

    def cell_function(x):
        import os
        return helper(x) + int(os.environ["TFSCALE_RANK"])

    print("RESULT", tfscale.launch(cell_function, n=2, args=(4,)))
""")

SCRIPT = textwrap.dedent("""
    import tfscale

    def script_function(x):
        return [x, __name__]  # the workers import this script as __mp_main__, as multiprocessing does

    if __name__ == "__main__":
        print("RESULT", tfscale.launch(script_function, n=2, args=("a",)))
""")


def test_launch_a_function_defined_in_a_notebook_cell():
    # cloudpickle (a test dependency) ships the cell's function; without it the run fails, naming it
    proc = subprocess.run([sys.executable, "-"], input=NOTEBOOK, env=base_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT [40, 41]" in proc.stdout


def test_launch_a_function_defined_in_the_script_being_run(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], env=base_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT [['a', '__mp_main__'], ['a', '__mp_main__']]" in proc.stdout
