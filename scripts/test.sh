#!/usr/bin/env bash
# Installs tfscale with its test extras and runs the whole test suite (README's second command).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e ".[test]"
python -m pytest -q "$@"
