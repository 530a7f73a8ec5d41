"""tfscale under a real Slurm (Debian's slurm-wlm + munge, started by tests/cluster/slurm.py): srun across two
hosts (network namespaces), the sbatch example of examples/slurm/ requeued and resumed from its checkpoint,
scancel ending every worker, and a job preempted mid-epoch by SIGUSR1 and by a requeue resuming at the exact step."""

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from procs import REPO, base_env, free_ports, wait_all
from require import skip_or_fail
from tests.cluster import netns, slurm
from tfscale.cluster.detection import slurm as slurm_layout
from tfscale.scale.checkpoint_store import CheckpointStore
from tfscale.errors import ClusterError

pytestmark = pytest.mark.slow
EXAMPLE = REPO / "examples" / "slurm"
BIN = Path(sys.executable).parent  # tfscale and python, first on the tasks' PATH


def _skip_without_slurm() -> None:
    """Skips (fails in CI) where Slurm cannot run (not root; apt-get installs it where missing, when first needed)."""
    reason = slurm.skip_reason() or netns.skip_reason()
    if reason:
        skip_or_fail(reason)


@pytest.fixture(scope="module")
def two_nodes():
    """Two Slurm nodes h0 and h1, each a host (network namespace); the clients run on h0."""
    _skip_without_slurm()
    with netns.hosts(2) as hosts, slurm.cluster(hosts) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def one_node():
    """One Slurm node ("localhost") on 127.0.0.1."""
    _skip_without_slurm()
    with slurm.cluster() as cluster:
        yield cluster


def task_env(**extra: str) -> dict[str, str]:
    """What the job's tasks inherit (srun and sbatch export the submitting environment)."""
    return base_env(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)


def weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as data:
        return [data[f"w{i}"] for i in range(sum(k[0] == "w" and k[1:].isdigit() for k in data.files))]


@pytest.fixture(scope="module")
def four_tasks(two_nodes, tmp_path_factory):
    """`srun -N 2 -n 4 tfscale launch -- python train.py`: 2 tasks on each host; its output and weights."""
    out = tmp_path_factory.mktemp("srun")
    done = two_nodes.run(["srun", "-N", "2", "-n", "4", "--chdir", EXAMPLE, "tfscale", "launch", "--",
                          "python", "train.py", "--checkpoint-dir", out / "ckpt", "--out", out / "w.npz"],
                         env=task_env(), timeout=300, check=False)
    return done, [weights(out / f"w.{rank}.npz") for rank in range(4) if (out / f"w.{rank}.npz").exists()]


def test_ranks_follow_slurms_node_order_and_distribution():
    assert slurm_layout.placement(["h9", "h10"], [2, 2]) == [("h9", 0), ("h9", 1), ("h10", 0), ("h10", 1)]
    assert slurm_layout.placement(["h9", "h10"], [2, 1], "cyclic") == [("h9", 0), ("h10", 0), ("h9", 1)]
    env = {"SLURM_PROCID": "1", "SLURM_STEP_NODELIST": "h[9-10]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
           "SLURM_STEP_NUM_TASKS": "4", "SLURMD_NODENAME": "h10", "SLURM_LOCALID": "0"}
    cluster, rank = slurm_layout.cpu_cluster({**env, "SLURM_DISTRIBUTION": "cyclic"}, port_base=9000)
    assert cluster["worker"] == ["h9:9000", "h10:9000", "h9:9001", "h10:9001"] and rank == 1
    with pytest.raises(ClusterError, match="task 1 runs on h10 as its task 0") as e:
        slurm_layout.cpu_cluster({**env, "SLURM_DISTRIBUTION": "plane=2"}, port_base=9000)
    assert "--distribution=block" in e.value.fix


