"""Dask's private APIs that tfscale uses (the Dask quarantine; see `tfscale.compat`).

Checked on dask 2026.11.

1. `empty_frame` (`DataFrame._meta`): the empty pandas frame with the columns and dtypes of a Dask dataframe,
   which tfscale reads to build the tf.data signature without computing a partition. Dask documents
   ``_meta`` as how a collection carries its structure, but names it private. Gone: `UpstreamError`.
"""

from __future__ import annotations

from tfscale import compat

CHECKED_TEXT = "2026.11"


def empty_frame(frame):
    """An empty pandas frame with `frame`'s columns and dtypes (1.)."""
    meta = getattr(frame, "_meta", None)
    if meta is None or not hasattr(meta, "columns"):
        raise compat.changed("Dask", compat.version_of("dask"), "DataFrame._meta", CHECKED_TEXT,
                             needed_for="reading a Dask dataframe's columns and dtypes (tfscale.data.from_dask)")
    return meta
