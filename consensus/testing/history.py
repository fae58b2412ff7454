"""Operation histories, Jepsen style: every client operation is an ``invoke`` record followed by
its completion — ``ok`` (it took effect, with what it returned; a refusal such as a version
conflict is an ``ok`` too: the operation completed and observed the state), ``fail`` (it
certainly did not take effect and observed nothing) or ``info`` (indeterminate: timed out or
the connection was lost; it may or may not have taken effect).

Records are JSON Lines, one per line, flushed as they are written, so a run that crashes keeps
everything up to its last completed line; :func:`read_history` drops a torn final line and
reports it. Times are the recorder's monotonic clock in nanoseconds (one clock per history).
:func:`to_operations` pairs the records into :class:`~consensus.checker.Operation` values for
the checker; an invocation with no completion counts as indeterminate.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from quorumboard.consensus.errors import CorruptData
from quorumboard.consensus.testing.checker import UNKNOWN, Operation
from quorumboard.consensus.testing.jsonl import read_jsonl

__all__ = [
    "FAULT_KINDS",
    "FaultEvent",
    "FaultKind",
    "HistoryWriter",
    "OpRecord",
    "pair_records",
    "read_faults",
    "read_history",
    "to_operations",
]

Kind = Literal["invoke", "ok", "fail", "info"]

RECORD_BYTES_MAX = 1 << 20
"""A history line longer than this is refused when read (a record holds one operation)."""

FaultKind = Literal["kill", "pause", "partition", "delay", "loss", "clock", "corrupt"]
FAULT_KINDS: tuple[FaultKind, ...] = ("kill", "pause", "partition", "delay", "loss", "clock",
                                      "corrupt")
EVENT_LINE_BYTES_MAX = 1 << 16
"""A fault timeline line longer than this is refused when read (a line holds one event)."""


class OpRecord(BaseModel):
    """One line of a history."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    process: str = Field(min_length=1, max_length=128)
    type: Kind
    f: str = Field(min_length=1, max_length=64)
    key: str = Field(max_length=4096)
    value: Any = None
    time_ns: int = Field(ge=0)
    error: str = Field(default="", max_length=4096)


class HistoryWriter:
    """Appends records to a JSON Lines file, flushing each one. Thread-safe: a record's index
    and its line are written under one lock, so concurrent clients never interleave."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # "x": a history is one run's evidence; appending a second run would repeat indexes
        # and mix two clocks. Raises FileExistsError if the path is taken.
        self._file: IO[str] = path.open("x", encoding="utf-8")
        self._index = 0
        self._lock = threading.Lock()

    def write(self, process: str, type: Kind, f: str, key: str, value: Any, time_ns: int,
              error: str = "") -> OpRecord:
        """Append one record; ``ValueError`` once the writer is closed."""
        with self._lock:
            record = OpRecord(index=self._index, process=process, type=type, f=f, key=key,
                              value=value, time_ns=time_ns, error=error[:4096])
            self._file.write(record.model_dump_json() + "\n")
            self._file.flush()
            self._index += 1
        return record

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def read_history(path: Path) -> tuple[list[OpRecord], str]:
    """The records of a history file, and a note if its last line was torn (dropped).

    Raises :class:`~consensus.errors.CorruptData` naming the line if any other line does not
    decode: a history is evidence, and a damaged one must not be checked silently."""
    return read_jsonl(path, lambda raw: OpRecord.model_validate(json.loads(raw)),
                      what="history record", line_bytes_max=RECORD_BYTES_MAX)


def to_operations(
    records: Iterable[OpRecord],
    convert: Callable[[OpRecord, OpRecord | None], tuple[tuple[Any, ...], Any] | None],
) -> list[Operation]:
    """Pair each process's invoke with its completion, in order, into checker operations.

    ``convert(invoke, completion)`` maps a pair to ``(input, output)`` for the key's model, or
    ``None`` to leave the operation out (a ``fail`` changed nothing and saw nothing);
    ``completion`` is ``None`` for an indeterminate operation (``info``, or no completion in the
    history), whose output the checker treats as unknown. A completion without an invoke, or
    a second invoke before a completion, is refused with ``CorruptData``."""
    ops: list[Operation] = []
    for invoke, done in pair_records(records):
        if done is not None and done.type == "fail":
            continue  # it certainly did not happen and observed nothing: not part of the check
        known = done if done is not None and done.type == "ok" else None
        pair = convert(invoke, known)
        if pair is None:
            continue
        inp, out = pair
        ret = math.inf if known is None else known.time_ns / 1e9
        ops.append(Operation(invoke.index, invoke.process, invoke.key, inp,
                             UNKNOWN if known is None else out, invoke.time_ns / 1e9, ret))
    return ops


def pair_records(records: Iterable[OpRecord]
                 ) -> Iterator[tuple[OpRecord, OpRecord | None]]:
    """Each invocation with its process's completion, in completion order; invocations still
    running when the history ends come last, with ``None``. A completion without an invoke,
    or a second invoke before a completion, raises ``CorruptData``."""
    open_calls: dict[str, OpRecord] = {}
    for rec in records:
        if rec.type == "invoke":
            if rec.process in open_calls:
                raise CorruptData(f"record {rec.index}: {rec.process} invoked twice in a row")
            open_calls[rec.process] = rec
            continue
        invoke = open_calls.pop(rec.process, None)
        if invoke is None:
            raise CorruptData(f"record {rec.index}: completion without an invoke")
        yield invoke, rec
    yield from ((invoke, None) for invoke in open_calls.values())


# ------------------------------------------------------------------ fault timelines


class FaultEvent(BaseModel):
    """One line of the fault timeline: a fault started or ended (healed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    index: int = Field(ge=0)
    phase: Literal["start", "end"]
    kind: FaultKind
    mode: str = Field(max_length=64)
    targets: list[int] = Field(default_factory=list, max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict)
    time_ns: int = Field(ge=0)
    error: str = Field(default="", max_length=4096)


def read_faults(path: Path) -> list[FaultEvent]:
    """The events of a fault timeline; a torn last line (a crashed run) is dropped. Raises
    :class:`CorruptData` naming the line of anything else that is not a valid event."""
    return read_jsonl(path, FaultEvent.model_validate_json, what="fault event",
                      line_bytes_max=EVENT_LINE_BYTES_MAX)[0]