def test_each_task_of_a_cyclic_step_is_given_its_own_node_and_port(two_nodes):
    """`tfscale launch --dry-run` in every task of a real step whose ranks alternate between the nodes: TF_CONFIG's
    entry for each task is its own node (a block step: the 4-task training run below)."""
    show = ('echo "self $SLURM_PROCID $SLURMD_NODENAME $SLURM_LOCALID $SLURM_STEP_RESV_PORTS"; '
            'tfscale launch --dry-run -- true')
    done = two_nodes.run(["srun", "-N", "2", "-n", "4", "--distribution=cyclic", "sh", "-c", show],
                         env=task_env(), timeout=60)
    selves = re.findall(r"^self (\d) (h\d) (\d) ?(\S*)$", done.stdout, re.M)
    configs = re.findall(r"TF_CONFIG='([^']+)'", done.stdout)
    assert len(selves) == 4 and len(configs) == 4, done.stdout
    by_rank = {json.loads(c)["task"]["index"]: json.loads(c) for c in configs}
    for rank, node, local, reserved in selves:  # the ports Slurm reserved for the step (MpiParams=ports), else 8888+
        ports = slurm_layout.reserved_ports({"SLURM_STEP_RESV_PORTS": reserved}) or [8888, 8889]
        assert by_rank[int(rank)]["cluster"]["worker"][int(rank)] == f"{node}:{ports[int(local)]}", done.stdout
    places = re.findall(r"TFSCALE_RANK=(\d) .*TFSCALE_LOCAL_RANK=(\d) TFSCALE_LOCAL_WORLD_SIZE=(\d)", done.stdout)
    assert sorted(places) == sorted((rank, local, "2") for rank, _, local, _ in selves), done.stdout
    assert len({json.dumps(c["cluster"]) for c in by_rank.values()}) == 1  # one cluster, seen alike by all


def test_srun_on_two_hosts_with_two_tasks_each_trains_to_identical_weights(four_tasks):
    done, ranks = four_tasks
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in range(4):
        assert f"rank {rank} of 4: resumed after epoch 0, ran 3 epoch(s)" in done.stdout, done.stdout[-3000:]
    assert len(ranks) == 4
    for other in ranks[1:]:
        for a, b in zip(ranks[0], other, strict=True):
            np.testing.assert_array_equal(a, b)


