"""Ports under Slurm: a step's tasks listen on the ports Slurm reserved for it (`srun --resv-ports`,
SLURM_STEP_RESV_PORTS), so two steps on one node never collide; TFSCALE_PORT still wins; 8888 + index otherwise."""

import json
import re
import threading

import pytest

from require import skip_or_fail
from test_slurm import task_env
from tests.cluster import slurm
from tfscale.cluster.detection import slurm as slurm_layout
from tfscale.errors import ClusterError

pytestmark = pytest.mark.slow
STEP = {"SLURM_PROCID": "1", "SLURM_STEP_NODELIST": "h[1-2]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
        "SLURM_STEP_NUM_TASKS": "4"}


def test_reserved_ports_are_used_by_local_task_index_and_tfscale_port_wins():
    cluster, rank = slurm_layout.cpu_cluster({**STEP, "SLURM_STEP_RESV_PORTS": "31004,31006-31007"})
    assert cluster["worker"] == ["h1:31004", "h1:31006", "h2:31004", "h2:31006"] and rank == 1
    explicit, _ = slurm_layout.cpu_cluster({**STEP, "SLURM_STEP_RESV_PORTS": "31004-31005"}, port_base=9000)
    assert explicit["worker"] == ["h1:9000", "h1:9001", "h2:9000", "h2:9001"]
    default, _ = slurm_layout.cpu_cluster(STEP)
    assert default["worker"] == ["h1:8888", "h1:8889", "h2:8888", "h2:8889"]
    with pytest.raises(ClusterError, match="reserved 1 port") as e:
        slurm_layout.cpu_cluster({**STEP, "SLURM_STEP_RESV_PORTS": "31004"})
    assert "--resv-ports=2" in e.value.fix
    with pytest.raises(ClusterError, match="SLURM_STEP_RESV_PORTS"):
        slurm_layout.cpu_cluster({**STEP, "SLURM_STEP_RESV_PORTS": "31004-x"})


@pytest.fixture(scope="module")
def one_node():
    reason = slurm.skip_reason()
    if reason:
        skip_or_fail(reason)
    with slurm.cluster() as cluster:
        yield cluster


def test_two_steps_on_one_node_get_the_ports_slurm_reserved_for_each(one_node):
    """Two job steps of 2 tasks run on one node at the same time, each with `srun --resv-ports`: every task's
    TF_CONFIG (from `tfscale launch --dry-run` in the task) uses its step's reserved ports, and the two steps'
    ports are disjoint (with a fixed base both would take 8888 and 8889)."""
    show = 'echo "resv $SLURM_STEP_RESV_PORTS"; sleep 3; tfscale launch --dry-run -- true'
    outputs = [None, None]

    def step(i):
        outputs[i] = one_node.run(["srun", "-n", "2", "--resv-ports=2", "--overlap", "sh", "-c", show],
                                  env=task_env(), timeout=120).stdout

    threads = [threading.Thread(target=step, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seen = []
    for out in outputs:
        reserved = slurm_layout.reserved_ports({"SLURM_STEP_RESV_PORTS": re.search(r"^resv (\S+)$", out, re.M)[1]})
        configs = [json.loads(c) for c in re.findall(r"TF_CONFIG='([^']+)'", out)]
        assert len(configs) == 2, out
        ports = sorted({int(w.rsplit(":", 1)[1]) for w in configs[0]["cluster"]["worker"]})
        assert ports == reserved[:2], (ports, reserved, out)
        seen.append(set(ports))
    assert not seen[0] & seen[1], seen
    print(f"the two steps' ports: {sorted(seen[0])} and {sorted(seen[1])}")
