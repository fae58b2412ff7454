"""Shared connections and follower-served watches: a Board's watches share its socket; many
Boards of one process share one socket per replica (``connect_shared``), each keeping its own
session; watches are spread over the replicas, and a watch served by a follower goes through
the SIGKILL of the leader, then of the follower serving it, delivering every event exactly
once, in revision order. A watcher planted by this test with a resume that skips one revision
is caught by the same check.

Real replica processes on 127.0.0.1, one cluster for the module, its raft links through the
test harness's fault proxies (the kill test restarts what it killed; the partition test heals)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from quorumboard.consensus import (
    Board,
    ClaimHeld,
    Connection,
    InvalidCommand,
    LocalCluster,
    OutcomeUnknown,
    Unavailable,
    connect_shared,
)
from quorumboard.consensus.client.board import SEND_TIMEOUT_S, _Link
from quorumboard.consensus.wire.protocol import WatchReq
from tests.conftest import wait_until
from tests.test_slow_watchers import exactly_once

REPLICAS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=REPLICAS, data_dir=tmp_path_factory.mktemp("shared"),
                      log_level="warning", network_faults=True) as c:
        c.wait_for_leader()
        yield c


def _counts(cluster: LocalCluster) -> list[tuple[int, int]]:
    """Each replica's (client connections, watches), our own status probe included."""
    out = []
    for status in cluster.status():
        assert status is not None
        out.append((status.client_connections, status.client_watches))
    return out


class _Watcher:
    """A thread iterating one watch into ``seen`` until the board closes or ``last`` came."""

    def __init__(self, board: Board, prefix: str, start: int, last: int = 2**62) -> None:
        self.seen: list[int] = []
        self.error: BaseException | None = None
        self._events = board.watch(prefix, start_revision=start)
        self._last = last
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self._events:
                self.seen.append(event.revision)
                if event.revision >= self._last:
                    return
        except Unavailable:  # the board was closed
            pass
        except BaseException as exc:  # shown by the test
            self.error = exc


def test_many_boards_share_one_socket_per_replica(cluster: LocalCluster) -> None:
    """Twelve Boards with a watch each, on one shared Connection: each replica gains one
    client connection and serves a third of the watches; closing the Boards ends their
    watches, closing the Connection its sockets."""
    before = wait_until(lambda: (counts := _counts(cluster)) == [(1, 0)] * REPLICAS and counts,
                        timeout_s=10, what="only our status probe to be connected")
    writer = cluster.board("share-writer")
    start = writer.put("share/0", 0).revision
    conn = connect_shared(cluster.endpoints, secret=cluster.secret, name="share-test")
    boards = [conn.board(f"share-{i}") for i in range(12)]
    try:
        for board in boards:
            board.put(f"own/{board.agent}", 1)
        watchers = [_Watcher(b, "share/", start) for b in boards]
        last = [start] + [writer.put(f"share/{i}", i).revision for i in range(1, 6)]
        wait_until(lambda: all(w.seen == last for w in watchers), timeout_s=10,
                   what="every watcher to see every write")

        def gained() -> tuple[list[int], list[tuple[int, int]]]:
            """Connections each replica gained beyond the writer's own link to it. A replica
            counts a client's socket until it has seen the close, so a link the writer just
            dropped (a follower it was redirected from) may still show for a moment: poll."""
            after = _counts(cluster)
            link = [int(cluster.endpoints[i] in writer.connection.connections())
                    for i in range(REPLICAS)]
            return [a[0] - b[0] - w for a, b, w in zip(after, before, link, strict=True)], after

        got, after = wait_until(lambda: (g := gained())[0] == [1] * REPLICAS and g,
                                timeout_s=10, what=f"one shared connection per replica "
                                f"(before: {before})")
        assert got == [1] * REPLICAS, (before, after)
        assert [a[1] - b[1] for a, b in zip(after, before, strict=True)] == [4] * REPLICAS
        assert conn.connections() == sorted(cluster.endpoints)
    finally:
        for board in boards:
            board.close()
    wait_until(lambda: [c[1] for c in _counts(cluster)] == [b[1] for b in before],
               timeout_s=10, what="the closed boards' watches to end on the replicas")
    for watcher in watchers:
        watcher.thread.join(5)
        assert not watcher.thread.is_alive() and watcher.error is None, watcher.error
    assert conn.connections() != [], "a Board's close must not close the shared sockets"
    conn.close()
    assert conn.connections() == []
    writer.close()
    wait_until(lambda: [c[0] for c in _counts(cluster)] == [b[0] for b in before],
               timeout_s=10, what="the shared sockets to close on the replicas")


