"""Replies stay under the client's frame bound however large the values (a regression from a
cold review): a list and a watch over more legal values than one reply frame can carry."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from quorumboard.consensus import LocalCluster, Unavailable
from tests.review_helpers import require

# ------------------------------------------------------------- frame bound on replies


_BIG = "x" * 1_000_000  # one value near the 1 MiB bound
_BIG_KEYS = 70  # 70 MB > REPLY_FRAME_BYTES_MAX (64 MiB)


@pytest.fixture(scope="module")
def big_board() -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3) as c:
        writers = [c.board(agent=f"w{t}") for t in range(4)]

        def fill(t: int) -> None:
            for i in range(t, _BIG_KEYS, len(writers)):
                writers[t].put(f"big/{i:03d}", _BIG)

        threads = [threading.Thread(target=fill, args=(t,)) for t in range(len(writers))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        yield c


def test_list_of_legal_values_larger_than_a_reply_frame(big_board: LocalCluster) -> None:
    board = big_board.board(agent="lister", timeout_s=5.0)
    require(board.get(f"big/{_BIG_KEYS - 1:03d}") is not None, "all big values written")
    try:
        entries = board.list("big/")
    except Unavailable as exc:
        raise AssertionError(f"list of {_BIG_KEYS} legal values never answered: {exc}") from exc
    assert len(entries) == _BIG_KEYS


def test_watch_over_values_larger_than_a_reply_frame(big_board: LocalCluster) -> None:
    watcher = big_board.board(agent="big-watcher")
    got: list[str] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            for ev in watcher.watch("big/", start_revision=0, idle_timeout_s=20):
                got.append(ev.key)
                return
        except BaseException as exc:  # reported below
            failure.append(exc)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(6)
    assert got, f"the watch delivered nothing in 6 s (error: {failure!r})"
    watcher.close()  # ends the reconnect loop if it is still running
    t.join(30)


