"""What a local launch exposes to the network, and the private network that keeps it on this machine.

TensorFlow 2.21's gRPC servers listen on every interface (``*:PORT``) whatever address TF_CONFIG names, and
JAX's coordinator listens on every interface too (`ports`); neither authenticates its peers, so anyone who
reaches this machine can send the workers work. A local launch (every worker on this host) needs none of that:
its workers talk over 127.0.0.1.

The choice, for a careful user:

- **by default the network stays as it is**, and the launch logs one warning line naming the ports open to the
  network and why (`warn_exposed`). A private network cuts the workers off from everything beyond the
  machine (the internet, DNS, an object store, a tf.data service, a Ray cluster, a remote TensorBoard or
  experiment tracker, ``pip``): making that the default would break working scripts, with errors far from
  the cause;
- **``--private-network``** (``tfscale.launch(..., private_network=True)``) runs the worker group in a
  network namespace of its own with only loopback up (`PrivateNetwork`): the workers reach each other on
  127.0.0.1 inside it, and nothing outside it reaches their ports (nor do they reach anything outside it,
  this machine's other processes included). Where the system allows no namespace (not root, or root without
  CAP_SYS_ADMIN as in most containers, and no user namespaces) it is a ConfigError before anything starts,
  never a silent fallback to the exposed network.

Only a launch whose workers all run on this host can be private: with ``--hosts``, Slurm or Kubernetes the
workers must reach other machines (there binding every interface is needed, and `plan` warns about named
hosts beyond loopback); ``--private-network`` there is refused (`backends.choose`).

How: a helper process (this Python, standard library only) calls ``unshare(CLONE_NEWNET)`` (root), or,
where that is refused, ``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` mapping only the caller's own user and group
(the workers keep their identity: they are not root inside), sets ``lo`` up (SIOCSIFFLAGS), and waits while
the launcher opens the namespaces (``/proc/PID/ns/user``, ``/proc/PID/ns/net``); then it exits, and the open
descriptors keep the namespace alive until the launch ends. Each worker enters it before it starts
(`group.ProcessSpec.namespaces`, ``setns``): every worker and restart of the launch shares one network.
Abstract Unix sockets are per network namespace too; files and Unix sockets on disk are not.

Standard library only (never TensorFlow, Keras or JAX). Linux only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from collections.abc import Sequence

from tfscale.errors import ClusterError, ConfigError
from tfscale.vocabulary import JAX, TENSORFLOW, Backend

log = logging.getLogger("tfscale")

FLAG = "--private-network"

# The helper: makes the namespace, sets loopback up, says "net" or "user" (what it had to unshare), then waits
# until the launcher has opened the namespaces (EOF on stdin, also when the launcher dies).
_HELPER = r"""
import ctypes, fcntl, os, socket, struct, sys
CLONE_NEWNET, CLONE_NEWUSER, SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x40000000, 0x10000000, 0x8913, 0x8914, 1
libc = ctypes.CDLL(None, use_errno=True)
uid, gid = os.geteuid(), os.getegid()
if libc.unshare(CLONE_NEWNET) == 0:
    kind = "net"
else:
    alone = ctypes.get_errno()
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        print("refused", os.strerror(alone), os.strerror(ctypes.get_errno()), sep="\t", flush=True)
        sys.exit(3)
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    kind = "user"
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    flags = struct.unpack("16sh22x", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh22x", b"lo", 0)))[1]
    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))