def test_a_private_boards_watches_share_its_sockets(cluster: LocalCluster) -> None:
    """One Board, five watches: at most two sockets (the leader's and its watch replica's),
    where each watch used to open one of its own."""
    board = cluster.board("private-watcher")
    start = board.put("priv/0", 0).revision
    watchers = [_Watcher(board, "priv/", start) for _ in range(5)]
    wait_until(lambda: all(w.seen == [start] for w in watchers), timeout_s=10,
               what="the five watches to start")
    assert len(board.connection.connections()) <= 2
    assert board.watch_address in board.connection.connections()
    index = cluster.endpoints.index(board.watch_address)

    def served() -> int:
        status = cluster.status()[index]
        assert status is not None
        return status.client_watches

    assert served() == 5
    # A watch its caller closes is cancelled on the replica, while the socket goes on serving
    # the others.
    sixth = board.watch("priv/", start_revision=start)
    assert next(sixth).revision == start
    wait_until(lambda: served() == 6, timeout_s=10, what="the sixth watch to be served")
    sixth.close()
    wait_until(lambda: served() == 5, timeout_s=10, what="the closed watch to be cancelled")
    board.close()
    for watcher in watchers:
        watcher.thread.join(5)
        assert not watcher.thread.is_alive() and watcher.error is None


def test_boards_on_one_connection_keep_their_own_sessions(cluster: LocalCluster) -> None:
    """Same socket, separate agents: authorship, sessions (each fresh Board's first command
    is sequence 1 of its own session: were the sessions mixed up, the second would be
    answered with the first's cached result), claims and leases stay per Board."""
    conn = connect_shared(cluster.endpoints, secret=cluster.secret, name="sessions")
    a, b = conn.board("sess-a"), conn.board("sess-b")
    try:
        first, second = a.put("sess/a", "from a"), b.put("sess/b", "from b")
        assert (first.key, first.author) == ("sess/a", "sess-a")
        assert (second.key, second.author) == ("sess/b", "sess-b")
        assert a._session and b._session and a._session != b._session
        claim = a.claim("sess/task", ttl=10)
        with pytest.raises(ClaimHeld):
            b.claim("sess/task", ttl=10)
        lease = b.grant(10)
        sockets = conn.connections()
        a.close()  # a's session ends; b's, on the same socket, goes on
        assert b.keepalive(lease).id == lease.id
        assert b.put("sess/b", "again", expect_version=second.version).author == "sess-b"
        assert conn.connections() == sockets
        assert claim.key == "sess/task"
        with pytest.raises(InvalidCommand, match="other endpoints"):
            Board(cluster.endpoints[:1], "stranger", secret=cluster.secret, conn=conn)
    finally:
        a.close()
        b.close()
        conn.close()


