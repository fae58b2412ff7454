"""Network faults between replicas (consensus/testing/netfaults.py) on a real 3-process cluster."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import pytest

from quorumboard.consensus import LocalCluster
from tests.conftest import wait_until


def test_isolated_leader_is_replaced_and_the_cluster_heals(tmp_path: Path) -> None:
    """Raft §5.2: a leader cut off from its peers loses the majority; the others elect a new
    leader and keep committing; after heal every replica converges to one digest."""
    with LocalCluster(replicas=3, data_dir=tmp_path, network_faults=True) as cluster:
        assert cluster.net is not None
        board = cluster.board(agent="a")
        board.put("x/1", 1)
        old = cluster.wait_for_leader()
        cluster.net.isolate(old)
        wait_until(lambda: cluster.leader() not in (None, old), 15.0,
                   what="a new leader in the majority")
        new = cluster.leader()
        assert board.put("x/2", 2).version == 1  # the majority commits without the old leader
        cluster.net.delay(0.01, jitter_s=0.01)  # slow but open links still commit
        cluster.net.heal()
        cluster.net.delay(0.005)
        assert board.put("x/3", 3).version == 1
        cluster.net.heal()
        cluster.wait_converged()
        digests = cluster.digests()
        assert len(set(digests)) == 1 and new != old
        entry = cluster.board(agent="b").get("x/2")
        assert entry is not None and entry.value == 2
    assert not [t for t in threading.enumerate() if t.name == "netfaults"], "proxy thread stopped"


def test_close_forwards_nothing_held_and_stops_everything() -> None:
    """Connections held on a cut link are never connected through, not even while closing;
    the proxy thread and loop end."""
    import socket

    from quorumboard.consensus.testing.netfaults import NetworkFaults

    accepted: list[socket.socket] = []
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(16)
    target.settimeout(0.2)
    net = NetworkFaults([target.getsockname(), target.getsockname()])
    clients = []
    try:
        net.isolate(0)
        port = int(net.dial_address(0, 1).rpartition(":")[2])
        for _ in range(3):
            c = socket.create_connection(("127.0.0.1", port), timeout=2.0)
            c.sendall(b"held")
            clients.append(c)
        net.close()
        for _ in range(5):  # nothing may reach the target, during or after close
            with contextlib.suppress(TimeoutError):
                accepted.append(target.accept()[0])
        assert accepted == []
    finally:
        net.close()
        for c in clients + accepted:
            c.close()
        target.close()
    assert not [t for t in threading.enumerate() if t.name == "netfaults"]


def test_one_way_cut_holds_one_direction_and_delay_is_a_latency_not_a_cap() -> None:
    """``cut(one_way=True)`` stops bytes a -> b on an open connection while b -> a still flows;
    heal releases the held bytes in order. A delay holds each chunk at least ``delay_s``."""
    import socket
    import time

    from quorumboard.consensus.testing.netfaults import NetworkFaults

    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(4)
    target.settimeout(5.0)
    net = NetworkFaults([target.getsockname(), target.getsockname()], seed=1)
    conns: list[socket.socket] = []
    try:
        port = int(net.dial_address(0, 1).rpartition(":")[2])
        client = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        conns.append(client)
        server = target.accept()[0]
        conns.append(server)
        server.settimeout(0.3)
        net.cut([(0, 1)], one_way=True)  # replica 0 (the dialer) is no longer heard by 1
        client.sendall(b"held")
        server.sendall(b"heard")
        assert client.recv(16) == b"heard", "1 -> 0 still flows"
        with pytest.raises(TimeoutError):  # 0 -> 1 is held
            server.recv(16)
        net.heal()
        server.settimeout(5.0)
        assert server.recv(16) == b"held", "held bytes arrive after heal"

        net.delay(0.2, links=[(1, 0)])
        sent = time.monotonic()
        server.sendall(b"late")
        assert client.recv(16) == b"late"
        assert time.monotonic() - sent >= 0.2
        net.lose(1.0, links=[(0, 1)])  # every chunk lost once: arrives after a retransmit
        sent = time.monotonic()
        client.sendall(b"lost")
        assert server.recv(16) == b"lost"
        assert time.monotonic() - sent >= 0.2
        with pytest.raises(ValueError, match="no link"):
            net.cut([(0, 5)])
    finally:
        net.close()
        for c in conns:
            c.close()
        target.close()


def test_a_destination_lost_during_a_cut_frees_the_connection_after_heal() -> None:
    """A sender that keeps writing into a cut link, then a destination that gives up on the
    silent connection: after the heal the proxy ends that connection on both sides instead of
    holding it (and its slot on the link) for ever."""
    import socket

    from quorumboard.consensus.testing.netfaults import NetworkFaults

    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(4)
    target.settimeout(5.0)
    net = NetworkFaults([target.getsockname(), target.getsockname()])
    client: socket.socket | None = None
    try:
        port = int(net.dial_address(0, 1).rpartition(":")[2])
        client = socket.create_connection(("127.0.0.1", port), timeout=5.0)
        server = target.accept()[0]
        net.cut([(0, 1)])
        client.setblocking(False)
        for k in range(2_000):  # fill whatever the cut link and the buffers take
            try:
                client.send(b"m%05d" % k)
            except BlockingIOError:
                break
        server.close()  # the destination gives up on the silent connection
        net.heal()
        wait_until(lambda: net.connections() == 0, 10.0, what="the proxy to drop both ends")
        client.setblocking(True)
        client.settimeout(5.0)
        assert client.recv(16) == b"", "the source side is closed too"
    finally:
        net.close()
        if client is not None:
            client.close()
        target.close()
