"""``Board.list_many``: entries under several prefixes, read together at one revision, and the
agents' view rebuild that depends on it (a resync used to miss a change committed between two
separate lists)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from quorumboard.agents.team.teamboard import Layout, ViewCache
from quorumboard.consensus import Board, Entry, InvalidCommand, InvalidKey, Listing, LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, data_dir=tmp_path_factory.mktemp("listmany"),
                      log_level="warning") as c:
        yield c


def test_one_revision_under_concurrent_writes(cluster: LocalCluster) -> None:
    """Invariant after every read: the listing holds exactly the keys whose write committed at
    or before the revision it reports, under both prefixes (a writer commits all along)."""
    writer, reader = cluster.board(agent="writer"), cluster.board(agent="reader")
    written: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def write() -> None:
        for i in range(400):
            if stop.is_set():
                return
            key = f"{'ab'[i % 2]}/k{i:04d}"
            entry = writer.put(key, i)
            with lock:
                written[key] = entry.mod_revision

    thread = threading.Thread(target=write)
    thread.start()
    try:
        for _ in range(40):
            listing = reader.list_many(["a/", "b/"])
            with lock:
                expected = {k for k, rev in written.items() if rev <= listing.revision}
                committed_later = {k for k, rev in written.items() if rev > listing.revision}
            got = {e.key for e in listing.entries}
            assert expected <= got, f"missing at rev {listing.revision}: {expected - got}"
            assert not got & committed_later, "an entry newer than the listing's revision"
            assert all(e.mod_revision <= listing.revision for e in listing.entries)
            assert [e.key for e in listing.entries] == sorted(got)
    finally:
        stop.set()
        thread.join(60)


def test_overlaps_bounds_and_errors(cluster: LocalCluster) -> None:
    board = cluster.board(agent="bounds")
    for i in range(5):
        board.put(f"ov/x/{i}", i)
    listing = board.list_many(["ov/", "ov/x/", "ov/"])  # overlapping: each entry once
    assert [e.value for e in listing.entries] == [0, 1, 2, 3, 4]
    assert listing.under("ov/x/") == listing.entries and listing.under("zz/") == []
    assert board.list_many([]).entries == []
    with pytest.raises(InvalidCommand, match="limit=3"):
        board.list_many(["ov/"], limit=3)  # refused, never cut
    with pytest.raises(InvalidKey):
        board.list_many(["/bad"])
    with pytest.raises(InvalidCommand, match="prefixes"):
        board.list_many([f"p{i}/" for i in range(65)])
    with pytest.raises(InvalidCommand, match="prefixes"):
        board.list_many("ov/")  # type: ignore[arg-type]


class _RacingBoard:
    """A board through which, right after each read returns, another agent commits a task
    change: exactly the race a view rebuild must survive."""

    def __init__(self, board: Board, other: Board, key: str) -> None:
        self._board, self._other, self._key = board, other, key
        self.late: Entry | None = None

    def _race(self) -> None:
        if self.late is None:
            self.late = self._other.put(self._key, {"status": "done", "owner": "other"})

    def list(self, prefix: str, **kwargs: Any) -> list[Entry]:
        out = self._board.list(prefix, **kwargs)
        self._race()
        return out

    def list_many(self, prefixes: list[str], **kwargs: Any) -> Listing:
        out = self._board.list_many(prefixes, **kwargs)
        self._race()
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._board, name)


def test_a_resync_sees_a_change_committed_right_after_its_read(cluster: LocalCluster) -> None:
    layout = Layout(root="rs", run="run1", policy="lww")
    setup = cluster.board(agent="setup")
    setup.put(layout.task("t1"), {"status": "pending"})
    setup.put(layout.file("a.py"), {"author": "setup"})
    racing = _RacingBoard(cluster.board(agent="viewer"), cluster.board(agent="other"),
                          layout.task("t2"))
    cache = ViewCache(board=racing, layout=layout, start_revision=0)  # type: ignore[arg-type]
    cache._resync()
    assert racing.late is not None
    cache.catch_up(racing.late.mod_revision)
    assert cache.tasks.get("t2", {}).get("status") == "done", \
        "the view misses a task change committed between the rebuild's read and its watch"
    assert set(cache.tasks) == {"t1", "t2"} and set(cache.files) == {"a.py"}
    cache.close()