class _SkipsOnResume(Board):
    """A planted bug (this test's, not the client's): every watch this Board restarts after
    a failure asks for one revision past where it should resume."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watch_requests = 0
        self.skipped: list[int] = []

    def _watch_link(self, address: str) -> _Link:
        link = super()._watch_link(address)
        if getattr(link, "planted", False):
            return link
        send = link.send

        def planted(message: Any, timeout_s: float = SEND_TIMEOUT_S) -> None:
            if isinstance(message, WatchReq):
                self.watch_requests += 1
                if self.watch_requests > 1 and message.start_revision is not None:
                    self.skipped.append(message.start_revision)
                    message = message.model_copy(
                        update={"start_revision": message.start_revision + 1})
            send(message, timeout_s)

        link.send = planted  # type: ignore[method-assign]
        link.planted = True  # type: ignore[attr-defined]
        return link


def _board_served_by(conn: Connection, address: str, name: str,
                     cls: type[Board] = Board) -> Board:
    """A Board on ``conn`` whose watches go to ``address`` (Boards take turns over the
    replicas); the Boards passed over are closed."""
    for i in range(REPLICAS):
        board = cls(conn.endpoints, f"{name}-{i}", secret=conn.secret, conn=conn)
        if board.watch_address == address:
            return board
        board.close()
    raise AssertionError(f"no board of {conn.name} is served by {address}")


def _put(board: Board, key: str, value: int) -> int:
    """A write through any failover; its revision (an unknown outcome is retried: exactly
    once under the same session and sequence)."""
    for _ in range(5):
        try:
            return board.put(key, value).revision
        except (OutcomeUnknown, Unavailable):
            continue
    raise AssertionError(f"{key} was not written in five attempts")


def _caught_up(cluster: LocalCluster, i: int, revision: int) -> bool:
    status = cluster._status_of(i)
    return status is not None and status.revision >= revision


def test_a_follower_served_watch_survives_the_leader_and_its_own_replica(
        cluster: LocalCluster) -> None:
    """A watch on a follower: SIGKILL the leader (the watch stays where it is and goes on as
    soon as a new leader commits), restart it, then SIGKILL the follower serving the watch
    (it resumes on another replica from the next revision). Every acknowledged write is seen
    once, in order. The planted watcher on the same follower resumes one revision late: the
    check names exactly the revision it skipped."""
    leader = cluster.wait_for_leader()
    follower = (leader + 1) % REPLICAS
    address = cluster.endpoints[follower]
    conn = connect_shared(cluster.endpoints, secret=cluster.secret, name="follower-watch")
    planted_conn = connect_shared(cluster.endpoints, secret=cluster.secret, name="planted")
    writer = cluster.board("fw-writer", timeout_s=20)
    watching = _board_served_by(conn, address, "fw-watcher")
    planted = _board_served_by(planted_conn, address, "fw-planted", _SkipsOnResume)
    try:
        assert isinstance(planted, _SkipsOnResume)
        acknowledged = [_put(writer, "fw/0", 0)]
        good = _Watcher(watching, "fw/", acknowledged[0])
        bad = _Watcher(planted, "fw/", acknowledged[0])
        acknowledged += [_put(writer, f"fw/{i}", i) for i in range(1, 5)]
        wait_until(lambda: good.seen == acknowledged, timeout_s=10,
                   what="the follower-served watch to start")

        cluster.kill(leader)
        acknowledged += [_put(writer, f"fw/{i}", i) for i in range(5, 10)]
        wait_until(lambda: good.seen == acknowledged, timeout_s=15,
                   what="the watch to see the writes under the new leader")
        assert watching.watch_address == address, "the leader's death moved the watch"

        cluster.restart(leader)
        wait_until(lambda: _caught_up(cluster, leader, acknowledged[-1]), timeout_s=15,
                   what="the restarted replica to catch up")
        cluster.kill(follower)
        acknowledged += [_put(writer, f"fw/{i}", i) for i in range(10, 15)]
        wait_until(lambda: good.seen == acknowledged, timeout_s=15,
                   what="the watch to resume on another replica")
        assert watching.watch_address != address
        wait_until(lambda: len(bad.seen) >= len(acknowledged) - len(planted.skipped),
                   timeout_s=15, what="the planted watcher to resume")

        assert good.error is None and bad.error is None, (good.error, bad.error)
        assert exactly_once(acknowledged, good.seen) == []
        skipped = sorted(set(planted.skipped) & set(acknowledged))
        assert skipped, f"the planted resume skipped nothing written: {planted.skipped}"
        assert exactly_once(acknowledged, bad.seen) == [f"missing {skipped}"]
    finally:
        for board in (watching, planted, writer):
            board.close()
        for c in (conn, planted_conn):
            c.close()
        for i in range(REPLICAS):
            if cluster.pid(i) is None:
                cluster.restart(i)


def test_a_watch_on_a_replica_cut_off_from_the_leader_moves(cluster: LocalCluster) -> None:
    """A follower isolated from the other replicas (its clients still reach it) stops
    applying while the majority goes on; once it has known no leader for a few seconds it
    ends its watches, which resume on another replica: nothing missed, nothing twice."""
    c = cluster
    assert c.net is not None
    leader = c.wait_for_leader()
    follower = (leader + 1) % REPLICAS
    conn = connect_shared(c.endpoints, secret=c.secret, name="cut-off")
    watching = _board_served_by(conn, c.endpoints[follower], "cut-watcher")
    writer = c.board("cut-writer", timeout_s=20)
    try:
        acknowledged = [_put(writer, "cut/0", 0)]
        watcher = _Watcher(watching, "cut/", acknowledged[0])
        wait_until(lambda: watcher.seen == acknowledged, timeout_s=10,
                   what="the follower-served watch to start")
        c.net.isolate(follower)
        acknowledged += [_put(writer, f"cut/{i}", i) for i in range(1, 6)]
        wait_until(lambda: watcher.seen == acknowledged, timeout_s=20,
                   what="the watch to leave the cut-off replica")
        assert watching.watch_address != c.endpoints[follower]
        assert watcher.error is None and exactly_once(acknowledged, watcher.seen) == []
    finally:
        c.net.heal()
        watching.close()
        writer.close()
        conn.close()
