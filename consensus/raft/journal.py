"""Checksummed, append-only Raft log + meta file (replaces pysyncobj's mmap FileJournal).

pysyncobj's FileJournal has no checksum, never fsyncs entries and stores its ``.meta`` with pickle.
This journal keeps pysyncobj's duck-typed interface (``add``, ``clear``, ``deleteEntriesFrom`` …)
so it can be dropped in by raft.py, without importing pysyncobj.

Log file: an 8-byte magic header, then records ``[u32 length][u32 crc32][msgpack [idx, term,
command]]`` (big-endian). Entries are also held in memory as ``(command, idx, term)`` tuples,
because pysyncobj compares them with ``!=`` against tuples, with the file offset of each record so
that ``deleteEntriesFrom`` is one ``ftruncate``.

Meta file (commit index, current term, voted-for): magic + crc32 + msgpack, replaced atomically via
tmp + rename (file and directory fsync'd in fsync mode).

Recovery on open: a torn or invalid *last* record is an append that was never acknowledged, so it is
truncated with a warning. Anything invalid before the tail, a gap in indices, or a bad meta checksum
raises :class:`CorruptData` naming file and offset: the replica refuses to start rather than serve
a log it cannot trust.

Durability (``fsync=True``): ``add`` only marks the log dirty; :meth:`Journal.sync` fsyncs once for
everything appended since (group commit). The transport calls it before any message leaves the
node, so no append or ack is visible to a peer before it is on disk. ``setCurrentTerm`` always
persists synchronously (Raft §5.1, Figure 2: term and vote are durable before replying).
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any, overload

import msgpack
import structlog

from quorumboard.consensus.core.invariant import check
from quorumboard.consensus.errors import CorruptData

__all__ = ["JOURNAL_FILE", "JOURNAL_MAGIC", "META_MAGIC", "SNAPSHOT_FILE", "Entry", "Journal"]

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


_SEAL_HEAD = struct.Struct(">I")


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
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
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
        _write_all(self._fd, record)
        self._entries.append((command, idx, term))
        self._offsets.append(self._end)
        self._end += len(record)
        self._dirty = True
        if self._sync_on_add:
            self.sync()

    def clear(self) -> None:
        """Drop every entry (pysyncobj does this before installing a snapshot)."""
        os.ftruncate(self._fd, len(JOURNAL_MAGIC))
        self._entries = []
        self._offsets = []
        self._end = len(JOURNAL_MAGIC)
        self._dirty = True

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """Drop entries at positions >= ``entryFrom`` (a follower's conflicting suffix)."""
        if entryFrom < 0:
            entryFrom = max(0, len(self._entries) + entryFrom)
        if entryFrom >= len(self._entries):
            return
        offset = self._offsets[entryFrom]
        os.ftruncate(self._fd, offset)
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._end = offset
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
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND)
        self._entries = keep
        self._offsets = offsets
        self._end = end
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
        """Persist pending meta, fsync and close; idempotent."""
        if self._closed:
            return
        try:
            if self._meta_dirty:
                self._store_meta()
            self.flush()
        finally:
            self._closed = True
            os.close(self._fd)

    def close(self) -> None:
        """Alias of :meth:`_destroy` for callers outside pysyncobj."""
        self._destroy()

    def flush(self) -> None:
        """fsync the log if anything changed since the last fsync (in any mode)."""
        if self._dirty and not self._closed:
            os.fsync(self._fd)
            self._dirty = False

    def sync(self) -> None:
        """Group commit: in fsync mode, make every append so far durable before we talk."""
        if self._fsync and self._dirty and not self._closed:
            os.fsync(self._fd)
            self._dirty = False

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        """Remembered lazily (once a second): Raft does not need the commit index durable."""
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
        # Each pass consumes one record (> 8 bytes) or stops, so at most size / 8 passes.
        while offset < size:
            entry, record_bytes, reason = self._parse_record(data, offset)
            if entry is None:
                if self._is_torn_tail(data, offset):
                    log.warning(
                        "journal_torn_tail_truncated",
                        file=str(self._path),
                        offset=offset,
                        dropped_bytes=size - offset,
                        reason=reason,
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

    def _is_torn_tail(self, data: bytes, offset: int) -> bool:
        """Is the invalid record at ``offset`` the unacknowledged last append?

        True when nothing after it could be a record: the header itself is cut, the announced
        body runs to or past end of file (with a plausible length), or the rest is zero fill
        (a crash after the file size grew but before the data reached the disk).
        """
        remaining = len(data) - offset
        if remaining < _RECORD_HEAD.size or not any(data[offset:]):
            return True
        length: int = _RECORD_HEAD.unpack_from(data, offset)[0]
        return 0 < length <= self._record_bytes_max and _RECORD_HEAD.size + length >= remaining

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
        data = seal_file(
            META_MAGIC, {"commit": self._commit_index, "term": self._term, "voted": self._voted_for}
        )
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
        self._meta_dirty = False