def _with_marker(marker: str) -> list[int]:
    """Processes whose command line holds `marker` (workers, their launchers, srun, the batch script)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


def _wait_until(condition, what: str, cluster, job: int, output: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        state = cluster.job_state(job)
        assert state in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING"), \
            f"job {job} is {state} before {what}:\n{output.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"not {what} after {timeout} s:\n{output.read_text()[-4000:]}"
        time.sleep(0.3)


def test_sbatch_example_on_one_node_trains_like_the_four_task_run(one_node, four_tasks, tmp_path):
    """examples/slurm/train.sbatch as one task: the job's output, and weights equal to the 4-task run's."""
    output = tmp_path / "job.out"
    job = one_node.sbatch(["--nodes=1", "--ntasks-per-node=1", "--chdir", EXAMPLE, f"--output={output}",
                           EXAMPLE / "train.sbatch", "--out", tmp_path / "w.npz"],
                          env=task_env(CHECKPOINTS=str(tmp_path / "ckpt"), TFSCALE_PORT=str(free_ports(1)[0])))
    assert one_node.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED"), timeout=240) == "COMPLETED", \
        output.read_text()[-4000:]
    text = output.read_text()
    assert f"job {job} on localhost: run 1, checkpoints in {tmp_path / 'ckpt'}" in text, text
    assert "rank 0 of 1: resumed after epoch 0, ran 3 epoch(s)" in text and f"job {job}: done" in text, text
    _, uninterrupted = four_tasks
    one = weights(tmp_path / "w.0.npz")
    assert len(one) == len(uninterrupted[0]) == 4
    for a, b in zip(one, uninterrupted[0]):
        np.testing.assert_allclose(a, b, atol=1e-5)
    print(f"1 task vs 4 tasks: largest weight difference {max(np.abs(a - b).max() for a, b in zip(one, uninterrupted[0])):.2e}")


def test_sbatch_example_requeued_resumes_from_its_checkpoint_and_scancel_ends_every_worker(two_nodes, tmp_path):
    """examples/slurm/train.sbatch on 2 nodes x 1 task: `scontrol requeue` after the first checkpoint, the
    second run resumes after that epoch; then `scancel` ends every process of the job (README: in ~5 s; the time
    is printed, not asserted: the deadline is generous for a loaded 2-core machine)."""
    marker = f"slurm-{uuid.uuid4().hex[:12]}"
    output, checkpoints = tmp_path / "job.out", tmp_path / "ckpt"
    job = two_nodes.sbatch(["--chdir", EXAMPLE, f"--output={output}", EXAMPLE / "train.sbatch",
                            "--epochs", "1000", "--out", tmp_path / f"{marker}.npz"],
                           env=task_env(CHECKPOINTS=str(checkpoints)))
    _wait_until((checkpoints / "epoch-00001.weights.h5").exists, "checkpointed", two_nodes, job, output)
    two_nodes.run(["scontrol", "requeue", str(job)], timeout=30)

    def resumed():
        second = output.read_text().partition(f"job {job} on h[0-1]: run 2")[2]
        return re.search(r"Epoch (\d+)/1000", second)
    _wait_until(resumed, "resumed", two_nodes, job, output)
    first_epoch = int(resumed().group(1))
    assert first_epoch >= 2, output.read_text()[-4000:]  # not from the start: from a checkpoint
    _wait_until((checkpoints / f"epoch-{first_epoch:05d}.weights.h5").exists, "training again", two_nodes, job,
                output)
    assert len(_with_marker(marker)) >= 4, "2 launchers and 2 workers expected"

    two_nodes.run(["scancel", str(job)], timeout=30)
    cancelled = time.monotonic()
    while _with_marker(marker) and time.monotonic() - cancelled < 90:
        time.sleep(0.1)
    took, left = time.monotonic() - cancelled, _with_marker(marker)
    assert not left, f"{len(left)} process(es) left {took:.1f} s after scancel:\n{output.read_text()}"
    assert two_nodes.wait_job(job, ("CANCELLED",), timeout=60) == "CANCELLED"
    print(f"requeued job resumed at epoch {first_epoch}; scancel: every process gone after {took:.1f} s")


PREEMPT_WORKER = REPO / "tests" / "workers" / "preempt_resume.py"  # 3 epochs x 10 steps
# What a user submits: the job asks Slurm for SIGUSR1 120 s before its time limit (to every process of its
# steps; `B:USR1` would signal this shell only); tfscale then saves at the end of the step and exits 143,
# on which the script requeues the job. `scontrol requeue` (SIGTERM) saves at the step too.
PREEMPTIBLE_SBATCH = f"""#!/bin/bash
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --time=60
#SBATCH --signal=USR1@120
echo "job $SLURM_JOB_ID: run $(( ${{SLURM_RESTART_COUNT:-0}} + 1 ))"
status=0
srun tfscale launch -- python {PREEMPT_WORKER} "$@" || status=$?
echo "job $SLURM_JOB_ID: srun exited $status"
if [ "$status" -eq 143 ]; then scontrol requeue "$SLURM_JOB_ID"; fi
exit "$status"
"""


def test_sbatch_requeue_with_usr1_saves_at_the_step_and_resumes_there_exactly(one_node, tmp_path):
    """A `--requeue --signal=USR1@120` batch job preempted twice mid-epoch resumes each time at the exact step
    it saved, and ends with the weights of an uninterrupted run:

    - `scancel --signal=USR1` mid-epoch 2 (what `--signal` sends before the time limit) reaches every process
      of the step: the launcher lives through it, the worker saves at the end of its step and exits 143, and
      the script requeues the job;
    - `scontrol requeue` mid-epoch 3: SIGTERM to every process of the job; the worker saves at its step again.
    STEP_SLEEP=0.3 (tests/workers/preempt_resume.py) paces the steps so that the signals land mid-epoch."""
    script, output, ckpt = tmp_path / "preemptible.sbatch", tmp_path / "job.out", tmp_path / "ckpt"
    script.write_text(PREEMPTIBLE_SBATCH)
    reference = subprocess.Popen([sys.executable, PREEMPT_WORKER, tmp_path / "ref.npz", tmp_path / "ref-ckpt"],
                                 env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
    started = time.monotonic()
    job = one_node.sbatch([f"--output={output}", script, tmp_path / "out.npz", ckpt],
                          env=task_env(STEP_SLEEP="0.3", TFSCALE_PORT=str(free_ports(1)[0])))

    def run(n: int) -> str:
        """What run `n` of the job wrote (the script numbers its runs)."""
        text = output.read_text() if output.exists() else ""
        return text.partition(f"job {job}: run {n}\n")[2].partition(f"job {job}: run {n + 1}\n")[0]

    def steps(n: int) -> int:
        return len(re.findall(r"^\[w0\] step \d+$", run(n), re.M))

    def preempted(after: int):
        """The newest checkpoint, once it is a preemption's saved after global step `after`."""
        newest = (CheckpointStore(str(ckpt)).list() or [None])[0]
        return newest if newest and newest.reason == "preemption" and newest.global_step > after else None

    _wait_until(lambda: steps(1) >= 14, "in epoch 2", one_node, job, output)  # step 4 of 10 in epoch 2
    one_node.run(["scancel", "--signal=USR1", str(job)], timeout=30)
    usr1 = time.monotonic()
    _wait_until(lambda: preempted(0) and run(2), "saved and requeued", one_node, job, output)
    first = preempted(0)
    assert first.epoch == 1 and first.step > 0, first  # mid-epoch 2: 1 epoch done, `step` steps into the 2nd
    assert f"[w0] preempted by SIGUSR1: saved {first.name}" in run(1), run(1)
    assert f"task 0: Exited with exit code 143\njob {job}: srun exited 143" in run(1), run(1)  # the launcher too
    assert steps(1) == first.global_step, run(1)  # saved at the step it was in, or the next

    _wait_until(lambda: first.global_step + steps(2) >= 24, "in epoch 3", one_node, job, output)
    one_node.run(["scontrol", "requeue", str(job)], timeout=30)
    requeue = time.monotonic()
    _wait_until(lambda: preempted(first.global_step) and run(3), "saved and requeued again", one_node, job, output)
    second = preempted(first.global_step)
    assert second.epoch == 2 and second.step > 0, second
    assert f"[w0] preempted by SIGTERM: saved {second.name}" in run(2), run(2)
    assert steps(2) == second.global_step - first.global_step, run(2)  # run 2 started at `first`, exactly

    assert one_node.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED"), timeout=240) == "COMPLETED", \
        output.read_text()[-4000:]
    assert f"[w0] rank 0: 1 replica(s), resumed at {second.epoch}:{second.step}" in run(3), run(3)
    assert steps(3) == 30 - second.global_step, run(3)
    wait_all([reference], timeout=300)
    resumed, uninterrupted = weights(tmp_path / "out.npz"), weights(tmp_path / "ref.npz")
    assert len(resumed) == len(uninterrupted) == 4
    for a, b in zip(resumed, uninterrupted):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print(f"USR1 at {usr1 - started:.1f} s: saved {first.name}; requeue (SIGTERM) at {requeue - started:.1f} s: "
          f"saved {second.name}; run 3 resumed there and completed at {time.monotonic() - started:.1f} s; largest "
          f"weight difference {max(np.abs(a - b).max() for a, b in zip(resumed, uninterrupted)):.1e}")


