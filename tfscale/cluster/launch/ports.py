"""Free TCP ports for workers' gRPC servers, reserved without races.

The launcher keeps one socket bound on each chosen port, with SO_REUSEPORT,
for as long as the workers live, and starts every worker with
``TF_GRPC_REUSE_PORT=1`` so TensorFlow's gRPC server also binds with
SO_REUSEPORT and can share the port with the reservation. Until then no one
else can take the port: the kernel never hands a bound port to another
``bind(0)``, and an explicit ``bind`` by anyone without SO_REUSEPORT fails.
A reservation socket never calls ``listen``, so it never receives a
connection: every connection goes to the worker's server.

Why not bind-then-release (torchrun's way)? Between the release and the
worker's own bind, which happens only after TensorFlow has imported (seconds
later), any process may take the port; the launcher would have to recognize
the failure in the worker's output and start again. Holding the port closes
that window instead of repairing it.

TensorFlow 2.21's gRPC server listens on every interface (``[::]:port``)
whatever host TF_CONFIG names, so reservations are made on every interface
too; TF_CONFIG itself names 127.0.0.1 for a local launch.
"""

from __future__ import annotations

import socket

from tfscale.errors import ClusterError

# The worker-side half of a reservation: TensorFlow's gRPC server binds with SO_REUSEPORT.
WORKER_ENV = {"TF_GRPC_REUSE_PORT": "1"}


def _reuseport_socket() -> tuple[socket.socket, str]:
    """A socket that shares its port with TensorFlow's server, and the any-address to bind it to."""
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        host = "::"
    except OSError:  # no IPv6 on this machine
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        host = "0.0.0.0"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock, host


class PortReservation:
    """TCP ports held for workers until `close` (also a context manager).

    Example:
        with PortReservation.free(2) as ports:
            start_workers(ports.ports)   # each worker with TF_GRPC_REUSE_PORT=1
    """

    def __init__(self, sockets: list[socket.socket]):
        self._sockets = sockets
        self.ports: list[int] = [s.getsockname()[1] for s in sockets]

    @classmethod
    def free(cls, n: int) -> "PortReservation":
        """Reserves `n` distinct ports that the kernel reports free."""
        sockets: list[socket.socket] = []
        try:
            for _ in range(n):
                sock, host = _reuseport_socket()
                sockets.append(sock)
                sock.bind((host, 0))
        except OSError as e:
            for sock in sockets:
                sock.close()
            raise ClusterError(f"could not reserve {n} free TCP port(s): {e}", where="this host",
                               fix="free some ports or file descriptors, then launch again") from None
        return cls(sockets)

    @classmethod
    def exact(cls, ports: list[int], *, where: str = "--hosts") -> "PortReservation":
        """Reserves the given port numbers (the ports this host announces to other hosts).

        Each port is first bound without SO_REUSEPORT, which fails if anything
        holds it, even another launcher's reservation or a worker's server.
        """
        sockets: list[socket.socket] = []
        try:
            for port in ports:
                probe, host = _reuseport_socket()
                with probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 0)
                    # connections of an earlier run, left in TIME_WAIT for a minute, do not hold the port;
                    # a socket bound there (a reservation: no SO_REUSEADDR) or listening still does
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((host, port))
                sock, host = _reuseport_socket()
                sockets.append(sock)
                sock.bind((host, port))
        except OSError as e:
            for sock in sockets:
                sock.close()
            raise ClusterError(f"port {port} on this host is not free ({e.strerror})", where=where,
                               fix="stop what uses it (`ss -ltnp`), or name another port for this host") from None
        return cls(sockets)

    def close(self) -> None:
        """Releases the ports (the workers' servers, if running, keep theirs)."""
        for sock in self._sockets:
            sock.close()
        self._sockets = []

    def __enter__(self) -> "PortReservation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