print(kind, flush=True)
sys.stdin.read()
"""


class PrivateNetwork:
    """A network namespace with only loopback, for the workers of one local launch (see the module docstring).

    Example:
        with PrivateNetwork.create() as network:
            specs = [dataclasses.replace(spec, namespaces=network.namespaces) for spec in specs]
            ...  # start_group(specs): the workers see only `lo`
    """

    def __init__(self, namespaces: tuple[int, ...], user: bool):
        self.namespaces = namespaces  # open descriptors to enter, in order (the user namespace first)
        self.user = user  # True: an unprivileged user namespace was needed (not root, or no CAP_SYS_ADMIN)

    @classmethod
    def create(cls) -> PrivateNetwork:
        """A new namespace with loopback up, held open until `close`.

        Raises:
            ConfigError: the system allows no network namespace here (what it refused, and how to allow it).
            ClusterError: the helper failed otherwise (its output says how).
        """
        if not sys.platform.startswith("linux"):
            raise ConfigError(f"{FLAG} needs Linux network namespaces ({sys.platform} has none)", where=FLAG,
                              fix="drop --private-network and block the workers' ports with a firewall")
        helper = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HELPER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            said = helper.stdout.readline().rstrip("\n").split("\t")
            if said[0] == "refused":
                raise ConfigError(
                    f"{FLAG}: this system lets this user make no network namespace (on its own: {said[1]}; in a new "
                    f"user namespace: {said[2]})", where=FLAG,
                    fix="run as root (with CAP_SYS_ADMIN), or allow unprivileged user namespaces "
                        "(sysctl user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 or "
                        "kernel.apparmor_restrict_unprivileged_userns=0 where those exist), or drop "
                        "--private-network and block the workers' ports with a firewall")
            if said[0] not in ("net", "user"):
                helper.kill()
                raise ClusterError(f"{FLAG}: the helper that makes the namespace failed: "
                                   f"{helper.communicate()[1].strip()[-2000:] or said}", where=FLAG,
                                   fix="report it, with this message; meanwhile drop --private-network")
            namespaces = _open_namespaces(helper.pid, ("user", "net") if said[0] == "user" else ("net",))
        finally:
            helper.stdin.close()
            helper.wait()
            helper.stdout.close()
            helper.stderr.close()
        log.info("%s: the workers run in a network namespace of their own with only loopback%s", FLAG,
                 " (in a user namespace: no root here)" if said[0] == "user" else "")
        return cls(namespaces, user=said[0] == "user")

    def close(self) -> None:
        """Closes the descriptors: the namespace goes once no worker is left in it."""
        for fd in self.namespaces:
            os.close(fd)
        self.namespaces = ()

    def __enter__(self) -> PrivateNetwork:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_namespaces(pid: int, kinds: Sequence[str]) -> tuple[int, ...]:
    """Descriptors of the helper's namespaces (not inherited by the workers: they enter them, `ProcessSpec`)."""
    opened: list[int] = []
    try:
        for kind in kinds:
            opened.append(os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY))
    except OSError as e:
        for fd in opened:
            os.close(fd)
        raise ClusterError(f"{FLAG}: cannot open the new namespace ({e})", where=f"/proc/{pid}/ns",
                           fix="check that /proc is mounted, or drop --private-network") from None
    return tuple(opened)


@dataclasses.dataclass(frozen=True)
class Listener:
    """What a backend's workers listen on, on every interface of their host.

    Attributes:
        what: how the warning names it.
        first_only: only the first worker listens (JAX's coordinator), not each worker.
    """

    what: str
    first_only: bool = False


# The Keras backends (`tfscale.vocabulary.BACKENDS`), by what their workers open to the network.
LISTENERS: dict[Backend, Listener] = {TENSORFLOW: Listener("the workers' TensorFlow gRPC servers listen"),
                                     JAX: Listener("the workers' JAX coordinator (worker 0) listens", first_only=True)}


def exposure(ports: Sequence[int], backend: Backend) -> str:
    """The one line that says which of a local launch's ports are open to the network, why, and what closes them."""
    listener = LISTENERS[backend]
    shown = list(ports[:1] if listener.first_only else ports)
    return (f"{listener.what} on every network interface of this machine (port{'s' if len(shown) > 1 else ''} "
            f"{', '.join(map(str, shown))}), with no authentication: anyone who can reach this machine can send "
            f"them work; {FLAG} keeps them on this machine")


def warn_exposed(ports: Sequence[int], backend: Backend) -> None:
    """Logs `exposure` once (call it once per launch, not per worker or restart)."""
    log.warning("%s", exposure(ports, backend))
