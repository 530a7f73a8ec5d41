"""Keeps the tests honest: breaks one feature at a time in a scratch copy and checks that its tests fail.

    python scripts/break_check.py                 # every breakage (slow: minutes each; not part of CI)
    python scripts/break_check.py --only resume-skip jpeg-bomb
    python scripts/break_check.py --list

Each `Breakage` names a file, an exact piece of its text (found exactly once) and what replaces it: the
smallest patch that removes the feature. For each one, the tracked and untracked-but-not-ignored files of
this checkout are copied to a scratch folder, the patch is applied there, and only the tests named are run
(`pytest -x`, with the scratch checkout first on PYTHONPATH, so the tests and their worker processes import
the broken tfscale). A breakage is *caught* when those tests fail. A table goes to stderr, JSON to stdout;
the exit code is 1 when any breakage was not caught (or its patch no longer applies).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Breakage:
    name: str
    what: str            # the feature removed, in words
    path: str            # the file patched, relative to the repository
    old: str             # exact text, found once
    new: str             # what replaces it
    tests: tuple[str, ...]  # pytest arguments selecting the tests that must fail


BREAKAGES = [
    Breakage("resume-skip", "tfscale.fit resumes at the exact next batch (skips the batches already trained)",
             "tfscale/train/fit.py",
             "    if cfg.steps_per_epoch is not None or cfg.gradient_accumulation_steps != 1:\n        return None",
             "    if True:\n        return None",
             ("tests/test_checkpoints.py", "-k", "preemption_signal or skips_exactly")),
    Breakage("commit-not-last", "a checkpoint becomes visible only once complete (manifest written last)",
             "tfscale/scale/checkpoint_store.py",
             "            os.replace(local_weights, self.store.join(name))  # written in the folder: renamed, not copied",
             "            self.store.write_bytes(self.store.join(info.name + MANIFEST), json.dumps(info.to_json())"
             ".encode())\n            import shutil\n            shutil.copyfile(local_weights, self.store.join(name))",
             ("tests/test_checkpoints_store.py", "-k", "sigkill and local")),
    Breakage("hash-unchecked", "a checkpoint whose file does not match its manifest's hash is skipped",
             "tfscale/scale/checkpoint_store.py",
             "        if size != expected.get(\"bytes\") or digest != expected.get(\"sha256\"):\n"
             "            raise CorruptCheckpoint(f\"{self.store.join(name)} has",
             "        if False:\n            raise CorruptCheckpoint(f\"{self.store.join(name)} has",
             ("tests/test_checkpoints.py", "-k", "corrupted")),
    Breakage("preemption-ignored", "a preemption signal saves at the end of the step and stops",
             "tfscale/scale/checkpoint.py",
             "        preempt = self.flag is not None and self.flag.received is not None\n",
             "        preempt = False\n",
             ("tests/test_checkpoints.py", "-k", "preemption_signal")),
    Breakage("every-n-steps", "checkpoint_every_steps saves every N steps",
             "tfscale/scale/checkpoint.py",
             "        if self.every_steps is not None and self._global_step % self.every_steps == 0:",
             "        if False:",
             ("tests/test_checkpoints.py", "-k", "every_n_steps")),
    Breakage("unknown-scheme-accepted", "an unknown URL scheme is refused before training",
             "tfscale/scale/checkpoint_store.py",
             "        self.store = Store(url, storage_options=storage_options)",
             "        self.store = Store(str(url).replace('ftp://', '/tmp/ftp-'), storage_options=storage_options)",
             ("tests/test_checkpoints_store.py", "-k", "bad_checkpoint_urls")),
    Breakage("jpeg-bomb", "a JPEG whose header claims too many pixels is refused before decoding",
             "tfscale/data/images/codecs.py",
             "    return tf.logical_and(pixels <= MAX_PIXELS, jpeg_pixels(contents) <= MAX_PIXELS)",
             "    return pixels <= MAX_PIXELS",
             ("tests/test_data_bombs.py",)),
    Breakage("bomb-stand-in", "no stand-in image of a bomb's claimed size is allocated",
             "tfscale/data/images/codecs.py",
             " or too_large(data):  # a bomb: no stand-in of its size",
             ":",
             ("tests/test_data_bombs.py", "-k", "png_alone")),
    Breakage("one-process-strategy", "a one-process strategy under a multi-worker launch is refused",
             "tfscale/strategy/engine.py",
             "    if spec.one_process and topology.num_workers > 1:",
             "    if False:",
             ("tests/test_strategy.py", "-k", "one_process")),
    Breakage("no-join-timeout", "a worker whose peer never joins ends at the join timeout, naming it",
             "tfscale/strategy/multi_worker.py",
             "    if topology.num_workers < 2:\n        yield\n        return\n    peers =",
             "    if True:\n        yield\n        return\n    peers =",
             ("tests/test_strategy.py", "-k", "join_timeout")),
    Breakage("overrides-ignored", "`--set key=value` overrides change the run",
             "tfscale/config/loading.py",
             "        node[keys[-1]] = value\n    return result",
             "        pass\n    return result",
             ("tests/test_train_cli.py", "-k", "overrides")),
    Breakage("records-dealt-one-by-one", "shards are dealt to workers whole (FILES plan)",
             "tfscale/data/sharding/plans.py",
             "    if counts is not None and len(units) >= workers:",
             "    if False:",
             ("tests/test_data_shards.py", "-k", "whole")),
    Breakage("service-no-op", "`.service()` runs the pipeline on the tf.data service workers",
             "tfscale/data/pipeline.py",
             "        return self._with(service_options=service.check_options(address, processing_mode, job_name))",
             "        service.check_options(address, processing_mode, job_name)\n        return self",
             ("tests/test_data_service.py",)),
    Breakage("bmp-dropped", "BMP files are images (signature check)",
             "tfscale/data/images/codecs.py",
             '    row(b"BM")\n',
             "",
             ("tests/test_data_transforms.py", "-k", "decodes_resizes_normalizes or bmp")),
    Breakage("worker-slice-ignored", "each worker takes its own slice of every global batch",
             "tfscale/data/sharding/plans.py",
             "        start = input_context.input_pipeline_id * per_worker",
             "        start = 0",
             ("tests/test_launch_function.py", "-k", "keras_fit")),
    Breakage("slurm-reserved-ports-ignored", "a Slurm step uses the ports Slurm reserved for it",
             "tfscale/cluster/detection/slurm.py",
             "            reserved = reserved_ports(environ)",
             "            reserved = None",
             ("tests/test_slurm_ports.py", "-k", "reserved_ports_are_used")),
    Breakage("elastic-membership", "survivors of a lost host agree on the hosts that remain",
             "tfscale/cluster/launch/rendezvous.py",
             "    kept = [h for h in hosts if h in answered]\n",
             "    kept = list(hosts)\n",
             ("tests/test_cluster_elastic.py", "-k", "membership")),
    Breakage("local-launch-silent", "a local launch names the ports it opens to the network",
             "tfscale/cluster/launch/privatenet.py",
             "    log.warning(",
             "    log.debug(",
             ("tests/test_launch_exposure.py", "-k", "warn")),
]


def scratch_copy(dest: str) -> None:
    """The checkout's tracked and untracked-not-ignored files (as they are now) under `dest`."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = os.path.join(REPO, rel)
        if not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))


