"""The test cluster itself (tests/cluster/netns.py): hosts that talk over their own /24, a pulled cable,
private scratch folders, and nothing left behind, even when the block fails."""

import os
import subprocess
import sys

import pytest

from require import skip_or_fail
from tests.cluster import netns


@pytest.fixture(scope="module", autouse=True)
def _hosts_can_be_made():
    if reason := netns.skip_reason():
        skip_or_fail(reason)


SERVER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 7000))
s.listen()
print("listening", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(("hello " + peer[0]).encode())
    c.close()
"""
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], 7000), timeout=float(sys.argv[2]))
    print(c.recv(100).decode())
except OSError as e:
    print("failed:", type(e).__name__, e)
    sys.exit(3)
"""


def test_two_hosts_talk_over_their_addresses_until_a_link_goes_down_and_leave_nothing_behind():
    with netns.hosts(2, private_scratch=True) as (h0, h1):
        assert h0.addr != h1.addr and h0.addr.rsplit(".", 1)[0] == h1.addr.rsplit(".", 1)[0]
        assert h0.addr.startswith("10.213.")
        # the /24 exists only inside the namespaces: the root namespace has no route to it
        route = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, timeout=30).stdout
        assert h0.addr.rsplit(".", 1)[0] + "." not in route
        server = h0.popen([sys.executable, "-c", SERVER, h0.addr], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "listening"
        talk = h1.run([sys.executable, "-c", CLIENT, h0.addr, "10"], timeout=30)
        assert talk.stdout.strip() == f"hello {h1.addr}", talk
        # 127.0.0.1 works inside a host (lo is up), and is the host's own
        local = h0.run([sys.executable, "-c", "import socket; s = socket.socket(); s.bind(('127.0.0.1', 7001)); "
                        "s.listen(); print('ok')"], timeout=30)
        assert local.stdout.strip() == "ok", local
        # a pulled cable: the connection cannot be made
        h1.link_down()
        cut = h1.run([sys.executable, "-c", CLIENT, h0.addr, "3"], timeout=30)
        assert cut.returncode == 3 and "failed:" in cut.stdout, cut
        h1.link_up(peers=[h0])  # flushes the neighbour entries that failed while it was down, waits for carrier
        again = h1.run([sys.executable, "-c", CLIENT, h0.addr, "10"], timeout=30)
        assert again.stdout.strip() == f"hello {h1.addr}", again
        # private scratch: one path, different contents on each host
        assert h0.scratch == h1.scratch
        h0.run(["sh", "-c", f"echo zero > {h0.scratch}/marker"], timeout=30)
        seen = [h.run(["sh", "-c", f"cat {h.scratch}/marker || echo none"], timeout=30).stdout.strip()
                for h in (h0, h1)]
        assert seen == ["zero", "none"]
        names, scratch_dirs = [h0.name, h1.name], [h0.scratch, h0.scratch_source, h1.scratch_source]
        assert all(n in netns.ours() for n in names)
    assert server.poll() is not None  # the server was killed
    assert netns.ours() == []
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    assert not any(n in listed for n in names)
    assert not any(os.path.exists(p) for p in scratch_dirs)


def test_hosts_are_removed_when_the_block_fails():
    with pytest.raises(KeyboardInterrupt):
        with netns.hosts(2) as hs:
            sleeper = hs[1].popen(["sleep", "600"])
            raise KeyboardInterrupt
    assert sleeper.poll() is not None
    assert netns.ours() == []
