"""The event log of one team run (``events.jsonl``): every reply, board action and fault.

Events are logged precisely enough that every metric is a recount of this file (the study's
released data needed recounts; ours never should): :mod:`agents.metrics` computes all per-run
figures from these records alone.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from quorumboard.consensus.testing import read_jsonl

__all__ = ["EVENT_KINDS", "EventKind", "EventLog", "RunEvent", "read_events"]

EventKind = Literal[
    "run_start",         # data: the run spec
    "round_start",       # a synchronous round begins (round-synchronous runs only)
    "reply",             # agent's brain answered: latency_s, tokens_in, tokens_out, data.actions,
                         # data.effective (did any action succeed), data.late (missed its round)
    "claim",             # agent now owns task (fence = its fencing token)
    "claim_blocked",     # claim refused: a dependency of task is not done
    "claim_held",        # claim refused: another agent holds task (target = holder)
    "assign",            # agent (coordinator / lead / monitor) assigned task to target
    "write",             # committed write of file: version after, base_version seen, passes
    "write_rejected",    # write refused by the board: reason = stale | fenced | policy
    "complete",          # task marked done by agent (reason "repeat": done again, study harness)
    "complete_refused",  # reason = not-owner | no-passing-write | fenced | stale
    "tests",             # agent ran the tests (study harness): passes, data.test_s
    "message",           # agent posted a message (target = addressee or None)
    "idle",              # the reply did nothing (reason)
    "invalid",           # an action that did not validate or named an unknown task/file
    "claim_lost",        # agent found its claim on task gone (lease lapsed / fenced out)
    "expired",           # agent silent for claim_ttl_s: its claims' leases end (data.tasks)
    "stall",             # agent stops replying (data.tasks = tasks it was working on, i.e. had
                         # claimed; data.assigned = tasks only assigned to it)
    "resume",            # a stalled agent replies again
    "crash",             # agent gone for good (data.tasks / data.assigned as for stall)
    "takeover",          # agent took task from a stale owner (target = the previous owner)
    "board_fault",       # the harness injected a board fault (reason = what)
    "board_heal",        # the harness undid a board fault (restart, heal)
    "board_error",       # a board call failed (reason = error class); the action is lost
    "run_end",           # data: success, tasks_done, board_ops, wall_s, lost (work lost)
]
EVENT_KINDS: tuple[str, ...] = EventKind.__args__  # type: ignore[attr-defined]


class RunEvent(BaseModel):
    """One event. ``t_s`` is the run's (virtual, for simulated brains) time in seconds;
    ``round`` the synchronous round (0 in asynchronous runs: see ``t_s``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    t_s: float = Field(ge=0)
    round: int = Field(default=0, ge=0)
    kind: EventKind
    agent: str | None = None
    task: str | None = None
    file: str | None = None
    target: str | None = None
    version: int | None = None
    base_version: int | None = None
    """For a write: the file's version in the writer's view when it decided (0 = absent)."""
    fence: int | None = None
    passes: bool | None = None
    latency_s: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    reason: str | None = None
    data: dict[str, Any] | None = None


class EventLog:
    """Appends events to ``events.jsonl`` (one JSON object a line, flushed per event, so a
    crashed run leaves a readable prefix) and keeps them in memory for the metrics."""

    def __init__(self, path: Path | None) -> None:
        self.events: list[RunEvent] = []
        self._lock = threading.Lock()
        self._file = path.open("w", encoding="utf-8") if path is not None else None

    def add(self, event: RunEvent) -> RunEvent:
        with self._lock:
            self.events.append(event)
            if self._file is not None:
                self._file.write(event.model_dump_json(exclude_none=True) + "\n")
                self._file.flush()
        return event

    def emit(self, t_s: float, kind: EventKind, **fields: Any) -> RunEvent:
        return self.add(RunEvent(t_s=t_s, kind=kind, **fields))

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_events(path: str | Path) -> list[RunEvent]:
    """Read a run's ``events.jsonl`` (a torn last line, from a killed run, is skipped)."""
    return read_jsonl(Path(path), RunEvent.model_validate_json, what="run event")[0]
