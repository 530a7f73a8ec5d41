"""Layouts of model_parallel on real models: layout="auto" against keras-hub's hand-written maps and replication.

keras-hub backbones in tiny configurations (random initialization, nothing downloaded), each as a task model
trained on random tokens, on 2 and 4 simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count):

  models with a hand-written map (`Backbone.get_layout_map`): gemma, llama, qwen, qwen_moe
  models without one: gpt2, bert (a text classifier)
  arms: auto      Scale("model_parallel", mesh=(1, D), layout="auto")
        hand      Scale("model_parallel", layout=<the backbone's get_layout_map on a (1, D) mesh>)
        replicated  Scale("data_parallel") over the D devices (every variable whole on every device)

Per model and mesh it reports:
- step seconds: `train_on_batch` of one global batch, the arms alternating within one process, order reversed
  every other round, median of --rounds rounds of --steps steps each (after 2 steps that compile); the ratio
  auto/hand is the median of the per-round ratios;
- bytes per device of the parameters and of the optimizer state (Adam), read from the arrays' shards;
- the collectives of one training step in the compiled program: each arm compiles once more in a process of
  its own that dumps XLA's optimized HLO (--xla_dump_to), and the train step's module is read for
  all-reduce, all-gather, reduce-scatter, all-to-all and collective-permute (count, and bytes of their
  results). These are machine-independent: they measure communication where timing on 2 CPU cores cannot;
- whether auto's compiled train step is the hand-written map's, instruction for instruction and in the same
  order (`auto_program_is_hand`: the optimized HLO less its metadata, compared by digest). Where it is, the two
  arms run the same program, and auto/hand's step ratio is noise: `auto_over_hand_step_rounds` gives each round's
  ratio (a spread around 1.0 that the median's distance from 1.0 does not leave).

Every process compiles with the XLA:CPU scheduler tfscale picks for the host devices it makes
(`--xla_cpu_enable_concurrency_optimized_scheduler=false`, tfscale.compat.jax 3.). The hand arm lists the devices
for its map's mesh before its Scale exists, after which tfscale cannot set it any more: in a process of its own,
its program had the same instructions as auto's in another order, while in the timing process (auto's Scale
first) both ran with tfscale's scheduler.

    python benchmarks/bench_layouts.py [--devices 2,4] [--models gemma,llama,...] [--rounds 9] [--steps 3] [--quick]

Prints one JSON object to stdout (a line per model and mesh to stderr as it goes). Not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from tfscale.compat.jax import CPU_SCHEDULER_FLAG

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ, BATCH = 32, 8
CONFIGS = {  # tiny: 2 layers, hidden 128-256; head counts that divide over 4 devices
    "gemma": ("GemmaBackbone", "GemmaCausalLM", dict(vocabulary_size=1024, num_layers=2, num_query_heads=4,
                                                     num_key_value_heads=4, hidden_dim=256, intermediate_dim=2048,
                                                     head_dim=64)),
    "llama": ("LlamaBackbone", "LlamaCausalLM", dict(vocabulary_size=1024, num_layers=2, num_query_heads=4,
                                                     num_key_value_heads=4, hidden_dim=256, intermediate_dim=1024)),
    "qwen": ("QwenBackbone", "QwenCausalLM", dict(vocabulary_size=1024, num_layers=2, num_query_heads=4,
                                                  num_key_value_heads=4, hidden_dim=256, intermediate_dim=1024)),
    "qwen_moe": ("QwenMoeBackbone", "QwenMoeCausalLM", dict(
        vocabulary_size=1024, num_layers=2, num_query_heads=4, num_key_value_heads=4, hidden_dim=256,
        intermediate_dim=1024, moe_intermediate_dim=256, shared_expert_intermediate_dim=512, num_experts=4,
        top_k=2)),
    "gpt2": ("GPT2Backbone", "GPT2CausalLM", dict(vocabulary_size=1024, num_layers=2, num_heads=4, hidden_dim=256,
                                                  intermediate_dim=1024, max_sequence_length=SEQ)),
    "bert": ("BertBackbone", "BertTextClassifier", dict(vocabulary_size=1024, num_layers=2, num_heads=4,
                                                        hidden_dim=256, intermediate_dim=1024,
                                                        max_sequence_length=SEQ)),
}
ARMS = ("auto", "hand", "replicated")
HAND_WRITTEN = ("gemma", "llama", "qwen", "qwen_moe")  # keras-hub 0.32 ships get_layout_map for these


def arms_of(name: str) -> tuple[str, ...]:
    return ARMS if name in HAND_WRITTEN else ("auto", "replicated")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_BYTES = {"f32": 4, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "pred": 1, "s8": 1,
          "u8": 1, "s16": 2, "u16": 2}


# ---------------------------------------------------------------------- in the child processes (KERAS_BACKEND=jax)

def task_model(name: str, config: dict | None = None, **task_options):
    """The task model of `name` (not compiled), its backbone built from `config` (default: CONFIGS[name]) in the
    current scope; `task_options` go to the task (e.g. BERT's classifier `dropout`). Also what
    tests/workers/hub_models.py builds, with smaller configurations."""
    import keras_hub

    backbone_cls, task_cls, default = CONFIGS[name]
    backbone = getattr(keras_hub.models, backbone_cls)(**(default if config is None else config))
    if task_cls == "BertTextClassifier":
        return keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None,
                                                     **task_options)
    return getattr(keras_hub.models, task_cls)(backbone=backbone, preprocessor=None, **task_options)


def batch_of(name: str, config: dict | None = None, batch: int = BATCH, sequence: int = SEQ, seed: int = 0):
    """(inputs, targets) of one batch of random tokens for `name`'s task model: next-token targets for a causal
    language model, a label of 2 classes for BERT's classifier."""
    import numpy as np

    config = CONFIGS[name][2] if config is None else config
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config["vocabulary_size"], (batch, sequence + 1)).astype("int32")
    x = {"token_ids": tokens[:, :sequence], "padding_mask": np.ones((batch, sequence), "int32")}
    if CONFIGS[name][1] == "BertTextClassifier":
        x["segment_ids"] = np.zeros((batch, sequence), "int32")
        return x, rng.integers(0, 2, (batch,)).astype("int32")
    return x, tokens[:, 1:]


