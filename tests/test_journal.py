"""Journal: crc'd append-only records, pysyncobj's interface, safe recovery on open."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from quorumboard.consensus.errors import CorruptData
from quorumboard.consensus.raft.journal import (
    DISK_PAGE_BYTES,
    JOURNAL_MAGIC,
    PREALLOCATE_BYTES,
    Journal,
    encode_record,
)

RECORD_MAX = 1 << 20


def open_journal(path: Path, fsync: bool = False) -> Journal:
    return Journal(path, fsync=fsync, record_bytes_max=RECORD_MAX)


def fill(j: Journal, count: int, start: int = 1, term: int = 1) -> None:
    for idx in range(start, start + count):
        j.add(f"cmd{idx}".encode(), idx, term)


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = open_journal(path, fsync=True)
    fill(j, 10)
    j.sync()
    j.setCurrentTerm(3, "127.0.0.1:1")
    j.setRaftCommitIndex(7)
    assert j[0] == (b"cmd1", 1, 1)  # pysyncobj compares entries as tuples
    assert j[-1] == (b"cmd10", 10, 1)
    assert j[2:4] == [(b"cmd3", 3, 1), (b"cmd4", 4, 1)]
    j._destroy()
    j._destroy()  # idempotent
    k = open_journal(path)
    assert len(k) == 10 and k.entries() == [(f"cmd{i}".encode(), i, 1) for i in range(1, 11)]
    assert (k.getCurrentTerm(), k.getVotedForNodeId(), k.getRaftCommitIndex()) == (
        3,
        "127.0.0.1:1",
        7,
    )
    k.close()


def test_defaults_for_a_new_journal(tmp_path: Path) -> None:
    j = open_journal(tmp_path / "j")
    assert (len(j), j.getCurrentTerm(), j.getVotedForNodeId(), j.getRaftCommitIndex()) == (
        0,
        0,
        None,
        1,
    )
    j.close()


def test_delete_entries_from_and_to(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = open_journal(path)
    fill(j, 10)
    j.deleteEntriesFrom(7)  # keep positions 0..6
    assert j[-1][1] == 7
    j.add(b"new8", 8, 2)
    j.deleteEntriesTo(3)  # drop positions 0..2
    assert [e[1] for e in j.entries()] == [4, 5, 6, 7, 8]
    j.add(b"new9", 9, 2)
    j.close()
    k = open_journal(path)
    assert [e[1] for e in k.entries()] == [4, 5, 6, 7, 8, 9]
    assert k[-2] == (b"new8", 8, 2)
    k.clear()
    assert len(k) == 0
    k.add(b"x", 20, 5)
    k.close()
    assert open_journal(path).entries() == [(b"x", 20, 5)]


def test_torn_tail_truncated_with_warning(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = open_journal(path)
    fill(j, 5)
    j.close()
    size = path.stat().st_size
    with open(path, "ab") as f:  # a half-written sixth record
        f.write(b"\x00\x00\x00\x20\x12\x34")
    with structlog.testing.capture_logs() as logs:
        k = open_journal(path)
    assert len(k) == 5
    assert any(entry["event"] == "journal_torn_tail_truncated" for entry in logs)
    assert path.stat().st_size == size
    k.add(b"after", 6, 1)
    k.close()
    assert open_journal(path)[-1] == (b"after", 6, 1)


def test_invalid_last_record_truncated(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = open_journal(path)
    fill(j, 3)
    j.close()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # flip a bit in the last record's body
    path.write_bytes(bytes(data))
    assert len(open_journal(path)) == 2


def test_zero_filled_tail_is_the_end_of_the_log(tmp_path: Path) -> None:
    """Zeros after the last record (a crash after the file grew, or space written ahead) are
    where the log ends: kept, not a record, and the next append goes there."""
    path = tmp_path / "j"
    j = open_journal(path)
    fill(j, 3)
    j.close()
    with open(path, "ab") as f:
        f.write(b"\x00" * 4096)
    k = open_journal(path)
    assert len(k) == 3
    k.add(b"cmd4", 4, 1)
    k.close()
    assert [e[1] for e in open_journal(path).entries()] == [1, 2, 3, 4]


def test_mid_file_bit_flip_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = open_journal(path)
    fill(j, 5)
    j.close()
    data = bytearray(path.read_bytes())
    data[len(JOURNAL_MAGIC) + 12] ^= 0x01  # inside the first record's body
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptData, match=r"offset 8"):
        open_journal(path)


def test_bad_header_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b"NOTAJOURNALFILE!")
    with pytest.raises(CorruptData, match="header"):
        open_journal(path)


def test_meta_crc_mismatch_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = open_journal(path)
    j.setCurrentTerm(4, None)
    j.close()
    meta = path.with_name("j.meta")
    data = bytearray(meta.read_bytes())
    data[-1] ^= 0x01
    meta.write_bytes(bytes(data))
    with pytest.raises(CorruptData, match="meta"):
        open_journal(path)


def test_set_current_term_is_durable_immediately(tmp_path: Path) -> None:
    """Raft §5.1 / Figure 2: term and vote are on disk before setCurrentTerm returns."""
    path = tmp_path / "j"
    j = open_journal(path, fsync=True)
    j.setCurrentTerm(9, "127.0.0.1:5")
    # No close: a second reader sees it at once (what a restart after SIGKILL would see).
    k = open_journal(path)
    assert (k.getCurrentTerm(), k.getVotedForNodeId()) == (9, "127.0.0.1:5")
    k.close()
    j.close()


def test_sync_is_group_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = open_journal(tmp_path / "j", fsync=True)
    calls: list[int] = []
    real_sync = j._sync_log

    def counting_sync() -> None:
        calls.append(1)
        real_sync()

    monkeypatch.setattr(j, "_sync_log", counting_sync)
    fill(j, 50)
    assert calls == [] and j.durable_index == 0  # add() does not flush
    j.sync()
    j.sync()  # nothing new: no second flush
    assert len(calls) == 1 and j.durable_index == 50
    j.close()


def test_index_gap_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = open_journal(path)
    j.add(b"a", 1, 1)
    j.add(b"b", 3, 1)  # pysyncobj never does this; a file that has it was damaged
    j.add(b"c", 4, 1)
    j.close()
    with pytest.raises(CorruptData, match="gap"):
        open_journal(path)


# --- written-ahead zeros (fsync mode) and the torn-tail rule -----------------------------------


def test_fsync_mode_writes_zeros_ahead_of_the_log(tmp_path: Path) -> None:
    """In fsync mode the file holds zeros ahead of its last record (a flush never grows it);
    the log reopens in either mode, and appends continue where the records end."""
    path = tmp_path / "j"
    j = open_journal(path, fsync=True)
    fill(j, 5)
    j.sync()
    records = len(JOURNAL_MAGIC) + sum(len(encode_record(*e)) for e in j.entries())
    assert path.stat().st_size > records + PREALLOCATE_BYTES // 2
    j.close()
    assert not any(path.read_bytes()[records:])
    k = open_journal(path)  # without fsync: same log, appends go after the records
    assert len(k) == 5
    k.add(b"cmd6", 6, 1)
    k.close()
    m = open_journal(path, fsync=True)
    assert [e[1] for e in m.entries()] == [1, 2, 3, 4, 5, 6]
    m.deleteEntriesFrom(3)  # a cut takes the zeros ahead too: nothing old shows behind it
    m.add(b"x4", 4, 2)
    m.close()
    assert open_journal(path).entries()[-2:] == [(b"cmd3", 3, 1), (b"x4", 4, 2)]


@pytest.mark.parametrize("kept", [3, 8, 12, 30])
def test_torn_record_before_the_zeros_ahead_is_truncated(tmp_path: Path, kept: int) -> None:
    """A power cut in the middle of an append into written-ahead space leaves part of the
    record followed by zeros: told from the zeros by its header, truncated with a warning
    (or, cut inside its length field with only zeros read, simply where the log ends)."""
    path = tmp_path / "j"
    j = open_journal(path, fsync=True)
    fill(j, 5)
    j.close()
    data = bytearray(path.read_bytes())
    end = len(JOURNAL_MAGIC) + sum(len(encode_record(*e)) for e in open_journal(path).entries())
    torn = encode_record(b"x" * 40, 6, 1)[:kept]
    data[end:end + len(torn)] = torn
    path.write_bytes(bytes(data))
    with structlog.testing.capture_logs() as logs:
        k = open_journal(path, fsync=True)
    assert [e[1] for e in k.entries()] == [1, 2, 3, 4, 5]
    assert any(entry["event"] == "journal_torn_tail_truncated" for entry in logs) == any(torn)
    k.add(b"cmd6", 6, 1)
    k.close()
    assert open_journal(path)[-1] == (b"cmd6", 6, 1)


def test_damage_before_the_zeros_ahead_is_corrupt(tmp_path: Path) -> None:
    """An invalid record with a valid one after it is damage, not a torn append, in a log
    with zeros ahead as in one without."""
    path = tmp_path / "j"
    j = open_journal(path, fsync=True)
    fill(j, 5)
    j.close()
    data = bytearray(path.read_bytes())
    data[len(JOURNAL_MAGIC) + 12] ^= 0xFF  # inside the first record's body
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptData, match="checksum"):
        open_journal(path, fsync=True)


def _log_over_pages(path: Path, count: int) -> tuple[bytearray, list[int]]:
    """A flushed log of ``count`` records of 1,000 bytes each (four to a page), closed: its
    bytes and each record's offset."""
    j = open_journal(path, fsync=True)
    for idx in range(1, count + 1):
        j.add(bytes([idx]) * 1000, idx, 1)
    j.sync()
    j.close()
    offsets, at = [], len(JOURNAL_MAGIC)
    for idx in range(1, count + 1):
        offsets.append(at)
        at += len(encode_record(bytes([idx]) * 1000, idx, 1))
    return bytearray(path.read_bytes()), offsets


