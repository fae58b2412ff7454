"""Per-run metrics recounted from a run's events, and per-cell aggregates (speedup, Amdahl).

Pure: no I/O, no clock, no unseeded randomness (the bootstrap is seeded per cell). Every figure
of :class:`RunMetrics` is a recount of the :class:`~agents.events.RunEvent` records of one run,
so the study's recount problems (columns computed inconsistently across batches) cannot arise:
the events are the only source.

Names and meanings follow the study ("Language Model Teams as Distributed Systems", arXiv
2603.12229): speedup is the mean makespan of the successful n=1 runs of the same cell divided by
the run's makespan; Amdahl's prediction is ``1 / ((1 - p) + p / n)``; Karp-Flatt and the fitted
serial fraction are ours.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict

from quorumboard.agents.team.events import RunEvent
from quorumboard.agents.team.spec import RunSpec, SyncMode
from quorumboard.agents.team.study_harness import reply_stats

__all__ = [
    "CONFLICT_KINDS",
    "LATENCY_MAX_S",
    "CellRow",
    "RunMetrics",
    "RunRecord",
    "amdahl",
    "cell_rows",
    "dag_bound",
    "fit_serial_fraction",
    "karp_flatt",
    "mean_or_none",
    "per_run_speedups",
    "ratio_ci",
    "run_metrics",
    "sd_or_none",
]

LATENCY_MAX_S = 180.0
"""Replies slower than this are left out of the straggler gap (the study's filter: outliers of
up to 600 s would otherwise dominate a round's max)."""

CONFLICT_KINDS: tuple[str, ...] = (
    "concurrent_writes",
    "rewrites",
    "claims_blocked",
    "claims_contended",
    "lost_updates",
    "stale_rejected",
    "fenced_rejected",
)
"""The parts of ``conflicts_total``, in the order tables and plots show them."""


class RunMetrics(BaseModel):
    """Everything measured about one run. ``None`` means "not defined for this run" (e.g. idle
    rounds of an asynchronous run), never "zero"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ended: bool = True
    """A ``run_end`` event was logged (a killed run's prefix has none: success is then False)."""
    sync: SyncMode = "rounds"
    success: bool = False
    tasks_done: int = 0
    makespan_s: float = 0.0
    wall_s: float = 0.0
    board_s: float = 0.0
    """Wall time the agents spent waiting on the board (view catch-ups and their replies'
    board calls), summed; part of the makespan when the spec's ``board_time`` is on."""
    board_wait_max_s: float = 0.0
    """The longest single wait on the board: one view catch-up or one reply's board calls."""
    rounds: int = 0
    board_ops: int = 0
    messages: int = 0
    chat_messages: int = 0
    idle_replies: int = 0
    """Replies with no effective action (``data.effective`` false; in logs without that key, a
    reply with an ``idle`` event of the same agent and time)."""
    idle_rounds: int | None = None
    concurrent_writes: int | None = None
    """(round, file) pairs that >= 2 distinct agents tried to write in that round (committed or
    refused writes alike, so policies that refuse some are comparable); None in async runs."""
    rewrites: int = 0
    claims_blocked: int = 0
    claims_contended: int = 0
    claim_attempts: int = 0
    """Claims tried: granted (``claim``), refused for dependencies (``claim_blocked``) or for
    another holder (``claim_held``). The study's blocked-claim rate is blocked / attempts."""
    claims_lost: int = 0
    """Agents finding their claim gone (lease lapsed, fenced out): not a conflict kind."""
    claims_expired: int = 0
    """``expired`` events: an agent silent past the claim TTL, its leases ending."""
    lost_updates: int = 0
    stale_rejected: int = 0
    fenced_rejected: int = 0
    conflicts_total: int = 0
    straggler_gap_s: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens: int = 0
    agent_faults: int = 0
    """Stall/crash events that held tasks (the faults recovery is measured over)."""
    recovery_s: float | None = None
    unrecovered: int = 0
    recovered_by_other: bool | None = None
    """Another agent completed a task of a recovered fault. None when the run had no agent fault
    holding tasks; False when it had some but none recovered."""
    recovered_by_self: bool | None = None
    """Every task of every recovered fault was completed by the faulty agent itself (after its
    resume). None when no fault was recovered (or there was none)."""
    board_faults: int = 0
    """Injected board faults (``board_fault``: leader killed, a replica partitioned)."""
    board_heals: int = 0
    """Injected board faults undone (``board_heal``: a replica restarted, a partition healed)."""
    board_errors: int = 0
    lost_work: int = 0
    harness: str = "board"
    """Whose rules the run followed (``board`` or ``study``: see ``RunSpec.harness``)."""
    edits: int = 0
    """Committed file writes (the study's ``edit_file`` events)."""
    first_completions: int = 0
    """Completions of a task not done before (the study harness also logs repeats)."""
    multi_complete_replies: int = 0
    """Replies completing >= 2 tasks for the first time."""
    no_edit_replies: int = 0
    """Replies writing no file (the study's edit histogram, §2)."""
    one_edit_replies: int = 0
    """Replies writing exactly one file (§2)."""
    study_idle_replies: int = 0
    """The study's idle replies: no edit, no granted claim, no first-time completion."""
    test_runs: int = 0
    no_task_edits: int = 0
    """Writes of a path that is no task's file (study harness: helpers, test dumps)."""
    foreign_edits: int = 0
    """Pre-assignment (study harness): writes of a task file dealt to another agent (§6)."""
    claims_done_same_reply: int = 0
    claims_done_later: int = 0
    claims_never_done: int = 0
    """Granted claims by when the claimer first completed the task: in the same reply (the
    same round: one reply per agent a round), in a later one, or never (rounds mode)."""


class RunRecord(BaseModel):
    """One line of a sweep's ``results.jsonl``: what ran, what it measured, where its files are
    (``out``: the run folder, relative to the sweep folder)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: RunSpec
    metrics: RunMetrics
    out: str = ""
    version: str = ""
    """The code version that made the run (``git describe``, else the package version)."""


def _int(value: Any, default: int = 0) -> int:
    """A count from a run_end payload; anything not a number is the default (never raises)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


def _float(value: Any, default: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return default
    return float(value)


def mean_or_none(values: Iterable[float | int | None]) -> float | None:
    """Mean of the values that are not None; None when no value is left."""
    vals = [float(v) for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def sd_or_none(values: Iterable[float | int | None]) -> float | None:
    """Sample standard deviation of the values that are not None; None with fewer than two
    (one run has no spread, which is not a spread of zero)."""
    vals = [float(v) for v in values if v is not None]
    return statistics.stdev(vals) if len(vals) >= 2 else None


def _tasks_of(event: RunEvent) -> list[str]:
    """The tasks a stall/crash event says the agent was working on, i.e. had claimed
    (``data.tasks``; tasks merely assigned to it are ``data.assigned``, not counted)."""
    raw = (event.data or {}).get("tasks")
    if not isinstance(raw, list | tuple):
        return []
    return [t for t in raw if isinstance(t, str)]


def _sync_of(events: Sequence[RunEvent]) -> SyncMode:
    """``rounds`` or ``async``: from the run spec in ``run_start`` (``data.spec.sync``, or
    ``data.sync``) when given, else inferred from whether the run logged any ``round_start``."""
    for e in events:
        if e.kind != "run_start":
            continue
        data = e.data or {}
        spec = data.get("spec")
        for source in (spec if isinstance(spec, dict) else {}, data):
            if source.get("sync") == "rounds":
                return "rounds"
            if source.get("sync") == "async":
                return "async"
    return "rounds" if any(e.kind == "round_start" for e in events) else "async"


def _straggler_gap(replies: Iterable[RunEvent]) -> float | None:
    """Mean over rounds with >= 2 in-range reply latencies of (max - mean latency)."""
    by_round: dict[int, list[float]] = defaultdict(list)
    for e in replies:
        if e.latency_s is not None and 0.0 <= e.latency_s <= LATENCY_MAX_S:
            by_round[e.round].append(e.latency_s)
    gaps = [max(v) - statistics.fmean(v) for _, v in sorted(by_round.items()) if len(v) >= 2]
    return statistics.fmean(gaps) if gaps else None


class _Recovery(NamedTuple):
    """What :func:`_recovery` found (see the RunMetrics fields of the same meaning)."""

    faults: int = 0
    mean_s: float | None = None
    unrecovered: int = 0
    by_other: bool | None = None
    by_self: bool | None = None


def _recovery(events: Sequence[RunEvent]) -> _Recovery:
    """Faults, mean recovery time, unrecovered faults, and who recovered them.

    A fault is a stall or crash of an agent working on (having claimed) tasks; it is recovered
    when each of those tasks has a ``complete`` at or after the fault, and its recovery time
    runs to the last of them. The first such completion of each task says who recovered it."""
    completes: dict[str, list[RunEvent]] = defaultdict(list)
    for e in events:
        if e.kind == "complete" and e.task is not None:
            completes[e.task].append(e)
    times: list[float] = []
    faults = unrecovered = recovered = 0
    by_other = False
    for fault in events:
        if fault.kind not in ("stall", "crash"):
            continue
        tasks = _tasks_of(fault)
        if not tasks:
            continue
        faults += 1
        done: list[RunEvent] = []
        for task in tasks:
            after = [c for c in completes.get(task, []) if c.t_s >= fault.t_s]
            if after:
                done.append(min(after, key=lambda c: c.t_s))
        if len(done) < len(tasks):
            unrecovered += 1
            continue
        recovered += 1
        times.append(max(c.t_s for c in done) - fault.t_s)
        by_other = by_other or any(c.agent != fault.agent for c in done)
    if faults == 0:
        return _Recovery()
    mean = statistics.fmean(times) if times and unrecovered == 0 else None
    return _Recovery(faults=faults, mean_s=mean, unrecovered=unrecovered, by_other=by_other,
                     by_self=(not by_other) if recovered else None)


def _idle_replies(events: Sequence[RunEvent]) -> int:
    """Replies none of whose actions took effect: ``data.effective`` false. A reply without a
    boolean ``effective`` (a log from before it was recorded) counts as idle when an ``idle``
    event of the same agent and time is logged (each idle event vouching for one reply)."""
    idle_marks = Counter((e.agent, e.t_s) for e in events if e.kind == "idle")
    n = 0
    for e in events:
        if e.kind != "reply":
            continue
        effective = (e.data or {}).get("effective")
        if isinstance(effective, bool):
            if not effective:
                n += 1
        elif idle_marks[(e.agent, e.t_s)] > 0:
            idle_marks[(e.agent, e.t_s)] -= 1
            n += 1
    return n


def _claim_fates(events: Sequence[RunEvent]) -> dict[str, int]:
    """Granted claims by when the same agent first completed the task (§4 of the study's
    calibration note: same reply, a later one, never)."""
    done: dict[tuple[str | None, str | None], int] = {}
    for e in events:
        if e.kind == "complete" and e.reason != "repeat":
            done.setdefault((e.agent, e.task), e.round)
    fates = {"claims_done_same_reply": 0, "claims_done_later": 0, "claims_never_done": 0}
    for e in events:
        if e.kind == "claim":
            r = done.get((e.agent, e.task))
            key = ("claims_never_done" if r is None or r < e.round else
                   "claims_done_same_reply" if r == e.round else "claims_done_later")
            fates[key] += 1
    return fates


def run_metrics(events: Sequence[RunEvent]) -> RunMetrics:
    """Recount one run's metrics from its events (see :class:`RunMetrics` and the study's
    definitions). A log without ``run_end`` (a killed run) yields ``ended=False``,
    ``success=False``, makespan = the last event's time and tasks_done = distinct completions."""
    sync = _sync_of(events)
    rounds_mode = sync == "rounds"
    end = next((e for e in reversed(events) if e.kind == "run_end"), None)
    end_data: Mapping[str, Any] = (end.data or {}) if end is not None else {}

    def count(kind: str, reason: str | None = None) -> int:
        return sum(1 for e in events if e.kind == kind and (reason is None or e.reason == reason))

    completed_tasks = {e.task for e in events if e.kind == "complete"}
    round_numbers = {e.round for e in events if e.kind == "round_start"}
    complete_rounds = {e.round for e in events if e.kind == "complete" and e.reason != "repeat"}
    replies = [e for e in events if e.kind == "reply"]
    writes = [e for e in events if e.kind == "write" and e.file is not None]
    attempts = [e for e in events if e.kind in ("write", "write_rejected") and e.file is not None]

    concurrent: int | None = None
    first_write: dict[str, int] = {}
    rewrites = 0
    if rounds_mode:
        writers: dict[tuple[int, str], set[str | None]] = defaultdict(set)
        for w in attempts:
            assert w.file is not None
            writers[(w.round, w.file)].add(w.agent)
        for w in writes:
            assert w.file is not None
            first_write[w.file] = min(first_write.get(w.file, w.round), w.round)
        concurrent = sum(1 for agents in writers.values() if len(agents) >= 2)
        rewrites = sum(1 for w in writes if w.file is not None and w.round > first_write[w.file])
    else:
        per_file: dict[str, int] = defaultdict(int)
        for w in writes:
            assert w.file is not None
            per_file[w.file] += 1
        rewrites = sum(n - 1 for n in per_file.values())

    lost_updates = sum(max(0, w.version - 1 - w.base_version) for w in writes
                       if w.version is not None and w.base_version is not None)
    parts = {
        "concurrent_writes": concurrent or 0,
        "rewrites": rewrites,
        "claims_blocked": count("claim_blocked"),
        "claims_contended": count("claim_held"),
        "lost_updates": lost_updates,
        "stale_rejected": count("write_rejected", "stale"),
        "fenced_rejected": count("write_rejected", "fenced") + count("complete_refused", "fenced"),
    }
    rec = _recovery(events)
    per_reply = reply_stats(events) if rounds_mode else []
    tokens_in = sum(e.tokens_in or 0 for e in replies)
    tokens_out = sum(e.tokens_out or 0 for e in replies)
    last_t = max((e.t_s for e in events), default=0.0)
    return RunMetrics(
        ended=end is not None,
        sync=sync,
        success=bool(end_data.get("success", False)) if end is not None else False,
        tasks_done=_int(end_data.get("tasks_done"), len(completed_tasks)),
        makespan_s=end.t_s if end is not None else last_t,
        wall_s=_float(end_data.get("wall_s")),
        board_s=_float(end_data.get("board_s")),
        board_wait_max_s=_float(end_data.get("board_wait_max_s")),
        rounds=len(round_numbers) if rounds_mode else 0,
        board_ops=_int(end_data.get("board_ops")),
        messages=len(replies),
        chat_messages=count("message"),
        idle_replies=_idle_replies(events),
        idle_rounds=len(round_numbers - complete_rounds) if rounds_mode else None,
        concurrent_writes=concurrent,
        rewrites=parts["rewrites"],
        claims_blocked=parts["claims_blocked"],
        claims_contended=parts["claims_contended"],
        claim_attempts=count("claim") + count("claim_blocked") + count("claim_held"),
        claims_lost=count("claim_lost"),
        claims_expired=count("expired"),
        lost_updates=parts["lost_updates"],
        stale_rejected=parts["stale_rejected"],
        fenced_rejected=parts["fenced_rejected"],
        conflicts_total=sum(parts.values()),
        straggler_gap_s=_straggler_gap(replies) if rounds_mode else None,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        tokens=tokens_in + tokens_out,
        agent_faults=rec.faults,
        recovery_s=rec.mean_s,
        unrecovered=rec.unrecovered,
        recovered_by_other=rec.by_other,
        recovered_by_self=rec.by_self,
        board_faults=count("board_fault"),
        board_heals=count("board_heal"),
        board_errors=count("board_error"),
        lost_work=_int(end_data.get("lost", 0)),
        harness=str(end_data.get("harness", "board")),
        edits=len(writes),
        first_completions=sum(1 for e in events if e.kind == "complete" and e.reason != "repeat"),
        multi_complete_replies=sum(1 for r in per_reply if r.completions >= 2),
        no_edit_replies=sum(1 for r in per_reply if r.edits == 0),
        one_edit_replies=sum(1 for r in per_reply if r.edits == 1),
        study_idle_replies=sum(1 for r in per_reply if r.idle),
        test_runs=count("tests"),
        no_task_edits=count("write", "no-task"),
        foreign_edits=count("write", "foreign"),
        **_claim_fates(events) if rounds_mode else {},
    )


# ---------------------------------------------------------------------------------------------
# Amdahl's law, Karp-Flatt, fitted serial fraction


def amdahl(p: float, n: int) -> float:
    """Amdahl's predicted speedup of n workers on work with parallel fraction p."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"parallel fraction must be in [0, 1], not {p}")
    if n < 1:
        raise ValueError(f"team size must be >= 1, not {n}")
    return 1.0 / ((1.0 - p) + p / n)


def dag_bound(p: float, n: int) -> float:
    """The most a team of n can speed up a DAG of unit tasks with parallel fraction p:
    min(n, N / CP), where N / CP = 1 / (1 - p) (infinite at p = 1). Amdahl's prediction is
    below it; a speedup above it is not the work's but the measurement's (noise in a cell's
    baseline, or hedged reply latencies)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"parallel fraction must be in [0, 1], not {p}")
    return float(n) if p >= 1.0 else min(float(n), 1.0 / (1.0 - p))


def karp_flatt(speedup: float, n: int) -> float | None:
    """Karp-Flatt experimentally determined serial fraction ``(1/s - 1/n) / (1 - 1/n)``; None
    where undefined (n = 1, or a non-positive speedup)."""
    if n <= 1 or not speedup > 0 or not math.isfinite(speedup):
        return None
    return (1.0 / speedup - 1.0 / n) / (1.0 - 1.0 / n)


_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_FIT_GRID = 200
_FIT_ITERS = 100


def fit_serial_fraction(points: Iterable[tuple[int, float]]) -> float | None:
    """Least-squares serial fraction f in [0, 1] of ``speedup = 1 / (f + (1 - f) / n)``.

    A grid over [0, 1] finds the best bracket (the sum of squares need not be unimodal across
    mixed n), then a golden-section search refines it to ~1e-12. Points with n = 1 carry no
    information (every f predicts 1) and are left out; None if no usable point remains."""
    pts = [(int(n), float(s)) for n, s in points if n > 1 and math.isfinite(s) and s > 0]
    if not pts:
        return None

    def sse(f: float) -> float:
        return sum((s - 1.0 / (f + (1.0 - f) / n)) ** 2 for n, s in pts)

    grid = [i / _FIT_GRID for i in range(_FIT_GRID + 1)]
    best = min(range(len(grid)), key=lambda i: sse(grid[i]))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, _FIT_GRID)]
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = sse(a), sse(b)
    for _ in range(_FIT_ITERS):  # bounded: the bracket shrinks by 0.618 each pass
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = sse(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = sse(b)
    candidates = [lo, hi, (lo + hi) / 2.0, grid[best]]
    return min(candidates, key=sse)


# ---------------------------------------------------------------------------------------------
# Cells


class CellRow(BaseModel):
    """One (cell, team size) group of runs, aggregated. Means are over the group's runs unless
    said otherwise; makespan and speedup are over its successful runs (a failed run stopped at
    the round cap, so its makespan is not a completion time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str
    suite: str
    level: str
    p: float
    mode: str
    policy: str
    brain: str
    model: str
    sync: str
    round_cap: int
    faults: str
    agents: int
    runs: int
    successes: int
    success_rate: float
    makespan_s: float | None
    makespan_sd: float | None
    wall_s: float | None
    board_s: float = 0.0
    """Mean wall time the agents of a run waited on the board (summed over their steps)."""
    board_wait_max_s: float = 0.0
    """The longest single board wait in any run of the group."""
    baseline_makespan_s: float | None
    speedup: float | None
    speedup_sd: float | None
    speedup_ratio: float | None = None
    """Ratio estimator: mean n=1 makespan / mean makespan of the group's successful runs (the
    mean of per-run ratios, ``speedup``, is biased upward by Jensen's inequality)."""
    speedup_ci_lo: float | None = None
    speedup_ci_hi: float | None = None
    """Bootstrap 95 % interval of ``speedup_ratio`` (seeded, bounded resamples)."""
    dag_bound: float = 0.0
    """min(n, N / CP): the most a team of n can speed up this DAG."""
    above_bound: int = 0
    """Runs (n > 1) whose speedup exceeds ``dag_bound`` (flagged in the report)."""
    amdahl: float
    gap: float | None
    """speedup / amdahl: below 1 means under the bound."""
    karp_flatt: float | None
    messages: float
    chat_messages: float
    idle_replies: float
    idle_rounds: float | None
    concurrent_writes: float | None
    rewrites: float
    claims_blocked: float
    claims_contended: float
    claim_attempts: float = 0.0
    claims_lost: float
    claims_expired: float
    lost_updates: float
    stale_rejected: float
    fenced_rejected: float
    conflicts_total: float
    straggler_gap_s: float | None
    tokens: float
    baseline_tokens: float | None
    token_multiplier: float | None
    efficiency: float | None
    agent_faults: int
    recovery_s: float | None
    unrecovered: int
    recovered_by_other: float | None
    """Share of the runs with an agent fault in which another agent completed a task of a
    recovered fault."""
    recovered_by_self: float | None
    """Share of the runs with a recovered agent fault in which the faulty agents completed all
    the recovered tasks themselves."""
    board_faults: float
    board_heals: float
    board_errors: float
    lost_work: float
    note: str = ""


def _fault_label(spec: RunSpec) -> str:
    """A short readable summary of a spec's injected faults ("none" without any)."""
    parts: list[str] = []
    for f in spec.faults:
        if f.slowdown != 1.0:
            parts.append(f"a{f.agent} slow x{f.slowdown:g}")
        if f.stall_at_s is not None:
            parts.append(f"a{f.agent} stall@{f.stall_at_s:g}s+{f.stall_s:g}s")
        if f.crash_at_s is not None:
            parts.append(f"a{f.agent} crash@{f.crash_at_s:g}s")
    if spec.board_fault is not None:
        b = spec.board_fault
        parts.append(f"board@{b.at_round}+{b.heal_after}")
    return "; ".join(parts) if parts else "none"


def _baselines(records: Sequence[RunRecord]
               ) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """Per cell: mean makespan of successful n=1 runs, and mean tokens of all n=1 runs."""
    spans = _baseline_spans(records)
    toks: dict[tuple[str, ...], list[float]] = defaultdict(list)
    for r in records:
        if r.spec.agents == 1:
            toks[r.spec.cell].append(float(r.metrics.tokens))
    return ({c: statistics.fmean(v.values()) for c, v in spans.items()},
            {c: statistics.fmean(v) for c, v in toks.items()})


def _baseline_spans(records: Sequence[RunRecord]) -> dict[tuple[str, ...], dict[str, float]]:
    """Per cell: run id -> makespan of each successful n=1 run."""
    spans: dict[tuple[str, ...], dict[str, float]] = defaultdict(dict)
    for r in records:
        if r.spec.agents == 1 and r.metrics.success and r.metrics.makespan_s > 0:
            spans[r.spec.cell][r.spec.run_id] = r.metrics.makespan_s
    return spans


def per_run_speedups(records: Sequence[RunRecord]) -> Iterator[tuple[RunRecord, float | None]]:
    """Each record with its speedup (baseline ÷ its makespan), or None when undefined: a failed
    run, a zero makespan, or a cell without a successful n=1 run. An n=1 run is measured
    against the *other* successful n=1 runs of its cell (leave-one-out), so it is never
    compared with itself (which would pull its speedup towards 1); alone in its cell, None."""
    spans = _baseline_spans(records)
    for r in records:
        cell = spans.get(r.spec.cell, {})
        base = [v for k, v in cell.items() if not (r.spec.agents == 1 and k == r.spec.run_id)]
        ok = r.metrics.success and r.metrics.makespan_s > 0 and bool(base)
        yield r, (statistics.fmean(base) / r.metrics.makespan_s if ok else None)


def paired_speedups(records: Sequence[RunRecord]) -> dict[str, float]:
    """Run id -> speedup against the n=1 run of the same cell, repetition and work seed (the
    same work, where sweeps share a repetition's work across team sizes), for successful
    n > 1 runs that have such a successful n=1 run. Free of the baseline noise a cell mean
    carries: what is left above the DAG bound is the mechanism's."""
    solo: dict[tuple[tuple[str, ...], int, int | None], float] = {}
    for r in records:
        if r.spec.agents == 1 and r.metrics.success and r.metrics.makespan_s > 0:
            solo[(r.spec.cell, r.spec.rep, r.spec.work_seed)] = r.metrics.makespan_s
    out: dict[str, float] = {}
    for r in records:
        base = solo.get((r.spec.cell, r.spec.rep, r.spec.work_seed))
        if r.spec.agents > 1 and base is not None and r.metrics.success \
                and r.metrics.makespan_s > 0:
            out[r.spec.run_id] = base / r.metrics.makespan_s
    return out


BOUND_SLACK = 1e-9
"""A speedup counts as above the DAG bound beyond this relative slack (float rounding)."""

BOOTSTRAP_RESAMPLES = 1_000
"""Resamples of a cell's bootstrap interval (bounded; seeded per cell, so reports repeat)."""


def ratio_ci(base: Sequence[float], spans: Sequence[float],
             resamples: int = BOOTSTRAP_RESAMPLES, seed: str = "",
             level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of mean(base) / mean(spans), resampling both groups with
    replacement (seeded by ``seed``). None with fewer than two values in either group."""
    if len(base) < 2 or len(spans) < 2 or resamples < 1:
        return None
    rng = random.Random(f"bootstrap|{seed}")
    ratios = []
    for _ in range(min(resamples, 100_000)):
        b = statistics.fmean(rng.choice(base) for _ in base)
        s = statistics.fmean(rng.choice(spans) for _ in spans)
        ratios.append(b / s)
    ratios.sort()
    lo = ratios[int((1 - level) / 2 * (len(ratios) - 1))]
    hi = ratios[int((1 + level) / 2 * (len(ratios) - 1))]
    return lo, hi


def cell_rows(records: Sequence[RunRecord]) -> list[CellRow]:
    """Aggregate records per (cell, team size), sorted by cell then team size. Never raises on
    missing baselines: speedup is then None and ``note`` says why."""
    base, base_tokens = _baselines(records)
    base_spans = _baseline_spans(records)
    groups: dict[tuple[tuple[str, ...], int], list[tuple[RunRecord, float | None]]]
    groups = defaultdict(list)
    for r, s in per_run_speedups(records):
        groups[(r.spec.cell, r.spec.agents)].append((r, s))
    rows: list[CellRow] = []
    for (cell, n), group in sorted(groups.items(), key=lambda kv: kv[0]):
        spec = group[0][0].spec
        ms = [r.metrics for r, _ in group]
        ok = [m for m in ms if m.success]
        spans = [m.makespan_s for m in ok]
        sp = [s for _, s in group if s is not None]
        speedup = statistics.fmean(sp) if sp else None
        pred = amdahl(spec.p, n)
        bound = dag_bound(spec.p, n)
        b_spans = list(base_spans.get(cell, {}).values())
        ratio = (statistics.fmean(b_spans) / statistics.fmean(spans)
                 if b_spans and spans else None)
        ci = ratio_ci(b_spans, spans, seed="|".join((*cell, str(n))))
        notes: list[str] = []
        if cell not in base:
            notes.append("no successful n=1 run in this cell: speedup undefined")
        elif not ok:
            notes.append("no successful run: speedup undefined")
        b_tok = base_tokens.get(cell)
        tokens = statistics.fmean(float(m.tokens) for m in ms)
        multiplier = tokens / b_tok if b_tok else None
        if b_tok is None:
            notes.append("no n=1 run in this cell: token multiplier undefined")
        faulted = [m for m in ms if m.recovered_by_other is not None]
        self_known = [m for m in ms if m.recovered_by_self is not None]
        rows.append(CellRow(
            experiment=spec.experiment, suite=spec.suite, level=spec.level, p=spec.p,
            mode=spec.mode, policy=spec.policy, brain=spec.brain, model=spec.model,
            sync=spec.sync, round_cap=spec.round_cap, faults=_fault_label(spec), agents=n,
            runs=len(group), successes=len(ok), success_rate=len(ok) / len(group),
            makespan_s=mean_or_none(spans), makespan_sd=sd_or_none(spans),
            wall_s=mean_or_none(m.wall_s for m in ok),
            board_s=statistics.fmean(m.board_s for m in ms),
            board_wait_max_s=max(m.board_wait_max_s for m in ms),
            baseline_makespan_s=base.get(cell), speedup=speedup, speedup_sd=sd_or_none(sp),
            speedup_ratio=ratio, speedup_ci_lo=ci[0] if ci else None,
            speedup_ci_hi=ci[1] if ci else None, dag_bound=bound,
            above_bound=(sum(1 for x in sp if x > bound * (1 + BOUND_SLACK)) if n > 1 else 0),
            amdahl=pred, gap=speedup / pred if speedup is not None else None,
            karp_flatt=karp_flatt(speedup, n) if speedup is not None else None,
            messages=statistics.fmean(m.messages for m in ms),
            chat_messages=statistics.fmean(m.chat_messages for m in ms),
            idle_replies=statistics.fmean(m.idle_replies for m in ms),
            idle_rounds=mean_or_none(m.idle_rounds for m in ms),
            concurrent_writes=mean_or_none(m.concurrent_writes for m in ms),
            rewrites=statistics.fmean(m.rewrites for m in ms),
            claims_blocked=statistics.fmean(m.claims_blocked for m in ms),
            claims_contended=statistics.fmean(m.claims_contended for m in ms),
            claim_attempts=statistics.fmean(m.claim_attempts for m in ms),
            claims_lost=statistics.fmean(m.claims_lost for m in ms),
            claims_expired=statistics.fmean(m.claims_expired for m in ms),
            lost_updates=statistics.fmean(m.lost_updates for m in ms),
            stale_rejected=statistics.fmean(m.stale_rejected for m in ms),
            fenced_rejected=statistics.fmean(m.fenced_rejected for m in ms),
            conflicts_total=statistics.fmean(m.conflicts_total for m in ms),
            straggler_gap_s=mean_or_none(m.straggler_gap_s for m in ms),
            tokens=tokens, baseline_tokens=b_tok, token_multiplier=multiplier,
            efficiency=(speedup / multiplier if speedup is not None and multiplier else None),
            agent_faults=sum(m.agent_faults for m in ms),
            recovery_s=mean_or_none(m.recovery_s for m in ms),
            unrecovered=sum(m.unrecovered for m in ms),
            recovered_by_other=mean_or_none(1.0 if m.recovered_by_other else 0.0
                                            for m in faulted),
            recovered_by_self=mean_or_none(1.0 if m.recovered_by_self else 0.0
                                           for m in self_known),
            board_faults=statistics.fmean(m.board_faults for m in ms),
            board_heals=statistics.fmean(m.board_heals for m in ms),
            board_errors=statistics.fmean(m.board_errors for m in ms),
            lost_work=statistics.fmean(m.lost_work for m in ms),
            note="; ".join(notes),
        ))
    return rows
