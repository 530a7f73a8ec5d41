"""`tfscale data convert|inspect|serve`: sharded TFRecords + index, dataset stats, tf.data service servers."""

from __future__ import annotations

import json
import signal
import threading

from tfscale import quiet
from tfscale.errors import ConfigError
from tfscale.table import render
from tfscale.vocabulary import ON_ERROR


def add_parser(subparsers) -> None:
    from tfscale.cli import command

    p = command(subparsers, "data", help="convert to sharded TFRecords, inspect data, serve tf.data service",
                description="Prepare training input: convert a CSV file or an image folder into shuffled, sharded "
                            "TFRecords with an index (the fastest way in), inspect a data set's counts, classes, "
                            "bytes and read speed, or run the servers of a tf.data service.",
                examples=["tfscale data convert photos/ --out data/photos --shards 8",
                          "tfscale data inspect data/photos",
                          "tfscale data serve --dispatcher --port 5050"])
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    c = command(sub, "convert", help="CSV file or image folder -> sharded TFRecords + index (resumable)",
                description="Write a CSV file or an image folder (one subfolder per class) as TFRecord shards in a "
                            "seeded shuffled order, with dataset.json and a manifest of the source. An interrupted "
                            "run resumes where it stopped; a changed source or changed options is refused unless "
                            "--overwrite. --store raw keeps uint8 pixels at --image-size, the fastest to read.",
                examples=["tfscale data convert photos/ --out data/photos --shards 8",
                          "tfscale data convert photos/ --out data/photos96 --shards 8 --store raw --image-size 96 96",
                          "tfscale data convert table.csv --out data/table --shards 4 --label target --key id"])
    c.add_argument("src", help="a CSV file, or a folder with one subfolder of images per class")
    c.add_argument("--out", required=True, metavar="DIR", help="output folder")
    c.add_argument("--shards", type=int, required=True, metavar="N",
                   help="number of shards (>= number of reading workers)")
    c.add_argument("--key", default=None, metavar="COLUMN", help="CSV column with unique values to look records up by")
    c.add_argument("--label", default=None, metavar="COLUMN", help="CSV column holding the class label")
    c.add_argument("--on-error", choices=ON_ERROR, default="raise", help="stop at or skip bad records")
    c.add_argument("--store", choices=("encoded", "raw"), default="encoded",
                   help="images: the file bytes (encoded), or uint8 pixels at --image-size (raw: fastest to read, "
                        "larger)")
    c.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="the size training reads (needed by --store raw)")
    c.add_argument("--channels", type=int, choices=(1, 3, 4), default=3, help="channels (for --store raw)")
    c.add_argument("--no-shuffle", action="store_true",
                   help="keep the source order inside each shard (default: a seeded order, stratified by label)")
    c.add_argument("--seed", type=int, default=0, help="the shuffle's seed")
    c.add_argument("--overwrite", action="store_true",
                   help="rebuild shards made from another source or with other options (default: refuse)")
    c.add_argument("--quiet", action="store_true", help="no progress bar (there is none outside a terminal)")
    c.set_defaults(func=run_convert)
    i = command(sub, "inspect", help="counts, class balance, bytes and a throughput probe",
                description="Show a data set's record count, classes and their shares, bytes, and how many batches "
                            "per second tfscale reads from it. For a converted folder it also checks that the counts "
                            "in dataset.json match the shards, and exits 1 when they do not.",
                examples=["tfscale data inspect data/photos",
                          "tfscale data inspect photos/ --image-size 96 96 --step-time 0.05 --json"])
    i.add_argument("path", help="a converted folder, an image folder or a CSV file")
    i.add_argument("--step-time", type=float, default=None, metavar="SECONDS",
                   help="seconds per training step to compare the read speed with")
    i.add_argument("--batch-size", type=int, default=32, metavar="N", help="examples per step")
    i.add_argument("--probe-batches", type=int, default=20, metavar="N",
                   help="batches to read for the probe (0: none)")
    i.add_argument("--image-size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"),
                   help="the size images are decoded to for the probe")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=run_inspect)
    s = command(sub, "serve", help="run a tf.data service dispatcher or worker until stopped",
                description="Run one server of a tf.data service until SIGTERM or Ctrl-C: the dispatcher, or a "
                            "worker that registers with it. Pipelines reach it with .service('grpc://HOST:PORT').",
                examples=["tfscale data serve --dispatcher --port 5050 --work-dir /shared/journal",
                          "tfscale data serve --worker --dispatcher-address 10.0.0.5:5050"])
    role = s.add_mutually_exclusive_group(required=True)
    role.add_argument("--dispatcher", action="store_true", help="run the dispatcher")
    role.add_argument("--worker", action="store_true", help="run a worker")
    s.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    s.add_argument("--dispatcher-address", default=None, metavar="HOST:PORT",
                   help="the dispatcher (needed by --worker)")
    s.add_argument("--worker-address", default=None, metavar="HOST:PORT",
                   help="the address the worker tells the dispatcher (default: its own)")
    s.add_argument("--work-dir", default=None, metavar="DIR",
                   help="dispatcher journal folder (fault-tolerant mode; default: none)")
    s.set_defaults(func=run_serve)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


