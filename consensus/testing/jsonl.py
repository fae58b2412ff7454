"""JSON Lines written record by record by a process that may be killed: one rule for every
reader and appender (chaos histories and fault timelines, a team run's events, a sweep's
results).

**A record is complete once its newline is written.** Whatever follows the last newline is a
torn tail, left by a writer that died mid-line: a reader skips it and says so, and a writer
about to append cuts it off first (appending to it would merge it with the next record into one
invalid line). Any *complete* line that does not parse is damage, never skipped silently: the
reader raises :class:`~quorumboard.consensus.CorruptData` naming the file and line, because
these files are evidence (a history is checked, results are published).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import structlog

from quorumboard.consensus.errors import CorruptData

__all__ = ["drop_torn_tail", "read_jsonl"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

_BLOCK_BYTES = 1 << 16


def read_jsonl(path: Path, parse: Callable[[bytes], T], *, what: str = "record",
               line_bytes_max: int | None = None) -> tuple[list[T], str]:
    """Every complete line of ``path`` parsed, and a note when a torn tail was skipped
    (``""`` otherwise). ``parse`` raises ``ValueError`` (pydantic's ``ValidationError`` is one)
    or ``TypeError`` for a line that is not a ``what``."""
    lines = path.read_bytes().split(b"\n")
    tail = lines.pop()  # the bytes after the last newline: empty when the file ends with one
    out: list[T] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            if line_bytes_max is not None and len(raw) > line_bytes_max:
                raise ValueError(f"line longer than {line_bytes_max} bytes")
            out.append(parse(raw))
        except (ValueError, TypeError) as exc:
            raise CorruptData(f"{path}: line {number} is not a {what}: {exc}") from None
    note = f"dropped a torn last line ({len(tail)} bytes)" if tail.strip() else ""
    return out, note


def drop_torn_tail(path: Path) -> int:
    """Cut ``path`` back to just after its last newline, keeping every complete record, before
    appending to it. Returns the bytes dropped (0: nothing torn, or no file)."""
    if not path.exists():
        return 0
    with path.open("rb+") as fh:
        size = fh.seek(0, 2)
        if size == 0:
            return 0
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return 0
        keep = 0
        pos = size
        for _ in range(size // _BLOCK_BYTES + 1):  # bounded: walks back over the file once
            start = max(0, pos - _BLOCK_BYTES)
            fh.seek(start)
            block = fh.read(pos - start)
            newline = block.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            pos = start
            if pos == 0:
                break
        fh.truncate(keep)
    log.warning("dropped a torn last line", file=str(path), bytes=size - keep)
    return size - keep
