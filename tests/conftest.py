import os
import sys
from pathlib import Path

# tests/procs.py and the worker scripts are imported as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
