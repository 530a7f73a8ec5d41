import os
import sys
from pathlib import Path

# tests/procs.py and the worker scripts are imported as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_collection_modifyitems(config, items):
    """Under `pytest -n N --dist loadgroup` (scripts/test.sh), the tests of a module that builds a module-scoped
    fixture (a trained model, a converted folder) stay on one worker, so it is built once; the others are dealt
    one test at a time."""
    import pytest

    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info else ()
        if any(d.scope == "module" for group in defs for d in group):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