def build(name: str, arm: str, devices: int):
    """(scale, task model compiled with Adam, inputs, targets) of one arm."""
    import keras
    import keras_hub

    import tfscale as ts

    if arm == "replicated":
        scale = ts.Scale("data_parallel")
    elif arm == "auto":
        scale = ts.Scale("model_parallel", mesh=(1, devices), layout="auto")
    else:
        mesh = keras.distribution.DeviceMesh((1, devices), ("data", "model"), keras.distribution.list_devices())
        scale = ts.Scale("model_parallel", layout=getattr(keras_hub.models, CONFIGS[name][0]).get_layout_map(
            mesh, model_parallel_dim_name="model", data_parallel_dim_name="data"))
    keras.utils.set_random_seed(0)
    with scale.scope():
        model = task_model(name)
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = batch_of(name)
    return scale, model, x, y


def _bytes_per_device(variables) -> int:
    per: dict[str, int] = {}
    for v in variables:
        for shard in getattr(v.value, "addressable_shards", None) or ():
            per[str(shard.device)] = per.get(str(shard.device), 0) + int(shard.data.nbytes)
    return max(per.values(), default=0)


def child_compile(name: str, arm: str, devices: int) -> None:
    """Builds one arm, trains 2 steps (XLA dumps the compiled programs), prints its bytes per device."""
    import keras

    scale, model, x, y = build(name, arm, devices)
    keras.distribution.set_distribution(scale.engine.keras_distribution)
    for _ in range(2):
        model.train_on_batch(x, y)
    print("RESULT " + json.dumps({"parameters": _bytes_per_device(model.weights),
                                  "optimizer": _bytes_per_device(model.optimizer.variables),
                                  "parameters_whole": int(sum(v.value.nbytes for v in model.weights))}), flush=True)
    keras.distribution.set_distribution(None)


def child_time(name: str, devices: int, rounds: int, steps: int) -> None:
    """Every arm in this one process, alternating: seconds per step of each round."""
    import keras

    built, arms = {}, arms_of(name)
    for arm in arms:
        scale, model, x, y = build(name, arm, devices)
        keras.distribution.set_distribution(scale.engine.keras_distribution)
        for _ in range(2):
            model.train_on_batch(x, y)
        built[arm] = (scale, model, x, y)
    times = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            scale, model, x, y = built[arm]
            keras.distribution.set_distribution(scale.engine.keras_distribution)
            start = time.perf_counter()
            for _ in range(steps):
                loss = model.train_on_batch(x, y)
            float(loss[0] if isinstance(loss, (list, tuple)) else loss)  # the steps are done
            times[arm].append((time.perf_counter() - start) / steps)
    print("RESULT " + json.dumps(times), flush=True)


# ---------------------------------------------------------------------- in the parent

