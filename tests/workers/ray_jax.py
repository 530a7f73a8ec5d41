"""`tfscale.ray.fit(..., backend="jax")` with a worker killed: ray_resume.py's run on the JAX engine.

Usage: python ray_jax.py OUT_DIR CHECKPOINT_DIR STORAGE

The driver of tests/test_ray.py's JAX test, in host 0 of its Ray cluster. The train function is ray_resume.py's
(`tfscale.fit` with step checkpoints; rank 1 SIGKILLs itself once, after global step 14), sent to the workers by
value. The cluster's nodes hide JAX from the processes they start (tests/procs.py): this job's runtime
environment names what its workers hide instead, TensorFlow among them (the JAX path needs none). Prints
`RESULT {Ray's result metrics}`.
"""

import json
import os
import sys

import ray
from ray import cloudpickle

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ray_resume  # noqa: E402

import tfscale as ts  # noqa: E402

cloudpickle.register_pickle_by_value(ray_resume)  # the workers cannot import tests/workers

out, checkpoint_dir, storage = sys.argv[1:4]
ray.init(address=os.environ["TFSCALE_TEST_RAY_ADDRESS"],
         runtime_env={"env_vars": {"TFSCALE_TEST_HIDE": "sklearn,matplotlib,IPython,tensorflow"}})
result = ts.ray.fit(ray_resume.train_fn, backend="jax", num_workers=2, cpus_per_worker=1, max_failures=1,
                    storage_path=storage, name="ray_jax_kill", collective_timeout=60,
                    train_loop_config={"out": out, "checkpoint_dir": checkpoint_dir, "fault": "kill"},
                    env={"OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                         "TFSCALE_TEST_RAY_HEAD": os.environ.get("TFSCALE_TEST_RAY_HEAD", "")})
print("RESULT " + json.dumps(result.metrics), flush=True)
