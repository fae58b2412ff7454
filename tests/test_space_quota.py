"""Memory and disk bounded in bytes, through real replica processes on 127.0.0.1: compaction
triggered by journal bytes (long before the entry count), a watch and ``history`` that say a
value was dropped past the retained-value bound, and the space quota's typed error (CLI exit
code 10), recovered from by a delete, with every replica on one digest after the refusals.

One 3-replica cluster for the module, with byte bounds small enough to be crossed by a few
hundred KiB of writes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumboard.consensus import LocalCluster, SpaceQuotaExceeded
from quorumboard.consensus.cli import main as cli_main
from quorumboard.consensus.core.model import value_sha256
from quorumboard.consensus.core.state import Limits
from quorumboard.consensus.raft.journal import JOURNAL_FILE, SNAPSHOT_FILE
from quorumboard.consensus.raft.node import COMPACTION_JOURNAL_BYTES_MIN
from tests.conftest import wait_until

VALUE_CHARS = 16 * 1024
KEEP_BYTES = 3 * (VALUE_CHARS + 3) + 100  # three values are kept by each retained log
QUOTA_BYTES = 256 * 1024
JOURNAL_BYTES = COMPACTION_JOURNAL_BYTES_MIN  # 64 KiB: a snapshot every few writes
LIMITS = Limits(events_value_bytes_max=KEEP_BYTES, audit_value_bytes_max=KEEP_BYTES,
                space_quota_bytes=QUOTA_BYTES)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(replicas=3, data_dir=tmp_path_factory.mktemp("bytes"), limits=LIMITS,
                      log_level="warning", compaction_journal_bytes=JOURNAL_BYTES) as c:
        c.board(agent="setup").set_policy("big/", "last-writer-wins")
        yield c


def _value(i: int, chars: int = VALUE_CHARS) -> str:
    return f"{i:06d}" + "x" * (chars - 6)


def _journals(cluster: LocalCluster) -> list[Path]:
    return [cluster.data_dir / f"r{i}" / JOURNAL_FILE for i in range(cluster.size)]


def test_compaction_is_triggered_by_journal_bytes(cluster: LocalCluster) -> None:
    """60 writes of 16 KiB (~1 MiB through the log) are far below the 20,000 entries and 600 s
    that trigger a snapshot otherwise: only the byte threshold can have compacted the
    journals, and it keeps each below the threshold plus the entries that crossed it and
    those a follower had not applied when its snapshot was taken (a snapshot covers applied
    entries only; a follower hears that one writer's last entry committed with the next
    AppendEntries, or the leader's commit notice 5 ms later: two more entries, measured)."""
    board = cluster.board(agent="compactor")
    for i in range(60):
        board.put(f"big/c{i % 4}", _value(i))
    cluster.wait_converged(30)
    slack = 5 * (VALUE_CHARS + 200)

    def compacted() -> list[int] | None:
        sizes = [p.stat().st_size for p in _journals(cluster)]
        return sizes if all(s <= JOURNAL_BYTES + slack for s in sizes) else None

    sizes = wait_until(compacted, 20, what=f"every journal under {JOURNAL_BYTES + slack} B")
    # each far below the ~1 MB written through it (each journal is somewhere between empty and
    # its threshold plus the entries that crossed it, whenever it is looked at)
    assert all(size < 60 * VALUE_CHARS / 4 for size in sizes), sizes
    for i in range(cluster.size):
        assert (cluster.data_dir / f"r{i}" / SNAPSHOT_FILE).exists(), f"r{i} took no snapshot"
    status = cluster.status()
    assert all(s is not None and s.commit_index < 20_000 for s in status), status


def test_watch_and_history_say_which_values_were_dropped(cluster: LocalCluster) -> None:
    board = cluster.board(agent="dropper")
    written = {board.put("big/w", _value(i)).revision: _value(i) for i in range(8)}
    first = min(written)
    # The watch may be served by a follower, which hears that the last write committed with
    # the next AppendEntries or the leader's commit notice (5 ms later): until it has applied
    # that write its log still holds one older value, and a watch started then streams it.
    cluster.wait_converged(30)
    events = list(board.watch("big/w", start_revision=first, idle_timeout_s=1.0))
    assert [e.revision for e in events] == sorted(written), "every change is still streamed"
    kept = [e for e in events if not e.value_dropped]
    assert [e.revision for e in kept] == sorted(written)[-3:], "the newest three keep values"
    assert all(e.entry.value == written[e.revision] for e in kept)
    for e in events[:-3]:
        assert e.entry.value is None and e.value_sha256 == value_sha256(written[e.revision])
        assert e.entry.version >= 1 and e.entry.author == "dropper"
    history = board.history("big/w")
    assert [h.value_dropped for h in history] == [True] * 5 + [False] * 3
    assert history[0].value_sha256 == value_sha256(written[first])


def test_space_quota_refuses_with_a_typed_error_and_a_delete_recovers(
        cluster: LocalCluster) -> None:
    board = cluster.board(agent="filler")
    filled = []
    with pytest.raises(SpaceQuotaExceeded) as refused:
        for i in range(QUOTA_BYTES // VALUE_CHARS + 2):
            board.put(f"q/{i}", _value(i))
            filled.append(f"q/{i}")
    assert refused.value.quota_bytes == QUOTA_BYTES
    assert QUOTA_BYTES - VALUE_CHARS < refused.value.used_bytes <= QUOTA_BYTES
    blocked = f"q/{len(filled)}"
    assert blocked in str(refused.value) and board.get(blocked) is None, "nothing was written"
    status = board.status()
    assert status.space_quota_bytes == QUOTA_BYTES and status.space_bytes <= QUOTA_BYTES
    # the CLI maps it to its own exit code
    endpoints = ",".join(cluster.endpoints)
    assert cli_main(["put", blocked, _value(1), "--endpoints", endpoints]) == 10
    # a delete still applies over a full board, and frees the space the write needed
    board.delete(filled[0], expect_version=1)
    assert board.put(blocked, _value(2)).version == 1
    digest = cluster.wait_converged(30)
    assert set(cluster.digests()) == {digest}, "every replica refused the same writes"
