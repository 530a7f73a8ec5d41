"""`tfscale data convert|inspect|serve`: sharded TFRecords + index, dataset stats, tf.data service servers."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

from tfscale.cli.table import render


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="convert to sharded TFRecords, inspect data, serve tf.data service")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    c = sub.add_parser("convert", help="CSV file or image folder -> sharded TFRecords + index (resumable)")
    c.add_argument("src", help="a CSV file, or a folder with one subfolder of images per class")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--shards", type=int, required=True, help="number of shards (>= number of reading workers)")
    c.add_argument("--key", default=None, help="CSV column with unique values to look records up by")
    c.add_argument("--label", default=None, help="CSV column holding the class label")
    c.add_argument("--on-error", choices=("raise", "skip"), default="raise", help="stop at or skip bad records")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=run_convert)
    i = sub.add_parser("inspect", help="counts, class balance, bytes and a throughput probe")
    i.add_argument("path", help="a converted folder, an image folder or a CSV file")
    i.add_argument("--step-time", type=float, default=None, help="seconds per training step to compare with")
    i.add_argument("--batch-size", type=int, default=32, help="examples per step")
    i.add_argument("--probe-batches", type=int, default=20, help="batches to read for the probe (0: none)")
    i.add_argument("--image-size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=run_inspect)
    s = sub.add_parser("serve", help="run a tf.data service dispatcher or worker until stopped")
    role = s.add_mutually_exclusive_group(required=True)
    role.add_argument("--dispatcher", action="store_true", help="run the dispatcher")
    role.add_argument("--worker", action="store_true", help="run a worker")
    s.add_argument("--port", type=int, default=0, help="port to listen on (0: any free port)")
    s.add_argument("--dispatcher-address", default=None, help="HOST:PORT of the dispatcher (for --worker)")
    s.add_argument("--worker-address", default=None, help="HOST:PORT the worker tells the dispatcher")
    s.add_argument("--work-dir", default=None, help="dispatcher journal folder (fault-tolerant mode)")
    s.set_defaults(func=run_serve)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most 5 times a second."""

    def __init__(self, label: str):
        self.label, self.last = label, 0.0

    def __call__(self, records: int, share: float) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and share < 1.0:
            return
        self.last = now
        filled = int(30 * min(1.0, share))
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {share:6.1%} {records} records")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def run_convert(args) -> int:
    from tfscale.data.convert import convert

    bar = None if args.quiet else ProgressBar("converting")
    try:
        summary = convert(args.src, args.out, args.shards, key=args.key, label=args.label, on_error=args.on_error,
                          progress=bar)
    finally:
        if bar:
            bar.close()
    print(f"{summary['records']} records in {args.shards} shards at {summary['out']} "
          f"({summary['shards_written']} written, {summary['shards_kept']} already there, "
          f"{summary['skipped']} bad records skipped)")
    return 0


def run_inspect(args) -> int:
    from tfscale.data.inspect import inspect

    report = inspect(args.path, step_time=args.step_time, batch_size=args.batch_size,
                     probe_batches=args.probe_batches, image_size=tuple(args.image_size))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = [(k, v) for k, v in report.items() if k not in ("classes", "records_per_shard")]
    print(render(["", "value"], rows))
    if report.get("classes"):
        total = sum(report["classes"].values())
        print()
        print(render(["class", "records", "share"],
                     [(k, v, f"{v / total:.1%}") for k, v in report["classes"].items()]))
    return 0


def run_serve(args) -> int:
    from tfscale.data import service

    if args.dispatcher:
        server = service.start_dispatcher(args.port, work_dir=args.work_dir)
        print(f"dispatcher ready at {server.target}", flush=True)
    else:
        if not args.dispatcher_address:
            from tfscale.errors import ConfigError

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
