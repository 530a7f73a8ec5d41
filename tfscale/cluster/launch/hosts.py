"""Hosts of a multi-host launch: parsing ``--hosts`` / ``--hosts-file`` and finding this host's place."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket

from tfscale.worker_env import DEFAULT_PORT
from tfscale.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Host:
    """One node of the cluster: its name or address and the first port of its workers."""

    name: str
    port: int = DEFAULT_PORT

    def addresses(self, workers: int) -> list[str]:
        """The "host:port" of each of this node's `workers` (consecutive ports)."""
        host = f"[{self.name}]" if ":" in self.name else self.name
        return [f"{host}:{self.port + i}" for i in range(workers)]

    @property
    def is_loopback(self) -> bool:
        if self.name == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.name).is_loopback
        except ValueError:
            return False


def parse_host(text: str, *, where: str) -> Host:
    """Parses "name", "name:port", "[v6addr]:port" or a bare IPv6 address."""
    text = text.strip()
    if text.startswith("["):
        name, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        name, _, port = text.partition(":")
    else:
        name, port = text, ""
    if not name:
        raise ConfigError(f"host {text!r} has no name", where=where, fix="write host or host:port, e.g. node1:2222")
    if not port:
        return Host(name)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"host {text!r} has an invalid port {port!r}", where=where,
                          fix="give a port from 1 to 65535, e.g. node1:2222")
    return Host(name, int(port))


def parse_hosts(hosts: str | None = None, hosts_file: str | os.PathLike | None = None) -> list[Host]:
    """Hosts from a comma-separated list or a file (one host[:port] per line, # comments).

    Raises:
        ConfigError: both or an empty list given, a bad entry, or a host named twice.
    """
    if hosts and hosts_file:
        raise ConfigError("both --hosts and --hosts-file were given", where="tfscale launch",
                          fix="give only one of them")
    if hosts_file:
        try:
            with open(hosts_file) as f:
                lines = [line.split("#", 1)[0].strip() for line in f]
        except OSError as e:
            raise ConfigError(f"cannot read the hosts file: {e.strerror}", where=os.fspath(hosts_file),
                              fix="give a readable file with one host[:port] per line") from None
        entries = [(line, f"{os.fspath(hosts_file)}:{i + 1}") for i, line in enumerate(lines) if line]
    else:
        entries = [(item, "--hosts") for item in (hosts or "").split(",") if item.strip()]
    if not entries:
        raise ConfigError("no hosts given", where="--hosts / --hosts-file", fix="name at least one host[:port]")
    parsed = [parse_host(text, where=where) for text, where in entries]
    seen = {}
    for host in parsed:
        if (host.name, host.port) in seen:
            raise ConfigError(f"host {host.name}:{host.port} is named twice", where="--hosts / --hosts-file",
                              fix="give each node once, or give them different ports")
        seen[(host.name, host.port)] = True
    return parsed


def _local_names() -> set[str]:
    names = {socket.gethostname(), socket.getfqdn(), socket.gethostname().split(".")[0]}
    try:
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return {n for n in names if n}


def node_rank(hosts: list[Host], explicit: int | None) -> int:
    """This host's index in `hosts`: `explicit`, the only host, or found by hostname/address.

    Raises:
        ConfigError: out of range, or not found unambiguously.
    """
    if explicit is not None:
        if not 0 <= explicit < len(hosts):
            raise ConfigError(f"--node-rank {explicit} is out of range for {len(hosts)} host(s)",
                              where="--node-rank", fix=f"give 0 to {len(hosts) - 1}")
        return explicit
    if len(hosts) == 1:
        return 0
    local = _local_names()
    matches = [i for i, h in enumerate(hosts) if h.name in local]
    if len(matches) != 1:
        found = "several entries" if matches else "none of them"
        raise ConfigError(f"cannot tell which host this is: {found} matches {socket.gethostname()!r}",
                          where="--hosts", fix="give --node-rank (this host's index in --hosts, from 0)")
    return matches[0]
