"""The upstream quarantine: every private API of TensorFlow, Keras, JAX, keras-tuner, Ray, Dask and LiteRT that
tfscale uses, and every patch of theirs, lives in this package (docs/DESIGN.md, "The upstream quarantine").

One module per upstream: `tensorflow`, `keras` (a package: its accessors, and the fixes that subclass or patch
what tfscale builds: `keras.multi_worker`, `keras.accumulation`), `jax`, `keras_tuner`, `ray`, `dask`, `litert`.
Each use names its upstream bug or its reason and the versions it was checked on, and is gated on the version
or feature-detected: where an upstream release drops or changes it, the caller gets `UpstreamError` (what is
missing, the versions checked, what to do) or the documented fallback, never an AttributeError deep in
training. The rest of tfscale calls these functions and reaches into no upstream internals itself.

What counts as private (tests/test_quarantine.py parses tfscale/ and fails on a use outside this package;
import-linter's contract `private-upstream-in-compat` forbids the private modules outside it too):

- an import of a private module of an upstream: `tensorflow.python`, `tensorflow.core`, `keras.src`,
  `tf_keras.src`, a path with a component that starts with ``_`` (`jax._src`, `ray._private`,
  `ray.train.v2._internal`), or a name with a leading underscore imported from an upstream module;
- an attribute with one leading underscore read, written, or named in `getattr`/`hasattr`/`setattr`, on an
  upstream module, or on any object where no tfscale class or module outside this package defines that name
  (`oracle._retry_queue`, `model._initial_epoch`; `self._steps` of tfscale's own class is not);
- an upstream module's dunder attribute other than its metadata (`tf.__internal__`; `__version__` is public).

Public API stays outside: `tf.raw_ops`, `tf.compat.v1`, `tf.experimental.*`, `jax.experimental.*`, and the
standard library's own underscore functions (`os._exit`, `sys._getframe`).

Every module here imports its upstream inside its functions (`import tfscale.compat.tensorflow` loads no
TensorFlow); the two modules that subclass an upstream class (`keras.multi_worker`, `keras.accumulation`)
import it at the top and are imported only by code that trains with it.
"""

from __future__ import annotations

import importlib.metadata

from tfscale.errors import UpstreamError


def version(module_version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as "2.21.0" or "0.10.2.dev1"."""
    parts = [int("".join(c for c in p if c.isdigit()) or 0) for p in module_version.split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def version_of(distribution: str) -> str:
    """The installed version of a distribution ("tensorflow", "keras"...), or "(not installed)"."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def changed(upstream: str, installed_version: str, what: str, checked: str, *,
            needed_for: str, fix: str | None = None) -> UpstreamError:
    """The error for a private API of `upstream` that is gone or changed in the installed version.

    Args:
        upstream: the package, e.g. "TensorFlow".
        installed_version: its installed version.
        what: the private name that is missing, e.g. "tensorflow.python.eager.context.context().wait_at_barrier".
        checked: the versions it was checked on, e.g. "2.20-2.21".
        needed_for: what tfscale does with it.
        fix: what to do; by default, install a checked version.
    """
    return UpstreamError(
        f"{upstream} {installed_version} has no {what}, which tfscale uses for {needed_for} (checked on "
        f"{upstream} {checked})", where=f"tfscale.compat ({upstream}'s quarantine)",
        fix=fix or f"install {upstream} {checked}, or report the version to tfscale")
