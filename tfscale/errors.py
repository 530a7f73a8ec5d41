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


# How to install an optional part of tfscale, said one way everywhere. No package index publishes tfscale, so
# every hint installs an extra of pyproject.toml from the repository, as the README's "Install" does: in a
# clone, or straight from its URL (Colab, a container). tests/test_jax_only.py checks this table against
# pyproject.toml.
OPTIONAL_MODULES: dict[str, tuple[str | None, str]] = {
    # top-level module: (the extra that brings it, or None where only the package installs it; its pip name)
    "tensorflow": ("tensorflow", "tensorflow"),
    "jax": ("jax", "jax"),
    "orbax": ("jax", "orbax-checkpoint"),
    "sklearn": ("demo", "scikit-learn"),
    "matplotlib": ("demo", "matplotlib"),
    "ai_edge_litert": ("quantize", "ai-edge-litert"),
    "tensorflow_model_optimization": ("quantize", "tensorflow-model-optimization"),
    "tf_keras": ("quantize", "tf-keras"),
    "keras_tuner": ("tune", "keras-tuner"),
    "tensorflow_datasets": ("datasets", "tensorflow-datasets"),
    "dask": ("dask", "dask[dataframe]"),
    "ray": ("ray", "ray[train]"),
    "s3fs": ("s3", "s3fs"),
    "gcsfs": ("gcs", "gcsfs"),
    "cloudpickle": ("launch", "cloudpickle"),
    "pandas": (None, "pandas"),
    "PIL": (None, "pillow"),
}


def install_hint(extra: str, package: str | None = None) -> str:
    """What to run to get an optional part of tfscale: its extra, installed from the repository.

    Args:
        extra: the extra of pyproject.toml ("jax", "tensorflow", "quantize", ...).
        package: the one package the caller needs, where installing only it also works.

    Example:
        fix=install_hint("jax")  # 'install the "jax" extra from the tfscale repository: pip install -e ".[jax]"
                                 # in a clone, or pip install "tfscale[jax] @ git+REPOSITORY_URL"'
    """
    hint = (f'install the "{extra}" extra from the tfscale repository: pip install -e ".[{extra}]" in a clone, '
            f'or pip install "tfscale[{extra}] @ git+REPOSITORY_URL"')
    return f"{hint} (or only: pip install \"{package}\")" if package else hint


def missing_module(error: ModuleNotFoundError, *, where: str) -> Exception:
    """A ConfigError naming what to install for an optional package that is missing; `error` itself otherwise.

    Args:
        error: the ModuleNotFoundError an import raised.
        where: the tfscale feature that needed it ("tfscale.export", "tfscale data inspect", ...).

    Example:
        try:
            module = importlib.import_module("tfscale.export")
        except ModuleNotFoundError as e:
            raise errors.missing_module(e, where="tfscale.export") from None
    """
    top = (error.name or "").split(".")[0]
    if top not in OPTIONAL_MODULES:
        return error
    extra, package = OPTIONAL_MODULES[top]
    return ConfigError(f"{package} is not installed (it is optional)", where=where,
                       fix=install_hint(extra, package if extra != package else None) if extra
                       else f'pip install "{package}"')
