"""`tfscale launch [-n N] [options] -- CMD...`: start N workers of any command with TF_CONFIG.

On this host (127.0.0.1), on named hosts (``--nnodes/--node-rank/--hosts``;
``--nnodes MIN:MAX``: an elastic launch that goes on with the hosts that remain
after losing some, `tfscale.cluster.launch.rendezvous`), or under ``srun``
(one worker per Slurm task, with the Slurm-derived TF_CONFIG, supervised
so that scancel ends it within seconds). ``--print-manifest`` writes a Kubernetes Job instead.
``--backend jax`` starts JAX workers: KERAS_BACKEND=jax and the variables
``keras.distribution.initialize`` reads instead of TF_CONFIG.
``--private-network`` runs a local launch's workers in a network namespace
with only loopback (`tfscale.cluster.launch.privatenet`); without it a local
launch warns once which ports are open to the network.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from tfscale.cli import command
from tfscale.vocabulary import BACKENDS


def add_parser(subparsers) -> None:
    p = command(subparsers, "launch", help="start N workers of a command, each with its own TF_CONFIG",
                description="Start N workers of CMD with TF_CONFIG, rank variables, split GPUs and threads; "
                            "stop them all when one fails.",
                examples=["tfscale launch -n 4 -- python train.py --epochs 3",
                          "tfscale launch -n 2 --backend jax -- python train.py   # JAX workers (keras.distribution)",
                          "tfscale launch -n 2 --private-network -- python train.py   # nothing beyond this machine "
                          "reaches them",
                          "srun tfscale launch -- python train.py",
                          "tfscale launch -n 2 --nnodes 2 --node-rank 0 --hosts node0:2222,node1:2222 -- python "
                          "train.py",
                          "tfscale launch --nnodes 2:3 --node-rank 0 --hosts n0:2222,n1:2222,n2:2222 "
                          "--max-restarts 3 \\",
                          "    -- python train.py   # elastic: goes on with >= 2 hosts when one is lost (on each host)",
                          "tfscale launch -n 4 --print-manifest --image my/image:1 -- python train.py | kubectl "
                          "apply -f -"])
    p.add_argument("-n", "--nproc", dest="workers", type=int, default=None, metavar="N",
                   help="workers on this host (default 1; under srun: one per Slurm task)")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="the Keras backend of the workers: tensorflow (TF_CONFIG) or jax (KERAS_DISTRIBUTION_*, "
                        "jax.distributed); default: KERAS_BACKEND, else tensorflow")
    p.add_argument("--replicas-per-worker", type=int, default=None, metavar="K",
                   help="replicas in each worker: K logical CPU devices, or K GPUs")
    p.add_argument("--log-dir", default=None, metavar="D", help="write worker-<rank>.log files in D instead of "
                                                                "prefixed output")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="stop everything after S seconds")
    p.add_argument("--collective-timeout", type=float, default=None, metavar="S",
                   help="a collective waiting S seconds on a dead peer fails (passed to the strategy)")
    p.add_argument("--join-timeout", type=float, default=None, metavar="S",
                   help="a worker that has not joined the cluster after S seconds is an error naming it "
                        "(default 900, as torchrun's rendezvous)")
    p.add_argument("--max-restarts", type=int, default=0, metavar="R",
                   help="restart the whole group up to R times after a failure")
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="intra-op threads per worker (default: this host's cores split among its workers)")
    p.add_argument("--no-bind-cores", dest="bind_cores", action="store_false",
                   help="do not bind each worker to its share of the cores (bound by default, except under Slurm)")
    p.add_argument("--private-network", action="store_true",
                   help="run the workers in a network namespace of their own with only loopback: no other machine "
                        "reaches their ports (TensorFlow's gRPC and JAX's coordinator listen on every interface, "
                        "without authentication), and they reach nothing beyond this machine either (no internet, "
                        "object store, data service); a launch on this machine only; needs root or user "
                        "namespaces, else an error (default: off, and the launch warns which ports are open)")
    hosts = p.add_argument_group("several hosts")
    hosts.add_argument("--nnodes", default=None, metavar="N|MIN:MAX",
                       help="hosts in the cluster; MIN:MAX (elastic, every host named in --hosts, MAX of them): "
                            "start with all; when a host is lost (its launcher gone or unreachable), the launchers "
                            "of the hosts that remain agree on them over each host's launcher port (its first worker "
                            "port - 1) and restart their workers as a smaller cluster (ranks renumbered; the "
                            "script resumes from its last checkpoint), while at least MIN remain, else they stop "
                            "with an error; needs --max-restarts (each new membership is a restart)")
    hosts.add_argument("--node-rank", type=int, default=None, help="this host's index in --hosts")
    hosts.add_argument("--hosts", default=None, metavar="H[:P],...", help="every host, with its first port")
    hosts.add_argument("--hosts-file", default=None, metavar="FILE", help="one host[:port] per line")
    p.add_argument("--dry-run", action="store_true", help="print each worker's TF_CONFIG and command; start nothing")
    k8s = p.add_argument_group("Kubernetes")
    k8s.add_argument("--print-manifest", action="store_true", help="print a Kubernetes Job + headless Service")
    k8s.add_argument("--job-name", default="tfscale", help="the Job's name (default tfscale)")
    k8s.add_argument("--image", default="IMAGE_WITH_TFSCALE", help="the container image (with tfscale installed)")
    k8s.add_argument("--port", type=int, default=None, help="the workers' gRPC port in the pods")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD...", help="the command every worker runs")
    p.set_defaults(func=run)


def _options(args):
    from tfscale.cluster.launch.plan import LaunchOptions, parse_nnodes

    min_nodes, nnodes = parse_nnodes(args.nnodes)
    return LaunchOptions(workers=args.workers, replicas_per_worker=args.replicas_per_worker, log_dir=args.log_dir,
                         timeout=args.timeout, collective_timeout=args.collective_timeout,
                         join_timeout=args.join_timeout,
                         max_restarts=args.max_restarts, nnodes=nnodes, min_nodes=min_nodes, node_rank=args.node_rank,
                         hosts=args.hosts, hosts_file=args.hosts_file, threads=args.threads,
                         bind_cores=args.bind_cores, backend=args.backend)


def run(args) -> int:
    from tfscale.cluster.launch import launcher
    from tfscale.cluster.launch.group import GroupInterrupted, GroupTimeout, WorkerFailure
    from tfscale.errors import ConfigError

    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    options = _options(args)
    if args.print_manifest:
        return _print_manifest(command, args, options)
    if args.dry_run:
        _print_plan(launcher.dry_run(command, options, private_network=args.private_network), command, options)
        return 0
    if not command:
        raise ConfigError("no command to launch", where="tfscale launch",
                          fix="put the command after `--`, e.g. tfscale launch -n 2 -- python train.py")
    code = 0
    try:
        # in a pod: exec'd, never returns
        launcher.run(command, options, may_exec=True, private_network=args.private_network)
    except (WorkerFailure, GroupTimeout, GroupInterrupted) as stopped:
        print(f"tfscale launch: {stopped}", file=sys.stderr)
        code = stopped.exit_code
    _exit_now(code)


def _exit_now(code: int) -> None:
    """Exits without TensorFlow's teardown (seconds on a busy machine): the workers are already reaped."""
    import logging
    import os

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _print_plan(plan, command, options) -> None:
    hosts = {address.rsplit(":", 1)[0] for address in plan.cluster["worker"]}
    print(f"# {plan.manager}: {len(plan.ranks)} of {plan.world_size} worker(s) on this host "
          f"(node {plan.node_rank} of {len(hosts)} host(s))")
    for rank, env in zip(plan.ranks, plan.env):
        log = f"  > {options.log_dir}/worker-{rank}.log" if options.log_dir else ""
        assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        print(f"[w{rank}] env {assignments} {shlex.join(command) or '<no command>'}{log}")


def _print_manifest(command, args, options) -> int:
    import os

    from tfscale.cluster.launch import backends

    printer = backends.ManifestLauncher(job_name=args.job_name, image=args.image, port=args.port)
    backends.choose(options, os.environ, manifest=printer, private_network=args.private_network)
    printer.start(command, options, plan=None)
    return 0
