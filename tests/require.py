"""A test that needs a capability this machine lacks (root, `ip`, network namespaces, Slurm) skips, except in CI.

.ci/run sets TFSCALE_REQUIRE_CLUSTER=1 and scripts/test.sh installs what these tests need, so there a missing
capability is a broken CI image: the test fails instead of silently leaving the run (pytest would exit 0).
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE = "TFSCALE_REQUIRE_CLUSTER"


def skip_or_fail(reason: str) -> NoReturn:
    """Skips the calling test (or fixture) for `reason`; fails it where TFSCALE_REQUIRE_CLUSTER=1 (CI)."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason} ({REQUIRE}=1: a missing capability fails in CI)", pytrace=False)
    pytest.skip(reason)