@pytest.mark.parametrize("page", [1, 2, 3])
def test_a_page_never_written_back_ends_the_log_before_it(tmp_path: Path, page: int) -> None:
    """A power cut after appends that were never flushed: writeback follows no order, so a
    later page may be on disk while an earlier one still reads as the zeros written ahead.
    Nothing from the first such page on was acknowledged (a flush covers every page written
    before it): the log ends at the record the page cuts, with a warning, and appends go on
    from there."""
    path = tmp_path / "j"
    data, offsets = _log_over_pages(path, 20)
    start = page * DISK_PAGE_BYTES
    data[start:start + DISK_PAGE_BYTES] = bytes(DISK_PAGE_BYTES)
    path.write_bytes(bytes(data))
    with structlog.testing.capture_logs() as logs:
        k = open_journal(path, fsync=True)
    kept = [i + 1 for i, o in enumerate(offsets)
            if o + len(encode_record(bytes(1000), 1, 1)) <= start]
    assert [e[1] for e in k.entries()] == kept
    assert [e["reason"] for e in logs if e["event"] == "journal_torn_tail_truncated"] != []
    k.add(b"next", kept[-1] + 1, 2)
    k.close()
    assert open_journal(path)[-1] == (b"next", kept[-1] + 1, 2)


def test_zeros_where_a_committed_entry_was_are_corrupt(tmp_path: Path) -> None:
    """The same zeroed page under a stored commit index that covers the records on it: those
    were flushed before that index was stored, so the zeros are a disk that lost a flushed
    write, not writeback that had not happened yet. The journal refuses to open rather than
    forget entries it acknowledged."""
    path = tmp_path / "j"
    _log_over_pages(path, 20)
    j = open_journal(path, fsync=True)
    j.setRaftCommitIndex(20)
    j.close()
    data = bytearray(path.read_bytes())
    start = 2 * DISK_PAGE_BYTES
    data[start:start + DISK_PAGE_BYTES] = bytes(DISK_PAGE_BYTES)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptData, match="committed entry"):
        open_journal(path, fsync=True)


