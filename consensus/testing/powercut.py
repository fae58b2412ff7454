"""A disk that loses power: every write to a replica's Raft log not yet flushed is dropped.

A SIGKILL cannot test durability: the kernel's page cache keeps every write a killed process
made, so a log that was never flushed survives it whole. A power cut (or a kernel crash) keeps
only what a flush (``fdatasync``) reached the disk with. This module models that for the one
file whose writes wait for a flush, the Raft log (consensus/raft/journal.py); the journal's
other files (its meta file, the snapshot) are written to a temporary name, flushed and renamed
with the directory flushed, so each is durable the moment it replaces the old one.

* :class:`PowerCutJournal`, a :class:`~quorumboard.consensus.raft.journal.Journal` whose every
  flush also copies the log's bytes, up to its last record, to ``raft.journal.durable`` next
  to it: the disk's contents as of that flush. It overrides the journal's flush and
  truncation points (``_sync_log``, ``_truncate_log``) and its prefix rewrite; nothing in
  production code knows of it.
* :func:`cut_power` (called while the replica is down) puts that image back in place of the
  log: writes after the last flush are gone, except, if asked, some of them: either a random
  prefix (written back in order, stopped anywhere, so the last record kept may be torn) or a
  random set of their pages (written back in any order, so a record may be missing with a
  later one on disk).
* :class:`PowerCutCluster`, a :class:`~quorumboard.consensus.cluster.LocalCluster` whose
  replica processes run on that journal (the harness's entry point,
  ``python -m quorumboard.consensus.testing.replica --power-cut``) and whose
  :meth:`PowerCutCluster.power_cut` SIGKILLs a replica and cuts its power.
* The negative control, planted bug ``unsynced-acks`` (:class:`UnsyncedAcksJournal`): a
  journal that reports every append durable at once and leaves the flush to the operating
  system's periodic writeback (every :data:`WRITEBACK_INTERVAL_S`); so a replica acknowledges
  appends before they are on disk, and a leader counts itself for entries it has not flushed.
  Power cuts must catch it losing acknowledged writes.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any, Final

from quorumboard.consensus.cluster import TESTING_REPLICA_MODULE, LocalCluster
from quorumboard.consensus.raft.journal import DISK_PAGE_BYTES, JOURNAL_FILE, Journal
from quorumboard.consensus.raft.node import RaftNode

__all__ = [
    "DURABLE_SUFFIX",
    "PowerCutCluster",
    "PowerCutJournal",
    "UnsyncedAcksJournal",
    "cut_power",
    "on_power_cut_disk",
]

DURABLE_SUFFIX: Final = ".durable"
"""The durable image of a log is kept next to it under its name + this suffix."""
_NOTHING_CHANGED: Final = sys.maxsize
WRITEBACK_INTERVAL_S: Final = 5
"""How often the planted bug's log reaches the disk (Linux's default writeback interval)."""


class PowerCutJournal(Journal):
    """A journal that keeps, next to its log, the log as the disk holds it after each flush.

    Every flush of the log comes through ``_sync_log`` (group commits, the flush on open, on
    close), and every cut of its end through ``_truncate_log``: after a flush the image is
    brought up to the log's last record, copying only what changed since the previous one
    (from the lowest cut, or from the image's end). The first flush of a process copies
    everything, since it also flushes what an earlier process of the replica left unflushed.
    The prefix rewrite after a snapshot flushes the new log before it replaces the old one, so
    the image follows it at once. The image is written through the page cache, which a
    SIGKILL of the replica does not lose; only :func:`cut_power` ever reads it."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        self._image_path = Path(path).with_name(Path(path).name + DURABLE_SUFFIX)
        self._image_end = 0
        self._changed_from = 0  # the first flush copies the whole log
        super().__init__(path, **kwargs)
        if not self._image_path.exists():  # first start: the log as created is on disk
            self._update_image()

    def _sync_log(self) -> None:
        super()._sync_log()
        self._update_image()

    def _truncate_log(self, size_bytes: int) -> None:
        super()._truncate_log(size_bytes)
        self._changed_from = min(self._changed_from, size_bytes)

    def deleteEntriesTo(self, entryTo: int) -> None:
        super().deleteEntriesTo(entryTo)
        self._changed_from = 0
        self._update_image()

    def _update_image(self) -> None:
        start, end = min(self._changed_from, self._image_end), self._end
        with open(self.path, "rb") as log_file:
            log_file.seek(start)
            data = log_file.read(max(0, end - start))
        fd = os.open(self._image_path, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            offset = start
            while view:  # each pass writes at least one byte or raises
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            os.ftruncate(fd, end)
        finally:
            os.close(fd)
        self._image_end, self._changed_from = end, _NOTHING_CHANGED


class UnsyncedAcksJournal(Journal):
    """Planted bug ``unsynced-acks``: every append counts as durable at once (so the replica
    acknowledges it, and a leader counts itself for it), and the log is flushed only every
    :data:`WRITEBACK_INTERVAL_S` seconds (on the journal's one-second timer), as an operating
    system's writeback would."""

    _seconds = 0

    def sync(self) -> None:
        self._durable = len(self._entries)

    def onOneSecondTimer(self) -> None:
        super().onOneSecondTimer()
        self._seconds += 1
        if self._seconds % WRITEBACK_INTERVAL_S == 0:
            self.flush()


def on_power_cut_disk(raft_class: type[RaftNode]) -> type[RaftNode]:
    """``raft_class`` with its journal on the power-cut disk (any planted journal bug kept)."""
    journal = raft_class.journal_class
    if not issubclass(journal, PowerCutJournal):
        journal = type(f"PowerCut{journal.__name__}", (PowerCutJournal, journal), {})
    return type(f"PowerCut{raft_class.__name__}", (raft_class,), {"journal_class": journal})


def cut_power(data_dir: Path, rng: random.Random | None = None) -> None:
    """Leave a replica's log as a power cut would have: what was written after its last flush
    is gone. With ``rng``, some of those writes stay (the disk had written them back): half
    the time a random prefix, whose last record may be torn (the journal's torn-tail rule must
    tell it from the zeros written ahead of the log); otherwise a random set of their pages,
    so a record may read as zeros with later ones intact (the journal must end the log at the
    first page never written back, not refuse to open). The file keeps its size, zero-filled, as the
    space written ahead would. Only while the replica is down; a log never flushed under
    :class:`PowerCutJournal` (no image) is left as it is."""
    log_path = data_dir / JOURNAL_FILE
    image_path = log_path.with_name(log_path.name + DURABLE_SUFFIX)
    if not log_path.exists() or not image_path.exists():
        return
    durable, written = image_path.read_bytes(), log_path.read_bytes()
    kept = bytearray(durable)
    if rng is not None and written.startswith(durable):  # since then only appended
        records_end = len(written.rstrip(b"\0"))  # the records, not the zeros ahead
        if rng.random() < 0.5:  # written back in order, stopped anywhere
            kept = bytearray(written[:len(durable) + rng.randrange(
                max(0, records_end - len(durable)) + 1)])
        else:  # written back in any order: each page since the flush there or not
            kept = _random_pages(durable, written[:records_end], rng)
    tmp = log_path.with_name(log_path.name + ".cut")
    tmp.write_bytes(bytes(kept) + bytes(max(0, len(written) - len(kept))))
    os.replace(tmp, log_path)


def _random_pages(durable: bytes, written: bytes, rng: random.Random) -> bytearray:
    """``written`` where each page (:data:`DISK_PAGE_BYTES`) holding bytes past ``durable``
    was written back, and as the disk had it before (``durable``, then zeros) where not."""
    disk = bytearray(durable) + bytes(max(0, len(written) - len(durable)))
    first = len(durable) // DISK_PAGE_BYTES * DISK_PAGE_BYTES
    # Bounded by the pages of the unflushed writes.
    for start in range(first, len(written), DISK_PAGE_BYTES):
        if rng.random() < 0.5:
            end = min(len(written), start + DISK_PAGE_BYTES)
            disk[start:end] = written[start:end]
    return disk


class PowerCutCluster(LocalCluster):
    """A :class:`LocalCluster` (replica processes only) whose replicas keep their Raft log on
    the power-cut disk; ``planted_bug`` may name any planted bug, ``unsynced-acks`` among
    them. Use with ``fsync=True``: without it nothing is flushed, and a power cut loses the
    whole log after the first flush on open."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("embedded"):
            raise ValueError("a power cut needs replica processes: embedded=False")
        super().__init__(*args, **kwargs)

    def _replica_command(self) -> list[str]:
        command = [sys.executable, "-m", TESTING_REPLICA_MODULE, "--power-cut"]
        if self._planted_bug is not None:
            command += ["--planted-bug", self._planted_bug]
        return command

    def power_cut(self, i: int, rng: random.Random | None = None) -> None:
        """Replica ``i`` loses power: SIGKILLed, and its log cut back to its last flush (with
        ``rng``, a random prefix of the unflushed writes kept; see :func:`cut_power`). It stays
        down until :meth:`restart`."""
        self.kill(i)
        cut_power(self.data_dir / f"r{i}", rng)
