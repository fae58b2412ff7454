"""Checksummed, append-only Raft log + meta file (replaces pysyncobj's mmap FileJournal).

pysyncobj's FileJournal has no checksum, never fsyncs entries and stores its ``.meta`` with pickle.
This journal keeps pysyncobj's duck-typed interface (``add``, ``clear``, ``deleteEntriesFrom`` …)
so it can be dropped in by raft.py, without importing pysyncobj.

Log file: an 8-byte magic header, then records ``[u32 length][u32 crc32][msgpack [idx, term,
command]]`` (big-endian), then, in fsync mode, zeros: space written ahead
(:data:`PREALLOCATE_BYTES` at a time) so that flushing a record never changes the file's size or
block map, which would make every flush a filesystem-journal commit (measured on ext4 with three
replicas flushing at once: a flush costs several times more when the file grows with it). Zeros
are never a record (a record's length is > 0), so the log ends at the first record whose rest of
file is zeros; a file without that space (written before it existed, or without fsync) reads the
same. Entries are also held in memory as ``(command, idx, term)`` tuples, because pysyncobj
compares them with ``!=`` against tuples, with the file offset of each record so that
``deleteEntriesFrom`` is one ``ftruncate``.

Meta file (commit index, current term, voted-for): magic + crc32 + msgpack, replaced atomically via
tmp + rename (file and directory fsync'd in fsync mode).

Recovery on open: a torn or invalid *last* record is an append that was never acknowledged, so it is
truncated with a warning; "last" means that the file holds nothing but zeros after the space
the record claims, so a torn record is told from the written-ahead zeros that follow it. So is
an invalid record on a page the disk never wrote back (zeros from the record, or from a page
boundary inside it, to the page's end), with everything after it: writeback follows no order,
so after a power cut a later page may be on disk when an earlier one is not, but a flush
covers every page written before it, so nothing from that page on was acknowledged. Anything
else invalid before the tail, a gap in indices, or a bad meta checksum raises
:class:`CorruptData` naming file and offset: the replica refuses to start rather than serve a
log it cannot trust.

Durability (``fsync=True``): ``add`` only writes (the kernel's page cache holds it);
:meth:`Journal.sync` makes every record appended since the last sync durable with one
``fdatasync`` (group commit: one flush covers every client's entries of a tick) and moves
:attr:`Journal.durable_index`. The Raft layer decides when (consensus/raft/_pysyncobj.py): a
follower syncs before it acknowledges an append, a leader syncs after its AppendEntries are on
the wire and counts itself toward a commit majority only up to ``durable_index`` (Raft thesis
§10.2.1: the leader writes its log in parallel with replicating it). Opening a journal in fsync
mode syncs it once: what a restarted process reads may still be only in the page cache, and it
must not acknowledge that as durable. ``setCurrentTerm`` always persists synchronously (Raft
§5.1, Figure 2: term and vote are durable before replying).

Every flush and every truncation of the log goes through :meth:`Journal._sync_log` and
:meth:`Journal._truncate_log`: the test harness's power-cut disk
(consensus/testing/powercut.py) overrides them to know what a power cut would keep.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any, Final, overload

import msgpack
import structlog

from quorumboard.consensus.core.invariant import check
from quorumboard.consensus.errors import CorruptData

__all__ = ["JOURNAL_FILE", "JOURNAL_MAGIC", "META_MAGIC", "PREALLOCATE_BYTES", "SNAPSHOT_FILE",
           "Entry", "Journal"]

log = structlog.get_logger(__name__)

Entry = tuple[bytes, int, int]  # (command, idx, term): pysyncobj's in-memory entry shape

JOURNAL_FILE = "raft.journal"
"""A replica's Raft log in its data dir (its meta file is this name + ``.meta``)."""
SNAPSHOT_FILE = "raft.snapshot"
"""A replica's last snapshot (full dump) in its data dir."""
JOURNAL_MAGIC = b"QBJRNL01"
META_MAGIC = b"QBMETA01"
_RECORD_HEAD = struct.Struct(">II")
_META_BYTES_MAX = 64 * 1024
_DEFAULT_COMMIT_INDEX = 1  # pysyncobj's default: index 1 is the initial no-op
PREALLOCATE_BYTES = 1 << 20
"""How far ahead of its last record a journal in fsync mode writes zeros (at most this much
disk per replica beyond the log itself; one filesystem-journal commit per this many bytes)."""


_SEAL_HEAD = struct.Struct(">I")
_datasync = getattr(os, "fdatasync", os.fsync)
"""``fdatasync`` where the OS has it: it flushes the data and the size (what reading the log
back needs), not timestamps, so it writes less than ``fsync``."""


