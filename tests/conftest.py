import os
import subprocess
import sys
from pathlib import Path

# tests/procs.py and the worker scripts are imported as plain modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# TFSCALE_PROCESS_LOG=FILE (.ci/run sets it): every process a test starts through subprocess (the launcher,
# workers, Slurm, Ray, namespaces...) appends that test's id to FILE, so CI can say how many tests start real
# processes. A module fixture's processes count for the test that built it.
if os.environ.get("TFSCALE_PROCESS_LOG"):
    _popen_init = subprocess.Popen.__init__

    def _logged_init(self, *args, **kwargs):
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
        if test:
            with open(os.environ["TFSCALE_PROCESS_LOG"], "a") as log:
                log.write(test + "\n")
        _popen_init(self, *args, **kwargs)

    subprocess.Popen.__init__ = _logged_init

# Seconds each test file took in CI (scripts/test.sh, 2 pytest workers on 2 cores; the junit report of a
# clean-clone .ci/run). Files run longest first, so that the last ones to finish are short and neither pytest
# worker waits for the other at the end: xdist hands out files in collection order (scripts/test.sh passes
# --no-loadscope-reorder). Only the order depends on these figures; a file missing here runs after those listed.
CI_SECONDS = {
    "test_soak": 226, "test_cluster_hosts": 193, "test_ray": 405, "test_jax_engine": 176, "test_launch": 160,
    "test_slurm": 370, "test_checkpoints_cluster": 300, "test_cluster_elastic": 110, "test_checkpoint_sharded": 85,
    "test_checkpoints_store": 80, "test_bench_checkpoint": 100, "test_output_lines": 132, "test_notebooks": 94, "test_scale_equivalence": 78,
    "test_output_report": 69, "test_train_scale": 63, "test_examples_images": 53, "test_accelerator_check": 52,
    "test_data_sharding": 46, "test_examples_sentiment": 70, "test_export_tfmot": 39, "test_strategy": 37,
    "test_examples_model_parallel": 29, "test_tune": 27, "test_data_service": 26, "test_data_transforms": 23,
    "test_launch_function": 22, "test_export": 22, "test_data_shards": 20, "test_sharded_input": 20,
    "test_bad_inputs": 20, "test_export_cli": 19, "test_export_strategy": 19, "test_data_errors": 30,
    "test_info": 14, "test_data_convert": 11, "test_train_fit": 10, "test_checkpoints": 45, "test_data_bombs": 35,
    "test_preemption_notice": 30, "test_slurm_ports": 15, "test_storage": 12, "test_data_elastic": 45,
    "test_promises": 30, "test_registry": 20, "test_jax_hosts": 150, "test_export_layers": 30,
    "test_export_mixed": 30, "test_layouts": 60, "test_planner": 50, "test_jax_only": 50, "test_tpu_pod_env": 20,
    "test_jax_parity": 35, "test_jax_tune": 40, "test_export_keras_modes": 90, "test_tune_workers": 150,
    "test_quarantine": 60, "test_tune_search": 40, "test_tune_resume": 40, "test_readme": 30, "test_help": 15,
}


def pytest_collection_modifyitems(session, config, items):
    """Longest files first (a stable sort: a file's tests keep their order)."""
    items.sort(key=lambda item: -CI_SECONDS.get(Path(str(item.fspath)).stem, 0))
