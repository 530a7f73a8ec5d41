#!/usr/bin/env bash
# The JAX-only leg (issue #25, "Without TensorFlow"): tfscale installed as on a Colab or Kaggle TPU runtime,
# `pip install -e ".[jax,launch]"`, which must not bring TensorFlow; then the tests of the JAX engine without
# TensorFlow (tests/test_jax_only.py) and of a multi-host TPU slice's variables (tests/test_tpu_pod_env.py).
# Run it inside its own virtual environment (.ci/run makes .ci-venv-jax); a failing (or empty, exit 5) pytest
# run fails the script, and so does a `tensorflow` that can be imported there.
#
#   bash scripts/test_jax_only.sh [--deps-only | --after-deps] [pytest arguments]
#
# --deps-only    installs the dependencies of tfscale[jax,launch] and pytest, not tfscale itself, then stops
#                (.ci/run does this while it installs the main leg, so that the two never build tfscale in the
#                checkout at the same time);
# --after-deps   installs tfscale (--no-deps, seconds), checks that TensorFlow is absent and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
step=all
case "${1:-}" in
    --deps-only) step=deps; shift ;;
    --after-deps) step=tests; shift ;;
esac
if [ "$step" != tests ]; then
    python -m pip install --quiet --upgrade pip
    # What `pip install -e ".[jax,launch]"` brings, read from pyproject.toml (core dependencies and the two extras)
    mapfile -t deps < <(python - <<'PY'
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
print("\n".join(project["dependencies"] + extras["jax"] + extras["launch"]))
PY
)
    # --no-compile, as in scripts/test.sh: the tests write the bytecode of what they import
    python -m pip install --quiet --no-compile "${deps[@]}" "pytest>=8" "pytest-timeout>=2.3" "psutil>=5.9"
fi
[ "$step" = deps ] && exit 0
python -m pip install --quiet --no-deps -e .
unset PYTHONDONTWRITEBYTECODE  # see scripts/test.sh
python - <<'PY'
import importlib.util
import sys

if importlib.util.find_spec("tensorflow") is not None:
    sys.exit("scripts/test_jax_only.sh: tensorflow is installed in the JAX-only environment (pyproject.toml's "
             "core dependencies or the jax extra bring it)")
print("JAX-only environment: no tensorflow package")
PY
# The Python 3.10 test is packaging, not JAX: the main leg runs it.
KERAS_BACKEND=jax python -m pytest -q -p no:cacheprovider --durations=5 -k "not python_310" \
    tests/test_jax_only.py tests/test_tpu_pod_env.py "$@"