def seal_file(magic: bytes, obj: object) -> bytes:
    """File bytes for ``obj``: ``magic`` + crc32 of the body + msgpack body (meta, snapshots)."""
    body: bytes = msgpack.packb(obj, use_bin_type=True)
    return magic + _SEAL_HEAD.pack(zlib.crc32(body)) + body


def unseal_file(data: bytes, magic: bytes, where: str, what: str) -> Any:
    """Verify and decode :func:`seal_file` bytes; :class:`CorruptData` names ``where`` (the
    file), ``what`` it holds and the offset of the problem."""
    head = len(magic) + _SEAL_HEAD.size
    if len(data) < head or data[: len(magic)] != magic:
        raise CorruptData(f"{where}: bad {what} header at offset 0")
    (crc,) = _SEAL_HEAD.unpack_from(data, len(magic))
    body = data[head:]
    if zlib.crc32(body) != crc:
        raise CorruptData(f"{where}: {what} checksum mismatch")
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True, max_ext_len=0)
    except Exception as exc:
        raise CorruptData(f"{where}: undecodable {what}") from exc


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or create inside it survives power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    # os.write may write less than asked; each pass writes at least one byte or raises.
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_all_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    # os.pwrite may write less than asked; each pass writes at least one byte or raises.
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


_ZERO_SCAN_BYTES = 1 << 16


def _content_end(data: bytes) -> int:
    """Where the trailing zeros of ``data`` begin (nothing from there on is a record)."""
    end = len(data)
    # Scans backwards a chunk at a time: about PREALLOCATE_BYTES / _ZERO_SCAN_BYTES passes.
    while end > 0:
        start = max(0, end - _ZERO_SCAN_BYTES)
        kept = len(data[start:end].rstrip(b"\0"))
        if kept:
            return start + kept
        end = start
    return 0


DISK_PAGE_BYTES: Final = 4096
"""The unit in which the page cache writes a file back. After a power cut each page written
since the last flush holds either what was written or what the disk had before (zeros, in the
space written ahead), in any combination: writeback follows no order."""


