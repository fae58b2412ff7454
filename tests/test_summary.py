"""Chaos-run figures (consensus/testing/summary.py), from hand-made histories whose answers are
known (the pictures: tests/test_picture.py)."""

from __future__ import annotations

from typing import Any

import pytest

from quorumboard.consensus.testing.history import FaultEvent, OpRecord
from quorumboard.consensus.testing.summary import summarize

S = 1_000_000_000


def _records(ops: list[tuple[str, float, float | None, str]]) -> list[OpRecord]:
    """(process, invoke s, completion s or None, completion kind) -> records in time order."""
    raw: list[tuple[float, int, dict[str, Any]]] = []
    for n, (proc, t_in, t_out, kind) in enumerate(ops):
        raw.append((t_in, 0, {"process": proc, "type": "invoke", "time_ns": int(t_in * S)}))
        if t_out is not None:
            raw.append((t_out, 1, {"process": proc, "type": kind, "time_ns": int(t_out * S)}))
        del n
    raw.sort(key=lambda r: (r[0], r[1]))
    return [OpRecord(index=i, f="cas", key="k", **fields)
            for i, (_, _, fields) in enumerate(raw)]


def _fault(index: int, phase: str, t_s: float, error: str = "") -> FaultEvent:
    return FaultEvent(index=index, phase=phase, kind="kill", mode="leader",  # type: ignore[arg-type]
                      targets=[0], time_ns=int(t_s * S), error=error)


def test_figures_per_fault_and_recovery() -> None:
    records = _records([
        ("c0", 0.0, 0.010, "ok"),      # quiet
        ("c0", 1.0, 1.020, "ok"),      # in the fault
        ("c1", 1.5, 3.5, "info"),      # in the fault, indeterminate
        ("c0", 2.0, 2.1, "fail"),      # in the fault
        ("c0", 3.2, 3.3, "fail"),      # after the heal: not yet recovered
        ("c0", 3.4, 3.45, "ok"),       # first ok after the heal: recovered at 3.45
        ("c1", 4.0, None, "ok"),       # never completed: indeterminate
    ])
    events = [_fault(0, "start", 1.0), _fault(0, "end", 3.0), _fault(1, "start", 3.9)]
    s = summarize(records, events)
    assert (s.total.invoked, s.total.ok, s.total.fail, s.total.info) == (7, 3, 2, 2)
    first, second = s.faults
    assert (first.invoked, first.ok, first.fail, first.info) == (3, 1, 1, 1)
    assert first.availability == pytest.approx(1 / 3, abs=1e-3)
    assert first.latency_p50_ms == pytest.approx(20.0, abs=0.01)
    assert first.recover_s == pytest.approx(0.45, abs=1e-3)
    # ok completions inside [1.0, 3.0]: 1.02 only -> 0.5/s, longest gap 1.98 s
    assert first.ok_per_s == 0.5 and first.gap_max_s == pytest.approx(1.98, abs=1e-3)
    assert first.label == "kill leader [0]" and first.error == ""
    assert second.error == "never healed" and second.invoked == 1 and second.recover_s is None
    assert s.quiet.invoked == 3 and s.quiet.ok == 2


def test_a_failed_injection_and_the_fault_free_throughput() -> None:
    records = _records([("c0", 0.0, 0.5, "ok"), ("c0", 1.0, 1.5, "ok"), ("c0", 2.0, 2.5, "ok")])
    events = [_fault(0, "start", 1.0, error="ProcessLookupError: gone"), _fault(0, "end", 2.0)]
    s = summarize(records, events)
    (fault,) = s.faults
    assert fault.error == "ProcessLookupError: gone" and fault.invoked == 1
    # fault-free time: [0, 1) and [2, 2.5] = 1.5 s with 2 ok completions (0.5 and 2.5)
    assert s.quiet.ok_per_s == pytest.approx(2 / 1.5, abs=0.05) and s.quiet.gap_max_s is None