def test_damage_that_is_not_an_unwritten_page_is_still_corrupt(tmp_path: Path) -> None:
    """The negative twin: the same log with bytes of that page changed, not zeroed (a page
    the disk wrote wrong), is damage: the journal refuses it, naming the offset."""
    path = tmp_path / "j"
    data, offsets = _log_over_pages(path, 20)
    start = 2 * DISK_PAGE_BYTES
    data[start:start + DISK_PAGE_BYTES] = bytes([0xA5]) * DISK_PAGE_BYTES
    path.write_bytes(bytes(data))
    first_cut = max(o for o in offsets if o < start)
    with pytest.raises(CorruptData, match=f"offset {first_cut}"):
        open_journal(path, fsync=True)


def test_a_log_written_before_zeros_ahead_still_opens(tmp_path: Path) -> None:
    """Data dirs from before: records to the end of the file, no zeros ahead, maybe a torn
    last record. They open in fsync mode, keep their entries, and grow the new way."""
    path = tmp_path / "j"
    records = [encode_record(f"old{i}".encode(), i, 1) for i in range(1, 8)]
    path.write_bytes(JOURNAL_MAGIC + b"".join(records) + records[0][:9])  # torn 8th record
    j = open_journal(path, fsync=True)
    assert [e[1] for e in j.entries()] == list(range(1, 8))
    j.add(b"new8", 8, 2)
    j.sync()
    j.close()
    k = open_journal(path)
    assert k[-1] == (b"new8", 8, 2) and k[0] == (b"old1", 1, 1)
    k.close()


