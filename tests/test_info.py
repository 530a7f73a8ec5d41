"""`tfscale info`: versions, devices, cluster, auto's choice and the registry; errors without tracebacks."""

import json
import re
import subprocess
import sys

import procs
from procs import run_one


def _info(*args, env=None):
    return run_one(["-m", "tfscale", "info", *args], env=env, timeout=120)


def test_info_json_reports_choice_and_reasons():
    out = _info("--json", "--replicas", "2").stdout
    report = json.loads(out[out.index("{\n"):])
    assert report["versions"]["tensorflow"].startswith("2.")
    assert report["versions"]["keras"].startswith("3.")
    assert report["auto"] == {"strategy": "mirrored", "reason": "2 CPU replicas asked for (logical devices)"}
    topology = report["topology"]
    assert (topology["manager"], topology["num_workers"], topology["is_chief"]) == ("none", 1, True)
    # one reason per decision: why no accelerator (none here) and why a single process
    assert "no cluster manager found (TF_CONFIG, Slurm, Kubernetes): a single process" in topology["reasons"]
    assert topology["accelerator"] != "CPU" or "no GPU: using the CPU" in topology["reasons"], topology
    assert {s["name"] for s in report["strategies"]} >= {"auto", "mirrored", "multi_worker", "tpu"}
    assert {(p["name"], p["strategy"]) for p in report["presets"]} >= {("laptop", "mirrored"), ("tpu", "tpu")}  # shipped
    assert any(d["type"] == "CPU" for d in report["devices"])


def test_info_table_under_tf_config():
    tf_config = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                            "task": {"type": "worker", "index": 1}})
    out = _info(env={"TF_CONFIG": tf_config}).stdout
    assert "auto picks: multi_worker" in out and "TF_CONFIG: worker 1 of 2" in out


def test_info_with_malformed_tf_config_is_a_clear_error():
    result = run_one(["-m", "tfscale", "info"], env={"TF_CONFIG": "{oops"}, timeout=120, check=False)
    assert result.returncode == 2
    assert "tfscale info: TF_CONFIG is not valid JSON" in result.stdout
    assert "Traceback" not in result.stdout


def _user_run(argv: list[str]) -> str:
    """`python argv` in the tests' environment less the quiet settings a user would not have set; its output."""
    env = {k: v for k, v in procs.base_env().items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFSCALE_VERBOSE")}
    done = subprocess.run([sys.executable, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:]
    return done.stdout


TF_LOG_LINE = re.compile(r"^[IWEF]\d{4} [\d:. ]+\d+ \w+\.cc:\d+\] ")  # TensorFlow's own (absl) log lines


def test_verbose_flag_shows_tensorflows_own_lines_here_and_in_launched_workers():
    """`tfscale -v` (README: "shows them again"): TensorFlow's start-up lines come back and nothing of tfscale's
    own output goes; under `tfscale -v launch` the workers are told to show everything too."""
    quiet, verbose = (_user_run(["-m", "tfscale", *flags, "info"]).splitlines() for flags in ([], ["-v"]))
    print(f"tfscale info: {len(quiet)} lines; tfscale -v info: {len(verbose)} lines")
    assert not [line for line in quiet if TF_LOG_LINE.match(line)], quiet
    assert [line for line in verbose if TF_LOG_LINE.match(line)], verbose
    shown = iter(verbose)
    assert all(line in shown for line in quiet), (quiet, verbose)  # in order: -v only adds lines
    child = "import os; print('worker env', os.environ.get('TFSCALE_VERBOSE'), os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    for flags, seen in (([], "worker env None 2"), (["-v"], "worker env 1 None")):
        out = _user_run(["-m", "tfscale", *flags, "launch", "-n", "1", "--", sys.executable, "-c", child])
        assert seen in out, out
