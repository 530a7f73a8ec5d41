#!/usr/bin/env bash
# The TensorFlow 2.20 leg (README, "TPU VMs and TensorFlow 2.20"): installs tfscale on TensorFlow 2.20, the
# TensorFlow of PyPI's newest tensorflow-tpu, the way the README tells TPU VM users to, and runs the
# strategy, equivalence and export tests on it. Run it inside its own virtual environment (.ci/run makes
# .ci-venv-tf220); extra arguments go to pytest, and a failing (or empty, exit 5) pytest run fails the script.
# `--install-only` stops after installing, `--no-install` starts at the tests (.ci/run installs this leg in the
# background while the main leg's tests run).
set -euo pipefail
cd "$(dirname "$0")/.."
step=all
case "${1:-}" in
    --install-only) step=install; shift ;;
    --no-install) step=test; shift ;;
esac
TF_VERSION=2.20.0
# The newest libtpu released before tensorflow-tpu 2.20.0 was built (2025-08-01; TensorFlow 2025-08-07).
# libtpu 0.0.32 and later lack TPU functions TensorFlow 2.20 loads: `import tensorflow` aborts with
# "... not available in this library".
LIBTPU_VERSION=0.0.20

if [ "$step" != test ]; then
    python -m pip install --quiet --upgrade pip
    # 1. tfscale and what these tests need, resolved against plain TensorFlow 2.20: quantize brings
    #    ai-edge-litert, tfmot and tf-keras 2.20 (the QAT and pruning tests), demo brings scikit-learn.
    python -m pip install --quiet -e ".[quantize,demo]" "tensorflow==$TF_VERSION" \
        "pytest>=8" "pytest-timeout>=2.3" "pytest-xdist>=3.5" "psutil>=5.9"
    # 2. The same TensorFlow built for TPUs in its place, with a libtpu it can load. Its requirements are
    #    tensorflow's plus libtpu, so --no-deps keeps pip from bringing the `tensorflow` package back.
    python -m pip uninstall --quiet --yes tensorflow
    python -m pip install --quiet --no-deps "tensorflow-tpu==$TF_VERSION" "libtpu==$LIBTPU_VERSION"
fi
[ "$step" = install ] && exit 0

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
python -m pytest -q -n 2 --dist loadgroup tests/test_strategy.py tests/test_scale_equivalence.py \
    tests/test_export_strategy.py "$@"
# The export tests train their models outside any strategy with Keras' jit_compile="auto", which turns XLA on
# when it sees a device besides the CPU (TPU_SYSTEM here); the TPU build has no XLA for the CPU ("could not
# find registered transfer manager for platform Host"). Without libtpu, it is TensorFlow 2.20 on a CPU machine.
TPU_LOAD_LIBRARY=0 python -m pytest -q -n 2 --dist loadgroup tests/test_export.py tests/test_export_tfmot.py "$@"
