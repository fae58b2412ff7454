"""Figures of a chaos run, computed from its history and fault timeline (pure: no I/O).

For the whole run and for each fault: operations invoked, how they ended (ok / fail / info),
availability (the share of invoked operations that completed ``ok``), latency of the ``ok``
ones, and — per fault — the time to recover: from the heal to the first ``ok`` completion of an
operation invoked after it. Times are seconds since the run's first record.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from quorumboard.consensus.testing.history import FaultEvent, OpRecord, pair_records

__all__ = ["FaultSpan", "OpWindowStats", "RunSummary", "Span", "fault_spans", "pair_ops",
           "summarize"]


class Span(BaseModel):
    """One operation: invocation, completion (``None``: never completed) and how it ended."""

    model_config = ConfigDict(frozen=True)

    process: str
    f: str
    key: str
    start_s: float
    end_s: float | None
    kind: str  # ok | fail | info


class OpWindowStats(BaseModel):
    label: str
    start_s: float
    end_s: float
    invoked: int
    ok: int
    fail: int
    info: int
    availability: float | None
    ok_per_s: float | None
    """Operations completed ``ok`` inside the window, per second of it (throughput)."""
    gap_max_s: float | None
    """Longest stretch of the window with no ``ok`` completion at all (unavailability)."""
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    recover_s: float | None = None
    error: str = ""


class RunSummary(BaseModel):
    duration_s: float
    total: OpWindowStats
    quiet: OpWindowStats
    faults: list[OpWindowStats]


def pair_ops(records: Sequence[OpRecord], t0_ns: int) -> list[Span]:
    """Every operation as a span, by invocation time; one that never completed is ``info``."""
    spans = [Span(process=inv.process, f=inv.f, key=inv.key,
                  start_s=(inv.time_ns - t0_ns) / 1e9,
                  end_s=None if done is None else (done.time_ns - t0_ns) / 1e9,
                  kind="info" if done is None else done.type)
             for inv, done in pair_records(records)]
    spans.sort(key=lambda s: s.start_s)
    return spans


@dataclass(frozen=True)
class FaultSpan:
    """One fault from injection to heal; a fault never healed runs to the end of the run."""

    start_s: float
    end_s: float
    event: FaultEvent
    error: str
    healed: bool

    def covers(self, t_s: float) -> bool:
        return self.start_s <= t_s and (t_s < self.end_s or not self.healed)


def fault_spans(events: Sequence[FaultEvent], t0_ns: int, end_s: float) -> list[FaultSpan]:
    """Every fault of a timeline, by start time."""
    starts: dict[int, FaultEvent] = {}
    out: list[FaultSpan] = []
    for ev in events:
        if ev.phase == "start":
            starts[ev.index] = ev
        else:
            st = starts.pop(ev.index, None)
            if st is not None:
                error = "; ".join(e for e in (st.error, ev.error) if e)
                out.append(FaultSpan((st.time_ns - t0_ns) / 1e9, (ev.time_ns - t0_ns) / 1e9, st,
                                     error, True))
    for st in starts.values():
        out.append(FaultSpan((st.time_ns - t0_ns) / 1e9, end_s, st,
                             st.error or "never healed", False))
    out.sort(key=lambda f: f.start_s)
    return out


def _percentile(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    k = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return round(sorted_ms[k], 2)


def _window(label: str, spans: Sequence[Span], start_s: float, end_s: float,
            done_ok_s: Sequence[float], **extra: Any) -> OpWindowStats:
    """Figures for operations invoked in the window (``spans``) and for every ``ok``
    completion inside it (``done_ok_s``, sorted: throughput and the longest gap)."""
    counts = {"ok": 0, "fail": 0, "info": 0}
    lat: list[float] = []
    for s in spans:
        counts[s.kind] = counts.get(s.kind, 0) + 1
        if s.kind == "ok" and s.end_s is not None:
            lat.append((s.end_s - s.start_s) * 1000)
    lat.sort()
    invoked = len(spans)
    length_s = end_s - start_s
    inside = done_ok_s[bisect.bisect_left(done_ok_s, start_s):
                       bisect.bisect_right(done_ok_s, end_s)]
    edges = [start_s, *inside, end_s]
    gap = max((b - a for a, b in itertools.pairwise(edges)), default=0.0)
    return OpWindowStats(label=label, start_s=round(start_s, 3), end_s=round(end_s, 3),
                         invoked=invoked, ok=counts["ok"], fail=counts["fail"],
                         info=counts["info"],
                         availability=round(counts["ok"] / invoked, 4) if invoked else None,
                         ok_per_s=round(len(inside) / length_s, 1) if length_s > 0 else None,
                         gap_max_s=round(gap, 3) if length_s > 0 else None,
                         latency_p50_ms=_percentile(lat, 0.5),
                         latency_p99_ms=_percentile(lat, 0.99), **extra)


def summarize(records: Sequence[OpRecord], events: Sequence[FaultEvent]) -> RunSummary:
    """The figures of one run (see the module docstring). Each fault's operations are found by
    bisection in the spans sorted by start, so a one-hour run (a million operations, hundreds
    of faults) is summarised in seconds: scanning every span per fault took tens of minutes."""
    times = [r.time_ns for r in records] + [e.time_ns for e in events]
    t0 = min(times, default=0)
    end_s = (max(times, default=0) - t0) / 1e9
    spans = pair_ops(records, t0)  # sorted by start
    starts = [s.start_s for s in spans]
    done_ok = sorted(s.end_s for s in spans if s.kind == "ok" and s.end_s is not None)
    # first_ok_end[j]: the earliest ok completion among spans j.. (for the time to recover)
    first_ok_end = [math.inf] * (len(spans) + 1)
    for j in range(len(spans) - 1, -1, -1):
        s = spans[j]
        end = s.end_s if s.kind == "ok" and s.end_s is not None else math.inf
        first_ok_end[j] = min(end, first_ok_end[j + 1])
    faults = fault_spans(events, t0, end_s)
    per_fault: list[OpWindowStats] = []
    for fault in faults:
        ev = fault.event
        lo = bisect.bisect_left(starts, fault.start_s)
        hi = bisect.bisect_left(starts, fault.end_s) if fault.healed else len(spans)
        after = bisect.bisect_left(starts, fault.end_s)
        recover = (round(first_ok_end[after] - fault.end_s, 3)
                   if fault.healed and first_ok_end[after] < math.inf else None)
        label = f"{ev.kind} {ev.mode}" + (f" {ev.targets}" if ev.targets else "")
        per_fault.append(_window(label, spans[lo:hi], fault.start_s, fault.end_s, done_ok,
                                 recover_s=recover, error=fault.error))
    quiet = [s for s, hit in zip(spans, _covered(starts, faults), strict=True) if not hit]
    # Fault-free time is not one stretch: its throughput is over its total length, and its
    # longest gap is not defined.
    quiet_s = end_s - sum(min(f.end_s, end_s) - f.start_s for f in faults)
    quiet_ok = sum(1 for hit in _covered(done_ok, faults) if not hit)
    quiet_stats = _window("no fault", quiet, 0.0, end_s, []).model_copy(update={
        "ok_per_s": round(quiet_ok / quiet_s, 1) if quiet_s > 0 else None, "gap_max_s": None})
    return RunSummary(duration_s=round(end_s, 3),
                      total=_window("total", spans, 0.0, end_s, done_ok),
                      quiet=quiet_stats, faults=per_fault)


def _covered(sorted_s: Sequence[float], faults: Sequence[FaultSpan]) -> list[bool]:
    """For each time (sorted), whether some fault covers it (:meth:`FaultSpan.covers`): one
    sweep over the faults' merged intervals."""
    intervals = sorted((f.start_s, f.end_s if f.healed else math.inf) for f in faults)
    merged: list[list[float]] = []
    for start, end in intervals:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out = []
    k = 0
    for t in sorted_s:
        while k < len(merged) and merged[k][1] <= t:  # bounded: k only grows
            k += 1
        out.append(k < len(merged) and merged[k][0] <= t)
    return out