def run(breakage: Breakage, timeout: float) -> dict:
    scratch = tempfile.mkdtemp(prefix=f"tfscale-break-{breakage.name}-")
    try:
        scratch_copy(scratch)
        path = os.path.join(scratch, breakage.path)
        with open(path) as f:
            text = f.read()
        if text.count(breakage.old) != 1:
            return {"name": breakage.name, "result": "patch does not apply",
                    "detail": f"{breakage.path}: the text is found {text.count(breakage.old)} times"}
        with open(path, "w") as f:
            f.write(text.replace(breakage.old, breakage.new))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (scratch, os.environ.get("PYTHONPATH")) if p),
               "PYTHONDONTWRITEBYTECODE": "1"}
        where = subprocess.run([sys.executable, "-c", "import tfscale; print(tfscale.__file__)"], cwd=scratch, env=env,
                               capture_output=True, text=True).stdout.strip()
        if not where.startswith(scratch):  # the broken copy must be the one the tests import
            return {"name": breakage.name, "result": "not isolated", "detail": f"tfscale imported from {where}"}
        started = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                   *breakage.tests], cwd=scratch, env=env, capture_output=True, text=True,
                                  timeout=timeout)
            code, tail = done.returncode, (done.stdout + done.stderr).strip().splitlines()[-1:]
        except subprocess.TimeoutExpired:
            code, tail = -1, [f"timed out after {timeout:g} s"]
        caught = code not in (0, 5)  # 5: no test ran, which proves nothing
        return {"name": breakage.name, "result": "caught" if caught else "NOT CAUGHT" if code == 0 else "no test ran",
                "tests": " ".join(breakage.tests), "seconds": round(time.monotonic() - started, 1),
                "detail": tail[0] if tail else ""}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="the breakages to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the breakages and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per breakage's tests")
    args = parser.parse_args(argv)
    chosen = [b for b in BREAKAGES if not args.only or b.name in args.only]
    if args.list:
        for b in chosen:
            print(f"{b.name:28} {b.what}  [{b.path}; {' '.join(b.tests)}]")
        return 0
    results = []
    for breakage in chosen:
        result = run(breakage, args.timeout)
        results.append(result)
        print(f"{result['name']:28} {result['result']:20} {result.get('seconds', '')!s:>7}  {result.get('detail', '')}",
              file=sys.stderr, flush=True)
    print(json.dumps({"breakages": results, "caught": sum(r["result"] == "caught" for r in results),
                      "total": len(results)}, indent=1))
    return 0 if all(r["result"] == "caught" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
