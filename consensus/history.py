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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consensus.checker import UNKNOWN, Operation
from consensus.errors import CorruptData

__all__ = ["HistoryRecord", "HistoryWriter", "read_history", "to_operations"]

Kind = Literal["invoke", "ok", "fail", "info"]

RECORD_BYTES_MAX = 1 << 20
"""A history line longer than this is refused when read (a record holds one operation)."""


class HistoryRecord(BaseModel):
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
    """Appends records to a JSON Lines file, flushing each one. Not thread-safe: callers that
    record from several threads hold their own lock (the recorder in ``workload.py`` does)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # "x": a history is one run's evidence; appending a second run would repeat indexes
        # and mix two clocks. Raises FileExistsError if the path is taken.
        self._file: IO[str] = path.open("x", encoding="utf-8")
        self._index = 0

    def write(self, process: str, type: Kind, f: str, key: str, value: Any, time_ns: int,
              error: str = "") -> HistoryRecord:
        record = HistoryRecord(index=self._index, process=process, type=type, f=f, key=key,
                               value=value, time_ns=time_ns, error=error[:4096])
        self._file.write(record.model_dump_json() + "\n")
        self._file.flush()
        self._index += 1
        return record

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> HistoryWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def read_history(path: Path) -> tuple[list[HistoryRecord], str]:
    """The records of a history file, and a note if its last line was torn (dropped).

    Raises :class:`~consensus.errors.CorruptData` naming the line if any other line does not
    decode: a history is evidence, and a damaged one must not be checked silently."""
    records: list[HistoryRecord] = []
    note = ""
    with path.open("rb") as f:
        lines = f.read().split(b"\n")
    last = len(lines) - 1
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            if len(raw) > RECORD_BYTES_MAX:
                raise ValueError(f"line longer than {RECORD_BYTES_MAX} bytes")
            records.append(HistoryRecord.model_validate(json.loads(raw)))
        except (ValueError, ValidationError) as exc:
            if number - 1 == last:  # no newline after it: the writer died mid-line
                note = f"dropped a torn last line ({len(raw)} bytes)"
                break
            raise CorruptData(f"{path}: line {number} is not a history record: {exc}") from None
    return records, note


def to_operations(
    records: Iterable[HistoryRecord],
    convert: Callable[[HistoryRecord, HistoryRecord | None], tuple[tuple[Any, ...], Any] | None],
) -> list[Operation]:
    """Pair each process's invoke with its completion, in order, into checker operations.

    ``convert(invoke, completion)`` maps a pair to ``(input, output)`` for the key's model, or
    ``None`` to leave the operation out (a ``fail`` changed nothing and saw nothing);
    ``completion`` is ``None`` for an indeterminate operation (``info``, or no completion in the
    history), whose output the checker treats as unknown. A completion without an invoke, or
    a second invoke before a completion, is refused with ``CorruptData``."""
    open_calls: dict[str, HistoryRecord] = {}
    ops: list[Operation] = []

    def add(invoke: HistoryRecord, done: HistoryRecord | None) -> None:
        pair = convert(invoke, done)
        if pair is None:
            return
        inp, out = pair
        ret = math.inf if done is None else done.time_ns / 1e9
        ops.append(Operation(invoke.index, invoke.process, invoke.key, inp,
                             UNKNOWN if done is None else out, invoke.time_ns / 1e9, ret))

    for rec in records:
        if rec.type == "invoke":
            if rec.process in open_calls:
                raise CorruptData(f"record {rec.index}: {rec.process} invoked twice in a row")
            open_calls[rec.process] = rec
            continue
        invoke = open_calls.pop(rec.process, None)
        if invoke is None:
            raise CorruptData(f"record {rec.index}: completion without an invoke")
        if rec.type == "ok":
            add(invoke, rec)
        elif rec.type == "info":
            add(invoke, None)
        # "fail": it certainly did not happen and observed nothing: not part of the check
    for invoke in open_calls.values():  # the run ended (or crashed) while these were running
        add(invoke, None)
    return ops
