"""The join deadline of a multi-worker process, in a small process of its own (standard library only).

    python -m tfscale.cluster.launch.join_watchdog SECONDS PARENT_PID WHERE PEERS_JSON

TensorFlow's multi-worker strategy waits in its coordination service's registration until every worker has
joined, with no deadline, inside one C++ call that holds Python's GIL: no thread of the waiting process can
run, so the deadline lives here. The parent keeps this process's stdin open while it waits and closes it
once the cluster has formed (this process then exits at once, as it does if the parent dies). If SECONDS
pass first, it probes the other workers' ports (`peers.probe`), prints a ClusterError naming those that
never joined, and ends the parent with SIGABRT, which the launcher reads as a lost peer (`peers.PEER_LOST`)
and explains with its own probes.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys

from tfscale.cluster.launch.peers import GRPC, REFUSED, probe
from tfscale.errors import ClusterError


def main(argv: list[str]) -> int:
    seconds, parent, where, peers = float(argv[0]), int(argv[1]), argv[2], json.loads(argv[3])
    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    if ready:  # the cluster formed (stdin closed), or the parent is gone
        return 0
    states = [(name, probe(address)) for name, address in peers]
    missing = [f"{name} ({'connection refused' if state == REFUSED else state})" for name, state in states
               if state != GRPC]
    what = (f"{', '.join(missing)} never joined" if missing
            else "every worker answers, but the registration did not finish")
    error = ClusterError(f"the cluster did not form within {seconds:g} s: {what}", where=where,
                         fix="start every worker (on each host, with the same --hosts list), check that the hosts "
                             "reach each other's ports, or raise --join-timeout / join_timeout")
    print(f"tfscale: {error}", file=sys.stderr, flush=True)
    try:
        os.kill(parent, signal.SIGABRT)
    except ProcessLookupError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