class _Progress:
    """convert's progress(records, share) callback drawn as a tfscale progress bar (per mille of the input)."""

    def __init__(self, enabled: bool):
        self.bar, self.done = quiet.progress(1000, enabled=enabled, desc="converting", unit="‰"), 0

    def __call__(self, records: int, share: float) -> None:
        now = min(1000, int(share * 1000))
        if now > self.done:
            self.bar.update(now - self.done)
            self.done = now
        self.bar.set_description_str(f"converting ({records} records)", refresh=False)

    def close(self) -> None:
        self.bar.close()


def run_convert(args) -> int:
    from tfscale.data.convert import convert

    bar = _Progress(enabled=not args.quiet)
    try:
        summary = convert(args.src, args.out, args.shards, key=args.key, label=args.label, on_error=args.on_error,
                          progress=bar, shuffle=not args.no_shuffle, seed=args.seed, store=args.store,
                          image_size=args.image_size, channels=args.channels, overwrite=args.overwrite)
    finally:
        bar.close()
    print(f"{summary['records']} records in {args.shards} shards at {summary['out']} "
          f"({summary['shards_written']} written, {summary['shards_kept']} already there, "
          f"{summary['skipped']} bad records skipped)")
    ratio = summary["bytes"] / max(1, summary["source_bytes"])
    print(f"{_megabytes(summary['bytes'])} of shards for {_megabytes(summary['source_bytes'])} of source files "
          f"({ratio:.2f}x{', raw pixels' if summary.get('store') == 'raw' else ''})")
    return 0


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def run_inspect(args) -> int:
    from tfscale.data.inspect import inspect

    report = inspect(args.path, step_time=args.step_time, batch_size=args.batch_size,
                     probe_batches=args.probe_batches, image_size=tuple(args.image_size))
    if args.json:
        print(json.dumps(report, indent=2))
        return 1 if report.get("counts_match") is False else 0
    rows = [(k, v) for k, v in report.items() if k not in ("classes", "records_per_shard", "problems")]
    print(render(["", "value"], rows))
    for problem in report.get("problems") or ():
        print(f"counts differ: {problem}")
    if report.get("classes"):
        total = sum(report["classes"].values())
        print()
        print(render(["class", "records", "share"],
                     [(k, v, f"{v / total:.1%}") for k, v in report["classes"].items()]))
    return 1 if report.get("counts_match") is False else 0


def run_serve(args) -> int:
    from tfscale.data import service

    if args.dispatcher:
        server = service.start_dispatcher(args.port, work_dir=args.work_dir)
        print(f"dispatcher ready at {server.target}", flush=True)
    else:
        if not args.dispatcher_address:
            raise ConfigError("--worker needs --dispatcher-address", where="tfscale data serve",
                              fix="give the HOST:PORT printed by `tfscale data serve --dispatcher`")
        server = service.start_worker(args.dispatcher_address, args.port, worker_address=args.worker_address)
        print(f"worker ready for {args.dispatcher_address}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait()
    server.stop()
    return 0
