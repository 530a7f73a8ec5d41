"""Promises of README.md and docs/DESIGN.md without a home elsewhere: the benchmarks print JSON with named figures.

The other promises of TEST-AUDIT.md section 3 are tested where their feature is: test_launch.py (exit code 75,
SIGINT, SIGCONT after a forwarded SIGTERM), test_cluster_hosts.py (what answers at --timeout), test_jax_engine.py
(a keras-hub LayoutMap, axis_names, a SavedModel from JAX), test_engine_seam.py (the warning for a variable left
whole) and test_strategy.py (bytes_per_pack, parameter_server training).

Of the benchmarks, only bench_images and bench_images_skip run here, with their smallest settings: bench_launch,
bench_jax, bench_cluster and bench_quantize took 50-120 s each at theirs on 2 cores, and bench_shard_training writes
70,000 PNG files.
"""

import json
import sys

import pytest

import procs

pytestmark = pytest.mark.slow


def test_bench_images_prints_json_with_its_named_figures(tmp_path):
    out = procs.run_one([str(procs.REPO / "benchmarks" / "bench_images.py"), "--images", "32", "--repeats", "1",
                         "--skip-fit", "--size", "32", "--batch", "16", "--cache", str(tmp_path)],
                        timeout=300).stdout
    report = json.loads(out[out.index("{\n"):])
    assert report["benchmark"] == "images" and report["size"] == [32, 32]
    arms = {"pil_loop", "pool2", "tfdata_plain", "tfscale", "tfscale_skip", "tfscale_shards", "tfscale_shards_encoded"}
    for kind in ("png", "jpeg"):
        figures = report[kind]
        assert figures["images"] == 32, figures
        assert set(figures["images_per_second"]) == arms and all(v > 0 for v in figures["images_per_second"].values())
        for ratio in ("tfscale_vs_tfdata_plain", "tfscale_shards_vs_tfscale", "tfscale_skip_vs_raise",
                      "tfscale_vs_pil_loop", "tfscale_vs_pool2"):
            assert figures[ratio] > 0, (kind, ratio, figures[ratio])
        assert figures["convert_raw"]["shard_bytes"] > 0 and figures["convert_encoded"]["shard_bytes"] > 0
    print(f"bench_images (32 images, 1 round): tfscale/tf.data {report['png']['tfscale_vs_tfdata_plain']} (png)",
          file=sys.stderr)


def test_bench_images_skip_reads_every_image_in_both_modes_and_reports_the_ratio():
    """DESIGN's figure for skip mode without a fixed size comes from this script: both arms read every image of
    the set (the script fails otherwise) and nothing is skipped on clean data."""
    out = procs.run_one([str(procs.REPO / "benchmarks" / "bench_images_skip.py"), "--quick", "--sets", "mixed"],
                        timeout=300).stdout
    report = json.loads(out[out.index("{\n"):])
    figures = report["sets"]["mixed"]
    assert report["benchmark"] == "images_skip" and figures["images"] == 24, figures
    assert figures["skipped"] == {"skip": {}, "raise": {}}, figures
    assert figures["skip_over_raise_cpu"] > 0 and all(v > 0 for v in figures["cpu_us_per_image"].values())