def _run(args: list[str], devices: int, extra_flags: str = "", timeout: float = 900) -> dict:
    flags = f"--xla_force_host_platform_device_count={devices} {CPU_SCHEDULER_FLAG}=false {extra_flags}"
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3", XLA_FLAGS=flags.strip(),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, os.path.abspath(__file__), *args], env=env, capture_output=True, text=True,
                         timeout=timeout)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if run.returncode != 0 or line is None:
        raise RuntimeError(f"{' '.join(args)} failed (exit {run.returncode}): {run.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def _shape_bytes(text: str) -> int:
    """Bytes of an HLO result shape: 'f32[256,1024]{1,0}' or a tuple '(f32[2]{0}, bf16[4,4]{1,0})'."""
    total = 0
    for dtype, dims in re.findall(r"\b([a-z]+[0-9]*)\[([0-9,]*)\]", text):
        size = 1
        for d in filter(None, dims.split(",")):
            size *= int(d)
        total += size * _BYTES.get(dtype, 4)
    return total


_COLLECTIVE = re.compile(r"\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.+?)\s+(all-reduce|all-gather|reduce-scatter|"
                         r"all-to-all|collective-permute)(?:-start)?\(")


_METADATA = re.compile(r',\s*(?:metadata|frontend_attributes)=\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}')


def collectives(dump: str) -> tuple[dict, str]:
    """({kind: {"count", "bytes"}}, digest of the program) of the train step's optimized module in an XLA dump
    folder (the module with the most collectives among those named for a train step, else among all)."""
    best: dict = {}
    digest = ""
    files = glob.glob(os.path.join(dump, "*after_optimizations.txt"))
    steps = sorted(f for f in files if "train" in os.path.basename(f)) or sorted(files)
    for path in steps:
        found = {kind: {"count": 0, "bytes": 0} for kind in COLLECTIVES}
        with open(path) as f:
            text = f.read()
        for line in text.splitlines():
            m = _COLLECTIVE.match(line)
            if m:
                found[m.group(2)]["count"] += 1
                found[m.group(2)]["bytes"] += _shape_bytes(m.group(1))
        if not best or sum(v["count"] for v in found.values()) >= sum(v["count"] for v in best.values()):
            best, digest = found, program_digest(text)
    return best, digest


def program_digest(text: str) -> str:
    """A digest of an optimized HLO module's program: its header and computations, less the tables of source
    files and stack frames between them and each instruction's metadata (which name the calling script)."""
    start = text.find("\n%")
    program = text[:text.find("\n")] + (text[start:] if start >= 0 else "")
    return hashlib.sha256(_METADATA.sub("", program).encode()).hexdigest()[:16]


def measure(name: str, devices: int, rounds: int, steps: int) -> dict:
    arms = {}
    for arm in arms_of(name):
        with tempfile.TemporaryDirectory(prefix="bench-layouts-") as dump:
            figures = _run(["--child-compile", name, arm, str(devices)], devices,
                           f"--xla_dump_to={dump} --xla_dump_hlo_as_text")
            figures["collectives"], figures["program"] = collectives(dump)
        arms[arm] = figures
    times = _run(["--child-time", name, str(devices), str(rounds), str(steps)], devices)
    for arm in arms:
        arms[arm]["step_seconds"] = {"median": round(statistics.median(times[arm]), 5),
                                     "all": [round(t, 5) for t in times[arm]]}
    auto, replicated = arms["auto"], arms["replicated"]
    coll_bytes = {arm: sum(c["bytes"] for c in figures["collectives"].values()) for arm, figures in arms.items()}
    result = {"arms": arms, "collective_bytes": coll_bytes,
              "auto_over_replicated_bytes_per_device": round(auto["parameters"] / replicated["parameters"], 3)}
    if "hand" in arms:
        hand = arms["hand"]
        ratios = [a / h for a, h in zip(times["auto"], times["hand"])]
        result.update({
            "auto_over_hand_step": round(statistics.median(ratios), 3),
            "auto_over_hand_step_rounds": [round(r, 3) for r in ratios],
            "auto_program_is_hand": auto["program"] == hand["program"],
            "auto_over_hand_bytes_per_device": round(auto["parameters"] / hand["parameters"], 3),
            "auto_collective_bytes_le_hand": coll_bytes["auto"] <= coll_bytes["hand"]})
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", default="2,4")
    parser.add_argument("--models", default=",".join(CONFIGS))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="gemma on 2 devices, 2 rounds of 1 step")
    parser.add_argument("--child-compile", nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-time", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_compile:
        return child_compile(args.child_compile[0], args.child_compile[1], int(args.child_compile[2]))
    if args.child_time:
        name, devices, rounds, steps = args.child_time
        return child_time(name, int(devices), int(rounds), int(steps))
    if args.quick:
        args.devices, args.models, args.rounds, args.steps = "2", "gemma", 2, 1
    elif args.rounds < 5:
        parser.error("--rounds must be at least 5 (a median of 5 or more)")
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in CONFIGS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}: choose from {', '.join(CONFIGS)}")
    started = time.time()
    report = {"benchmark": "layouts", "rounds": args.rounds, "steps_per_round": args.steps,
              "batch": BATCH, "sequence": SEQ, "cpus": os.cpu_count(), "results": {}}
    for name in models:
        for devices in (int(d) for d in args.devices.split(",")):
            key = f"{name}/{devices}"
            try:
                report["results"][key] = measure(name, devices, args.rounds, args.steps)
            except (RuntimeError, subprocess.TimeoutExpired) as e:  # a model that does not run here is reported
                report["results"][key] = {"error": str(e)[-1500:]}
            r = report["results"][key]
            print(f"{key}: " + (r["error"][-300:] if "error" in r else
                                f"auto/hand step {r.get('auto_over_hand_step')}, bytes/device auto/hand "
                                f"{r.get('auto_over_hand_bytes_per_device')}, auto/replicated "
                                f"{r['auto_over_replicated_bytes_per_device']}, collective bytes "
                                f"{r['collective_bytes']}"), file=sys.stderr, flush=True)
    report["seconds"] = round(time.time() - started)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