def test_sbatch_requeued_on_fewer_nodes_resumes_at_the_exact_step_with_the_uninterrupted_weights(two_nodes,
                                                                                               tmp_path):
    """A `--nodes=2 --requeue` job trains on 2 nodes (2 TensorFlow workers), loses node h1 (drained) and is
    requeued mid-epoch 2, then given one node (`scontrol update JobId=... NumNodes=1 NumTasks=1`, as an operator
    would for a job whose node is gone for good):
    the workers save at the step and exit 143, Slurm starts the job again on h0 alone, and
    its one worker resumes at the exact step (the same global batch, on half the replicas) and ends with the
    weights of an uninterrupted run. The restore path is the one of every other resume (tfscale.fit)."""
    script, output, ckpt = tmp_path / "elastic.sbatch", tmp_path / "job.out", tmp_path / "ckpt"
    # one task per node the job has now (Slurm's own SLURM_NTASKS keeps the count it was submitted with)
    script.write_text(PREEMPTIBLE_SBATCH.replace("#SBATCH --nodes=1\n", "#SBATCH --nodes=2\n").replace(
        "srun tfscale", 'srun -N "$SLURM_JOB_NUM_NODES" -n "$SLURM_JOB_NUM_NODES" tfscale'))
    reference = subprocess.Popen([sys.executable, PREEMPT_WORKER, tmp_path / "ref.npz", tmp_path / "ref-ckpt"],
                                 env=base_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
    job = two_nodes.sbatch([f"--output={output}", script, tmp_path / "out.npz", ckpt],
                           env=task_env(STEP_SLEEP="0.3", TFSCALE_PORT=str(free_ports(1)[0])))
    lost = two_nodes.nodes[1]

    def run(n: int) -> str:
        text = output.read_text() if output.exists() else ""
        return text.partition(f"job {job}: run {n}\n")[2].partition(f"job {job}: run {n + 1}\n")[0]

    def preempted():
        newest = (CheckpointStore(str(ckpt)).list() or [None])[0]
        return newest if newest and newest.reason == "preemption" else None

    try:
        _wait_until(lambda: len(re.findall(r"^\[w\d+\] step \d+$", run(1), re.M)) >= 14, "in epoch 2", two_nodes,
                    job, output)
        two_nodes.run(["scontrol", "update", f"NodeName={lost}", "State=DRAIN", "Reason=lost"], timeout=30)
        two_nodes.run(["scontrol", "requeue", str(job)], timeout=30)
        _wait_until(lambda: two_nodes.run(["scontrol", "update", f"JobId={job}", "NumNodes=1", "NumTasks=1"],
                                          timeout=30, check=False).returncode == 0, "given one node", two_nodes, job, output)
        _wait_until(lambda: preempted() and run(2), "saved and started again", two_nodes, job, output)
        saved = preempted()
        assert (saved.num_workers, saved.epoch) == (2, 1) and saved.step > 0, saved
        assert two_nodes.wait_job(job, ("COMPLETED", "FAILED", "CANCELLED"), timeout=240) == "COMPLETED", \
            output.read_text()[-4000:]
    finally:
        two_nodes.run(["scontrol", "update", f"NodeName={lost}", "State=RESUME"], timeout=30, check=False)
    assert f"rank 0: 1 replica(s), resumed at {saved.epoch}:{saved.step}" in run(2), run(2)
    wait_all([reference], timeout=300)
    resumed, uninterrupted = weights(tmp_path / "out.npz"), weights(tmp_path / "ref.npz")
    assert len(resumed) == len(uninterrupted) == 4
    for a, b in zip(resumed, uninterrupted):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    print(f"2 nodes -> 1: saved {saved.name} on 2 workers, resumed on 1; largest weight difference "
          f"{max(np.abs(a - b).max() for a, b in zip(resumed, uninterrupted)):.1e}")