def test_durable_index_follows_flushes_and_cuts(tmp_path: Path) -> None:
    """What the leader counts itself for: entries up to the last flush, never past a cut."""
    j = open_journal(tmp_path / "j", fsync=True)
    assert j.durable_index == 0
    fill(j, 3)
    assert j.durable_index == 0
    j.sync()
    fill(j, 2, start=4)
    assert j.durable_index == 3
    j.deleteEntriesFrom(1)  # keep index 1 only
    assert j.durable_index == 1 and j.truncations == 1
    j.sync()
    j.deleteEntriesTo(1)  # the prefix rewrite is flushed before it replaces the log
    assert len(j) == 0 and j.durable_index == 0
    j.add(b"a", 2, 1)
    assert j.durable_index == 1
    j.close()
    plain = open_journal(tmp_path / "k")  # without fsync the page cache is the promise
    fill(plain, 2)
    assert plain.durable_index == 2
    plain.close()


def test_stored_commit_index_never_runs_ahead_of_the_flushed_log(tmp_path: Path) -> None:
    """After a power cut the log holds only flushed entries: the commit index on disk must not
    cover the others (a restarted replica would apply entries it no longer has)."""
    path = tmp_path / "j"
    j = open_journal(path, fsync=True)
    fill(j, 5)
    j.sync()
    fill(j, 2, start=6)
    j.setRaftCommitIndex(7)
    j.onOneSecondTimer()
    assert j.getRaftCommitIndex() == 7
    assert open_journal(path).getRaftCommitIndex() == 5
    j.close()
    assert open_journal(path).getRaftCommitIndex() == 7  # closing flushed the rest


def test_a_failed_flush_is_final(tmp_path: Path) -> None:
    """After one failed flush no later flush may count: Linux reports a writeback error once
    and may drop the dirty pages, so a retried fdatasync can succeed with the data gone. The
    harness fails one flush; every later sync raises and the durable index stays put."""

    class FailsOnce(Journal):
        failures = 0

        def _sync_log(self) -> None:
            if FailsOnce.failures:
                FailsOnce.failures -= 1
                raise OSError(5, "Input/output error")
            super()._sync_log()

    j = FailsOnce(tmp_path / "j", fsync=True, record_bytes_max=RECORD_MAX)
    FailsOnce.failures = 1
    fill(j, 2)
    with pytest.raises(OSError, match="Input/output error"):
        j.sync()
    assert FailsOnce.failures == 0  # the next _sync_log would succeed ...
    fill(j, 1, start=3)
    for _ in range(3):
        with pytest.raises(OSError, match="Input/output error"):
            j.sync()  # ... but is never trusted
    assert j.durable_index == 0
    with pytest.raises(OSError, match="Input/output error"):
        j.close()  # its final flush fails the same way, and the file is closed anyway
