"""tfscale's errors: every one says what went wrong, where, and how to fix it.

All errors derive from `TfscaleError`, so a script can catch every user
mistake tfscale reports with one `except tfscale.errors.TfscaleError`.
"""

from __future__ import annotations


class TfscaleError(Exception):
    """A mistake tfscale can explain: what went wrong, where, and the fix.

    Args:
        what: one sentence saying what went wrong.
        where: the file, key, worker or argument concerned (optional).
        fix: what the user should do about it (optional).
    """

    def __init__(self, what: str, *, where: str | None = None, fix: str | None = None):
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.what.rstrip(".") + "."]
        if self.where:
            parts.append(f"Where: {self.where}.")
        if self.fix:
            parts.append(f"Fix: {self.fix.rstrip('.')}.")
        return " ".join(parts)


class ConfigError(TfscaleError, ValueError):
    """A configuration value, preset file or command-line option is wrong."""


class ClusterError(TfscaleError, RuntimeError):
    """The cluster (TF_CONFIG, Slurm, TPU, devices, workers) is not as asked."""


class DataError(TfscaleError, ValueError):
    """Input data is missing, malformed or does not fit the model."""


class ExportError(TfscaleError, RuntimeError):
    """A model could not be saved, converted, quantized or validated."""


class UpstreamError(TfscaleError, RuntimeError):
    """An installed TensorFlow, Keras, JAX, keras-tuner or Ray lacks a private API that tfscale relies on
    (`tfscale.compat`, the upstream quarantine, names which and the versions it was checked on)."""
