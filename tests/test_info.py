"""`tfscale info`: versions, devices, cluster, auto's choice and the registry; errors without tracebacks."""

import json

from procs import run_one


def _info(*args, env=None):
    return run_one(["-m", "tfscale", "info", *args], env=env, timeout=120)


def test_info_json_reports_choice_and_reasons():
    out = _info("--json", "--replicas", "2").stdout
    report = json.loads(out[out.index("{\n"):])
    assert report["versions"]["tensorflow"].startswith("2.")
    assert report["versions"]["keras"].startswith("3.")
    assert report["auto"]["strategy"] == "mirrored"
    assert report["topology"]["manager"] == "none" and report["topology"]["reasons"]
    assert {s["name"] for s in report["strategies"]} >= {"auto", "mirrored", "multi_worker", "tpu"}
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
