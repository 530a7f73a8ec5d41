#!/usr/bin/env bash
# The TensorFlow 2.20 leg (README, "TPU VMs and TensorFlow 2.20"): installs tfscale on TensorFlow 2.20, the
# TensorFlow of PyPI's newest tensorflow-tpu, and runs the strategy, equivalence and export tests on it. Run it
# inside its own virtual environment (.ci/run makes .ci-venv-tf220); a failing (or empty, exit 5) pytest run
# fails the script.
#
#   bash scripts/test_tf220.sh [--tpu] [--deps-only | --after-deps] [pytest arguments]
#
# --tpu          the TensorFlow built for TPUs (tensorflow-tpu 2.20 with a libtpu it can load), installed the way
#                the README tells TPU VM users to, and the strategy tests run with libtpu loaded. Without it:
#                plain tensorflow 2.20, which CI runs: the TPU build downloads a second TensorFlow and libtpu
#                (about 0.8 GB) and every process that loads libtpu waits 5 s for a TPU platform; it has passed
#                the strategy, equivalence and export tests (37 passed), see the README.
# --deps-only    installs everything but tfscale itself, then stops (.ci/run does this while it installs the
#                main leg, so that the two never build tfscale in the checkout at the same time);
# --after-deps   installs tfscale (--no-deps, seconds) and runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
tpu=0
step=all
while [ $# -gt 0 ]; do
    case "$1" in
        --tpu) tpu=1; shift ;;
        --deps-only) step=deps; shift ;;
        --after-deps) step=tests; shift ;;
        *) break ;;
    esac
done
TF_VERSION=2.20.0
# The newest libtpu released before tensorflow-tpu 2.20.0 was built (2025-08-01; TensorFlow 2025-08-07).
# libtpu 0.0.32 and later lack TPU functions TensorFlow 2.20 loads: `import tensorflow` aborts with
# "... not available in this library".
LIBTPU_VERSION=0.0.20

if [ "$step" != tests ]; then
    python -m pip install --quiet --upgrade pip
    # 1. What tfscale[quantize,demo] needs, resolved against plain TensorFlow 2.20: quantize brings
    #    ai-edge-litert (and tfmot, tf-keras 2.20), demo brings scikit-learn.
    mapfile -t deps < <(python - <<'PY'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras, wanted, seen = project["optional-dependencies"], ["quantize", "demo"], set()
deps = list(project["dependencies"])
while wanted:
    extra = wanted.pop()
    if extra not in seen:
        seen.add(extra)
        for req in extras[extra]:
            inner = re.fullmatch(r"tfscale\[(.*)\]", req)
            if inner:
                wanted += [e.strip() for e in inner[1].split(",")]
            else:
                deps.append(req)
print("\n".join(deps))
PY
)
    # --no-compile, as in scripts/test.sh: the tests write the bytecode of what they import
    python -m pip install --quiet --no-compile "${deps[@]}" "tensorflow==$TF_VERSION" \
        "pytest>=8" "pytest-timeout>=2.3" "pytest-xdist>=3.7" "psutil>=5.9"
    if [ "$tpu" = 1 ]; then
        # 2. The same TensorFlow built for TPUs in its place, with a libtpu it can load. Its requirements are
        #    tensorflow's plus libtpu, so --no-deps keeps pip from bringing the `tensorflow` package back.
        python -m pip uninstall --quiet --yes tensorflow
        python -m pip install --quiet --no-deps "tensorflow-tpu==$TF_VERSION" "libtpu==$LIBTPU_VERSION"
    fi
fi
[ "$step" = deps ] && exit 0
python -m pip install --quiet --no-deps -e .
unset PYTHONDONTWRITEBYTECODE  # see scripts/test.sh

TESTS=(tests/test_strategy.py tests/test_scale_equivalence.py tests/test_export_strategy.py)
# QAT and pruning (tests/test_export_tfmot.py) run in a tf-keras child process that does not depend on the
# TensorFlow release; they are left to the main leg to keep CI within its time.
EXPORT_TESTS=(tests/test_export.py)
if [ "$tpu" = 0 ]; then
    python -c '
import sys
import tensorflow as tf
print(f"TensorFlow {tf.__version__}")
sys.exit(0 if tf.__version__.startswith("2.20.") else 1)'
    python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder "${TESTS[@]}" "${EXPORT_TESTS[@]}" "$@"
    exit 0
fi
# There is no TPU here: without this, libtpu waits for the Compute Engine metadata server in every process.
export TPU_SKIP_MDS_QUERY=1
# With libtpu loaded, the TPU build shows a TPU_SYSTEM device, even on a machine without TPUs.
python -c '
import sys
import tensorflow as tf
loaded = bool(tf.config.list_logical_devices("TPU_SYSTEM"))
print(f"TensorFlow {tf.__version__}, libtpu loaded: {loaded}")
sys.exit(0 if tf.__version__.startswith("2.20.") and loaded else 1)'
# Strategies, equivalence, and export under a strategy, with libtpu loaded as on a TPU VM.
python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder "${TESTS[@]}" "$@"
# The export tests train their models outside any strategy with Keras' jit_compile="auto", which turns XLA on
# when it sees a device besides the CPU (TPU_SYSTEM here); the TPU build has no XLA for the CPU ("could not
# find registered transfer manager for platform Host"). Without libtpu, it is TensorFlow 2.20 on a CPU machine.
TPU_LOAD_LIBRARY=0 python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder "${EXPORT_TESTS[@]}" "$@"
