"""What the multi-host launch tests share (tests/test_cluster_hosts.py on TensorFlow, tests/test_jax_hosts.py on
JAX): waiting for a launcher, its error lines, and the weights a worker saved (train_resume.py, jax_train.py)."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import numpy as np


def finish(proc: subprocess.Popen, timeout: float) -> str:
    """The launcher's output once it exits; a launcher still running after `timeout` is killed and fails the test."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"the launcher did not exit within {timeout} s:\n{proc.communicate()[0][-4000:]}")


def errors(output: str) -> str:
    """The launcher's own error lines (for the test's printed report)."""
    return "\n".join(line for line in output.splitlines() if line.startswith("tfscale launch:") or "Error:" in line)


def weights(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def max_diff(a: dict, b: dict) -> float:
    """The largest absolute difference between the weights w0, w1, ... of two saved runs (the same names in both)."""
    keys = [k for k in a if re.fullmatch(r"w\d+", k)]
    assert keys and sorted(keys) == sorted(k for k in b if re.fullmatch(r"w\d+", k))
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in keys)