def _unwritten_page(data: bytes, start: int, end: int) -> bool:
    """Whether the record in ``data[start:end]`` lies (in part) on a page the disk never wrote
    back: zeros from ``start``, or from a page boundary inside the record, to the page's end
    (or the file's), at least a record header long. A flush covers every page written before
    it, so such a page was written after the last flush, and so was every record after it:
    none of them was ever acknowledged, and the log ends before this record. (A record whose
    own bytes hold a page's worth of zeros is told apart only by its checksum: a record that
    both holds such zeros and is damaged elsewhere would be taken for unwritten.)"""
    at = start
    # Bounded: each pass moves to the next page boundary, at most end / DISK_PAGE_BYTES passes.
    while at < end:
        page_end = min(len(data), (at // DISK_PAGE_BYTES + 1) * DISK_PAGE_BYTES)
        if page_end - at >= _RECORD_HEAD.size and not any(data[at:page_end]):
            return True
        at = page_end
    return False


def encode_record(command: bytes, idx: int, term: int) -> bytes:
    """One log record: length, crc32 of the body, msgpack body."""
    body = bytes(msgpack.packb([idx, term, command], use_bin_type=True))
    return _RECORD_HEAD.pack(len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> Entry | None:
    try:
        fields = msgpack.unpackb(
            body, raw=False, use_list=True, max_array_len=3, max_map_len=0, max_ext_len=0
        )
    except Exception:
        return None
    if not isinstance(fields, list) or len(fields) != 3:
        return None
    idx, term, command = fields
    if type(idx) is not int or type(term) is not int or not isinstance(command, bytes):
        return None
    if idx < 0 or term < 0:
        return None
    return (command, idx, term)


class Journal:
    """pysyncobj-compatible journal with crc'd records, group-commit fsync and safe recovery."""

    def __init__(
        self, path: Path, *, fsync: bool, record_bytes_max: int, sync_on_add: bool = False
    ) -> None:
        self._path = Path(path)
        self._meta_path = self._path.with_name(self._path.name + ".meta")
        self._dir = self._path.parent
        self._fsync = fsync
        self._sync_on_add = sync_on_add
        self._record_bytes_max = record_bytes_max
        self._entries: list[Entry] = []
        self._offsets: list[int] = []
        self._end = len(JOURNAL_MAGIC)
        self._dirty = False
        self._closed = False
        self._dir.mkdir(parents=True, exist_ok=True)
        self._load_log()
        self._fd = os.open(self._path, os.O_WRONLY)
        self._allocated = os.fstat(self._fd).st_size  # records end at _end, zeros up to here
        # Entries (a prefix of the log) known to be on disk. Without fsync the page cache is
        # all we promise, so every entry counts.
        self._durable = len(self._entries)
        self._truncations = 0
        self._flush_error: OSError | None = None  # the first failed flush, final (_flush_now)
        if fsync:
            self._dirty = True
            self.sync()
        meta = self._load_meta()
        self._commit_index: int = meta["commit"]
        self._term: int = meta["term"]
        self._voted_for: str | None = meta["voted"]
        self._meta_dirty = False

    # --- pysyncobj Journal interface ----------------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        """Append one entry (durable at the next :meth:`sync` in fsync mode)."""
        check(not self._closed, "journal is closed")
        command = bytes(command)
        record = encode_record(command, idx, term)
        if self._fsync and self._end + len(record) > self._allocated:
            self._preallocate(self._end + len(record) + PREALLOCATE_BYTES)
        _write_all_at(self._fd, record, self._end)
        self._entries.append((command, idx, term))
        self._offsets.append(self._end)
        self._end += len(record)
        self._dirty = True
        if not self._fsync:
            self._durable = len(self._entries)
        elif self._sync_on_add:
            self.sync()

    def clear(self) -> None:
        """Drop every entry (pysyncobj does this before installing a snapshot)."""
        self._truncate_log(len(JOURNAL_MAGIC))
        self._entries = []
        self._offsets = []
        self._end = len(JOURNAL_MAGIC)
        self._durable = 0
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Drop entries at positions >= ``entryFrom`` (a follower's conflicting suffix)."""
        if entryFrom < 0:
            entryFrom = max(0, len(self._entries) + entryFrom)
        if entryFrom >= len(self._entries):
            return
        offset = self._offsets[entryFrom]
        self._truncate_log(offset)
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._end = offset
        self._durable = min(self._durable, entryFrom)
        self._dirty = True

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Drop entries at positions < ``entryTo`` (after a snapshot) by an atomic rewrite.

        The directory is fsync'd first: the snapshot pysyncobj just renamed into place lives in
        the same directory and must be durable before the prefix it covers disappears.
        """
        if entryTo <= 0:
            return
        keep = self._entries[entryTo:]
        fsync_dir(self._dir)
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        offsets: list[int] = []
        end = len(JOURNAL_MAGIC)
        try:
            chunks = [JOURNAL_MAGIC]
            for command, idx, term in keep:
                record = encode_record(command, idx, term)
                offsets.append(end)
                end += len(record)
                chunks.append(record)
            _write_all(fd, b"".join(chunks))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.close(self._fd)
        os.replace(tmp, self._path)
        fsync_dir(self._dir)
        self._fd = os.open(self._path, os.O_WRONLY)
        self._allocated = end
        self._entries = keep
        self._offsets = offsets
        self._end = end
        self._durable = len(keep)
        self._dirty = False

    @overload
    def __getitem__(self, item: int) -> Entry: ...
    @overload
    def __getitem__(self, item: slice) -> list[Entry]: ...
    def __getitem__(self, item: int | slice) -> Entry | list[Entry]:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        """Flush the log, persist pending meta and close; idempotent."""
        if self._closed:
            return
        try:
            self.flush()  # the log first: the commit index stored next may then cover it all
            if self._meta_dirty:
                self._store_meta()
        finally:
            self._closed = True
            os.close(self._fd)

    def close(self) -> None:
        """Alias of :meth:`_destroy` for callers outside pysyncobj."""
        self._destroy()

    def flush(self) -> None:
        """Flush the log if anything changed since the last flush (in any mode)."""
        if self._dirty and not self._closed:
            self._flush_now()

    def sync(self) -> None:
        """Group commit: in fsync mode, make every append so far durable with one flush
        (nothing to do if nothing changed since the last one)."""
        if self._fsync and self._dirty and not self._closed:
            self._flush_now()

    def _flush_now(self) -> None:
        """One flush; on success every entry so far is durable.

        A failed flush is final for this open journal: every later flush raises the same
        error and :attr:`durable_index` never moves again. Retrying is not safe: Linux reports
        a writeback error once and may already have dropped the dirty pages, so a second
        ``fdatasync`` can succeed with the data gone, and the replica would then acknowledge
        entries that are not on disk (PostgreSQL stops on a failed fsync for the same reason).
        The replica acknowledges nothing more until it is restarted and rereads its disk."""
        if self._flush_error is not None:
            raise self._flush_error
        try:
            self._sync_log()
        except OSError as exc:
            self._flush_error = exc
            log.critical("raft_log_flush_failed", path=str(self._path), error=str(exc),
                         effect="nothing more is acknowledged until the replica restarts")
            raise
        self._dirty = False
        self._durable = len(self._entries)

    @property
    def durable_index(self) -> int:
        """The Raft index up to which every entry is on disk (fsync mode; without fsync, the
        last index: the page cache is all that mode promises). Below the first entry's index
        when none is: the leader counts itself toward a commit majority only up to here."""
        if self._durable:
            return self._entries[self._durable - 1][1]
        return self._entries[0][1] - 1 if self._entries else 0

    @property
    def truncations(self) -> int:
        """How many times a suffix of the log was cut since it was opened: an acknowledgement
        prepared before a cut may speak of entries that are gone."""
        return self._truncations

    def _sync_log(self) -> None:
        """Flush the log file to disk: every durability point of the log comes here."""
        _datasync(self._fd)

    def _truncate_log(self, size_bytes: int) -> None:
        """Cut the log file to ``size_bytes`` (conflicting suffix, snapshot install). The
        written-ahead zeros go too: what follows a cut must read as zeros, never as the old
        records that were there."""
        os.ftruncate(self._fd, size_bytes)
        self._allocated = size_bytes
        self._truncations += 1

    def _preallocate(self, size_bytes: int) -> None:
        """Write zeros from the end of the file to ``size_bytes``. Zeros, not ``fallocate``:
        space allocated but never written is marked so in the file's block map, and the first
        write into it changes that map, which is the filesystem-journal commit this avoids.
        The next flush makes the zeros durable along with the record that needed them."""
        _write_all_at(self._fd, bytes(size_bytes - self._allocated), self._allocated)
        self._allocated = size_bytes

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        """Remembered lazily (once a second): Raft does not need the commit index durable.

        In fsync mode the stored value never runs ahead of :attr:`durable_index`: after a power
        cut the log holds only its flushed entries, and a commit index past them would have a
        restarted replica apply (or, leading, count as committed) entries it no longer has, or
        the older ones a cut suffix had replaced."""
        if raftCommitIndex != self._commit_index:
            self._commit_index = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        return self._commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        """Persist term and vote before returning (Raft §5.1, Figure 2)."""
        check(votedForNodeId is None or isinstance(votedForNodeId, str), "vote must be an address")
        self._term = term
        self._voted_for = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return self._term

    def getVotedForNodeId(self) -> str | None:
        return self._voted_for

    def onOneSecondTimer(self) -> None:
        if self._meta_dirty and not self._closed:
            self._store_meta()

    # --- helpers for raft.py and tests --------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    @property
    def meta_path(self) -> Path:
        return self._meta_path

    def entries(self) -> list[Entry]:
        """A copy of the in-memory log."""
        return list(self._entries)

    @property
    def size_bytes(self) -> int:
        """The log file's size: what compaction by bytes compares with its threshold (the
        entries held in memory are about as large)."""
        return self._end

    # --- loading ------------------------------------------------------------------------------

    def _create_empty(self) -> None:
        fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, JOURNAL_MAGIC)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(self._dir)

    def _load_log(self) -> None:
        if not self._path.exists():
            self._create_empty()
            return
        data = self._path.read_bytes()
        if len(data) < len(JOURNAL_MAGIC):
            # Creation writes the header before anything else, so a short header means no entry
            # was ever appended: recreate it.
            if JOURNAL_MAGIC.startswith(data) or not any(data):
                log.warning("journal_header_torn", file=str(self._path), size_bytes=len(data))
                self._create_empty()
                return
            raise CorruptData(f"{self._path}: bad journal header at offset 0")
        if data[: len(JOURNAL_MAGIC)] != JOURNAL_MAGIC:
            raise CorruptData(f"{self._path}: bad journal header at offset 0")
        offset = len(JOURNAL_MAGIC)
        size = len(data)
        content_end = _content_end(data)
        # Each pass consumes one record (> 8 bytes) or stops, so at most size / 8 passes.
        while offset < size:
            if offset >= content_end:
                break  # written-ahead space (or a crash's zero fill): the log ends here
            entry, record_bytes, reason = self._parse_record(data, offset)
            if entry is None:
                torn = self._is_torn_tail(data, offset, content_end)
                unwritten = not torn and _unwritten_page(
                    data, offset, self._record_span(data, offset))
                if unwritten and self._entries and self._entries[-1][1] < self._stored_commit():
                    # Committed entries were flushed before the commit index that covers them
                    # was stored: zeros where one of them was are a disk that lost a flushed
                    # write, never a page that was not written back yet.
                    raise CorruptData(
                        f"{self._path}: zeros at offset {offset}, where the log must hold "
                        f"committed entry {self._entries[-1][1] + 1} (stored commit index "
                        f"{self._stored_commit()})")
                if unwritten or torn:
                    log.warning(
                        "journal_torn_tail_truncated",
                        file=str(self._path),
                        offset=offset,
                        dropped_bytes=size - offset,
                        reason=reason + (", a page never written back" if unwritten else ""),
                    )
                    with open(self._path, "r+b") as f:
                        f.truncate(offset)
                        f.flush()
                        os.fsync(f.fileno())
                    break
                raise CorruptData(f"{self._path}: {reason} at offset {offset}")
            if self._entries and entry[1] != self._entries[-1][1] + 1:
                raise CorruptData(
                    f"{self._path}: index gap ({self._entries[-1][1]} then {entry[1]}) "
                    f"at offset {offset}"
                )
            self._entries.append(entry)
            self._offsets.append(offset)
            offset += record_bytes
        self._end = min(offset, size)

    def _parse_record(self, data: bytes, offset: int) -> tuple[Entry | None, int, str]:
        remaining = len(data) - offset
        if remaining < _RECORD_HEAD.size:
            return None, 0, "truncated record header"
        length, crc = _RECORD_HEAD.unpack_from(data, offset)
        if length == 0 or length > self._record_bytes_max:
            return None, 0, f"record length {length} out of bounds"
        if length > remaining - _RECORD_HEAD.size:
            return None, 0, "truncated record body"
        body = data[offset + _RECORD_HEAD.size : offset + _RECORD_HEAD.size + length]
        if zlib.crc32(body) != crc:
            return None, 0, "record checksum mismatch"
        entry = _decode_body(body)
        if entry is None:
            return None, 0, "undecodable record"
        return entry, _RECORD_HEAD.size + length, ""

    def _stored_commit(self) -> int:
        """The commit index in the meta file (read before the log's own state is set)."""
        commit: int = self._load_meta()["commit"]
        return commit

    def _record_span(self, data: bytes, offset: int) -> int:
        """Where the record at ``offset`` ends by its header (just the header if the length it
        announces is impossible), within ``data``."""
        if len(data) - offset < _RECORD_HEAD.size:
            return len(data)
        length: int = _RECORD_HEAD.unpack_from(data, offset)[0]
        if not 0 < length <= self._record_bytes_max:
            return offset + _RECORD_HEAD.size
        return min(len(data), offset + _RECORD_HEAD.size + length)

    def _is_torn_tail(self, data: bytes, offset: int, content_end: int) -> bool:
        """Is the invalid record at ``offset`` the unacknowledged last append?

        True when nothing after it could be a record: the header itself is cut, or the header
        announces a plausible length and the file ends within that length or holds only zeros
        after it (the written-ahead space a torn last append leaves as it was). Anything else
        after an invalid record (a later record) means damage inside the log: not torn.
        """
        remaining = len(data) - offset
        if remaining < _RECORD_HEAD.size:
            return True
        length: int = _RECORD_HEAD.unpack_from(data, offset)[0]
        end = offset + _RECORD_HEAD.size + length
        return 0 < length <= self._record_bytes_max and end >= content_end

    def _load_meta(self) -> dict[str, Any]:
        defaults: dict[str, Any] = {"commit": _DEFAULT_COMMIT_INDEX, "term": 0, "voted": None}
        try:
            data = self._meta_path.read_bytes()
        except FileNotFoundError:
            return defaults
        if len(data) > _META_BYTES_MAX:
            raise CorruptData(f"{self._meta_path}: meta larger than {_META_BYTES_MAX} bytes")
        meta = unseal_file(data, META_MAGIC, str(self._meta_path), "meta")
        if not isinstance(meta, dict):
            raise CorruptData(f"{self._meta_path}: meta is not a map")
        commit, term, voted = meta.get("commit"), meta.get("term"), meta.get("voted")
        if type(commit) is not int or type(term) is not int:
            raise CorruptData(f"{self._meta_path}: meta fields invalid")
        if voted is not None and not isinstance(voted, str):
            raise CorruptData(f"{self._meta_path}: meta vote invalid")
        return {"commit": commit, "term": term, "voted": voted}

    def _store_meta(self) -> None:
        commit = self._commit_index
        if self._fsync and self._entries:
            commit = min(commit, self.durable_index)
        data = seal_file(META_MAGIC, {"commit": commit, "term": self._term,
                                      "voted": self._voted_for})
        tmp = self._meta_path.with_name(self._meta_path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, data)
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._meta_path)
        if self._fsync:
            fsync_dir(self._dir)
        self._meta_dirty = commit != self._commit_index  # store the rest once it is flushed
