"""Chaos runs: a real cluster, a recorded workload, a nemesis on a schedule, then the checks.

:func:`run_chaos` (and ``quorumboard chaos``) starts a :class:`LocalCluster` on 127.0.0.1 with
the fault layers the scenario needs, drives it with a workload whose every operation is
streamed to ``history.jsonl`` while the :class:`~consensus.nemesis.Nemesis` injects faults
(``faults.jsonl``), heals everything, reads every key once more, waits for the replicas to
converge, and checks:

* **linearizability** of the history (the WGL checker, one key at a time, within
  ``check_time_limit_s``; the final reads make it a no-lost-write check too), and the
  workload's own checks (exactly-once for ``counter``, set completeness for ``set``, stream
  equality for ``watch``: see :mod:`consensus.workload`);
* **convergence**: every replica reports the same state digest after the heal.

It writes, under ``out``: ``scenario.json``, ``history.jsonl``, ``faults.jsonl``,
``verdict.json`` (and the checker's explanation in ``verdict.txt``), ``summary.json`` (figures
per fault: availability, latency, time to recover), ``timeline.html`` (operations per client,
faults, throughput, availability and latency over time; a violation's window is outlined; drawn
by the browser) and the same picture as ``timeline.png`` when matplotlib is installed (the
``plots`` extra; without it the summary says how to get it), and the cluster's data dirs and
replica logs under ``cluster/``.

The verdict is ``valid`` (exit 0), ``invalid`` (a violation: :data:`EXIT_VIOLATION`) or
``unknown`` (not decided within the limit: :data:`EXIT_UNKNOWN`).
"""

from __future__ import annotations

import html
import json
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quorumboard.consensus.client.board import connect
from quorumboard.consensus.cluster import Convergence, LocalCluster
from quorumboard.consensus.errors import InvalidCommand
from quorumboard.consensus.testing.checker import CheckResult
from quorumboard.consensus.testing.checks import Finding
from quorumboard.consensus.testing.history import (
    FaultKind,
    HistoryWriter,
    OpRecord,
    pair_records,
    read_faults,
    read_history,
)
from quorumboard.consensus.testing.nemesis import NEEDS_NETWORK, Nemesis, NemesisConfig
from quorumboard.consensus.testing.picture import Band, Bar, Timeline, series_of, to_svg
from quorumboard.consensus.testing.planted import PlantedBug
from quorumboard.consensus.testing.summary import RunSummary, fault_spans, pair_ops, summarize
from quorumboard.consensus.testing.workload import (
    STUCK_CLIENT,
    WORKLOADS,
    Workload,
    WorkloadStats,
)

__all__ = ["EXIT_UNKNOWN", "EXIT_VIOLATION", "ChaosReport", "Scenario", "load_scenario",
           "recheck_chaos", "run_chaos"]

log = structlog.get_logger("quorumboard.consensus.testing.chaos")

EXIT_VIOLATION = 7
"""``quorumboard chaos`` exit code: the history was checked and a violation found."""
EXIT_UNKNOWN = 8
"""``quorumboard chaos`` exit code: the checks could not decide within their limits."""

Verdict = Literal["valid", "invalid", "unknown"]
WorkloadName = Literal["cas-register", "counter", "set", "lww-register", "watch", "claims"]
CONVERGE_TIMEOUT_S = 60.0
SCENARIO_BYTES_MAX = 1 << 16
BARS_DRAWN_MAX = 100_000
"""More operations than this are thinned in the picture (every fail and info kept)."""
DEFAULT_NEMESIS: tuple[FaultKind, ...] = ("kill", "pause", "partition")
OUTPUTS = ("timeline.html", "timeline.png", "verdict.json", "verdict.txt", "summary.json",
           "history.jsonl", "faults.jsonl", "scenario.json")
PNG_HINT = ("timeline.png not drawn: it needs matplotlib: pip install 'quorumboard[plots]' "
            "(timeline.html has the same picture, drawn by the browser)")


class Scenario(BaseModel):
    """Everything that defines a chaos run; the same fields as ``quorumboard chaos`` flags and
    a ``--scenario`` TOML file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replicas: int = Field(default=5, ge=1, le=15)
    workload: WorkloadName = "cas-register"
    clients: int = Field(default=16, ge=1, le=256)
    rate: float = Field(default=500.0, gt=0, le=100_000, description="operations/s, in total")
    duration_s: float = Field(default=60.0, gt=0, le=86_400)
    keys: int = Field(default=10, ge=1, le=10_000)
    read_share: float = Field(default=0.5, ge=0, le=1)
    ops_per_client_max: int = Field(default=100_000, ge=1, le=1_000_000)
    nemesis: list[FaultKind] = Field(default_factory=lambda: list(DEFAULT_NEMESIS),
                                     min_length=1)
    interval_s: float = Field(default=2.0, gt=0, le=3600, description="quiet gap before a fault")
    fault_s: float = Field(default=3.0, gt=0, le=3600, description="how long a fault is held")
    seed: int = 0
    check_time_limit_s: float = Field(default=60.0, gt=0, le=86_400)
    client_timeout_s: float = Field(default=5.0, gt=0, le=600)
    compaction_entries: int = Field(default=20_000, ge=2, le=10_000_000,
                                    description="snapshot + compact the log past this many "
                                    "entries: small values stress snapshot install")
    planted_bug: PlantedBug | None = Field(default=None, description="negative control: the "
                                           "replicas run with this bug planted (see "
                                           "consensus/testing/replica.py)")


class ChaosReport(BaseModel):
    """What ``verdict.json`` holds."""

    verdict: Verdict
    linearizable: Literal["ok", "violation", "unknown"]
    findings: list[Finding]
    converged: bool
    digests: list[str | None]
    operations: int
    faults_injected: int
    problems: list[str]
    explanation: str
    out: str
    check_s: float | None = None
    """Seconds the checks took, from when the history had been read."""

    @property
    def exit_code(self) -> int:
        return {"valid": 0, "invalid": EXIT_VIOLATION, "unknown": EXIT_UNKNOWN}[self.verdict]


def load_scenario(path: Path, **overrides: Any) -> Scenario:
    """A scenario from a TOML file, with ``overrides`` (non-``None`` values) on top. Raises
    :class:`InvalidCommand` naming what is wrong."""
    try:
        data = path.read_bytes()
        if len(data) > SCENARIO_BYTES_MAX:
            raise InvalidCommand(f"{path}: larger than {SCENARIO_BYTES_MAX} bytes")
        fields = tomllib.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidCommand(f"{path}: {exc}") from None
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return scenario_from(fields, str(path))


def scenario_from(fields: dict[str, Any], where: str = "scenario") -> Scenario:
    try:
        return Scenario.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidCommand(f"{where}: {at or 'scenario'}: {first['msg']}") from None


def _workload_for(scenario: Scenario) -> Workload:
    return WORKLOADS[scenario.workload](
        clients=scenario.clients, keys=scenario.keys,
        ops_per_client=scenario.ops_per_client_max, duration_s=scenario.duration_s,
        rate_per_s=scenario.rate, read_share=scenario.read_share, seed=scenario.seed,
        final_reads=False)


def run_chaos(scenario: Scenario, out: Path,
              progress: Callable[[str], None] = lambda _m: None) -> ChaosReport:
    """Run ``scenario``, write everything under ``out`` (which must not exist yet or be
    empty), and return the verdict. Every process and fault is cleaned up, also on failure."""
    if out.exists() and any(out.iterdir()):
        raise InvalidCommand(f"{out} exists and is not empty: choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.json").write_text(scenario.model_dump_json(indent=2) + "\n")
    nemesis_config = NemesisConfig(faults=scenario.nemesis, interval_s=scenario.interval_s,
                                   fault_s=scenario.fault_s, seed=scenario.seed)
    workload = _workload_for(scenario)
    history_path, faults_path = out / "history.jsonl", out / "faults.jsonl"
    progress(f"starting {scenario.replicas} replicas under {out / 'cluster'}")
    with LocalCluster(replicas=scenario.replicas, data_dir=out / "cluster",
                      network_faults=bool(NEEDS_NETWORK & set(scenario.nemesis)),
                      clock_faults="clock" in scenario.nemesis, log_level="info",
                      compaction_min_entries=scenario.compaction_entries,
                      planted_bug=scenario.planted_bug) as cluster, \
            HistoryWriter(history_path) as history, \
            Nemesis(cluster, nemesis_config, faults_path) as nemesis:
        n = cluster.size
        timeout_s = scenario.client_timeout_s
        try:
            progress(f"running {scenario.workload} for {scenario.duration_s:g}s with "
                     f"nemesis {','.join(scenario.nemesis)}")
            nemesis.start(scenario.duration_s)
            stats = workload.run(
                writer_for=lambda name: cluster.board(agent=f"{name}-w", timeout_s=timeout_s),
                reader_for=lambda name, i: connect([cluster.endpoints[i % n]],
                                                   agent=f"{name}-r", timeout_s=timeout_s),
                history=history)
        finally:
            progress("healing every fault")
            nemesis.stop()
        # Converge first: the final reads and the committed history (read by a watch, from
        # whichever replica) then see everything every replica has.
        progress("waiting for the replicas to converge")
        convergence, digests = cluster.convergence(CONVERGE_TIMEOUT_S)
        if convergence != "converged":
            log.error("replicas did not converge", verdict=convergence, digests=digests)
        workload.read_all(cluster.board(agent="final", timeout_s=CONVERGE_TIMEOUT_S), history)
    progress("checking the history")
    records, note = read_history(history_path)  # once: every check and figure uses it
    findings, result, check_s = _check(workload, scenario, history_path, records, note)
    findings += _run_findings(stats, nemesis, records)
    report = _report(result, findings, convergence, digests, nemesis.injected, out, check_s)
    _write_outputs(out, scenario, result, report, records)
    return report


def recheck_chaos(out: Path, check_time_limit_s: float | None = None) -> ChaosReport:
    """Check a recorded run again, offline, without its cluster: its ``scenario.json`` and
    ``history.jsonl`` (and, for the watch and claims workloads, their recorded streams), with
    today's checker and ``check_time_limit_s`` (default: the scenario's). What only the live
    run could see — convergence, crashes, stuck clients — is taken from its ``verdict.json``
    when there is one (else convergence is ``unknown``). Writes ``recheck.json`` and
    ``recheck.txt`` next to the run's own verdict, which it leaves as it was."""
    history_path = out / "history.jsonl"
    try:
        scenario = Scenario.model_validate_json((out / "scenario.json").read_bytes())
        previous = (ChaosReport.model_validate_json((out / "verdict.json").read_bytes())
                    if (out / "verdict.json").exists() else None)
    except (OSError, ValidationError) as exc:
        raise InvalidCommand(f"{out}: not a readable chaos run folder: {exc}") from None
    if not history_path.is_file():
        raise InvalidCommand(f"{out}: no history.jsonl: not a chaos run folder")
    if check_time_limit_s is not None:
        scenario = scenario_from({**scenario.model_dump(),
                                  "check_time_limit_s": check_time_limit_s}, "--check-time-limit")
    records, note = read_history(history_path)
    findings, result, check_s = _check(_workload_for(scenario), scenario, history_path, records,
                                       note)
    live_only = {"data-faults", "no-crash", "clients"}
    findings += [f for f in (previous.findings if previous else []) if f.check in live_only]
    findings += _final_read_findings(records)
    digests = previous.digests if previous else []
    seen = {d for d in digests if d is not None}
    convergence: Convergence = (
        "diverged" if len(seen) > 1 else
        "converged" if previous is not None and previous.converged and seen else "unknown")
    events = read_faults(out / "faults.jsonl") if (out / "faults.jsonl").exists() else []
    injected = (previous.faults_injected if previous else
                sum(1 for e in events if e.phase == "start" and not e.error))
    report = _report(result, findings, convergence, digests, injected, out, check_s)
    (out / "recheck.json").write_text(report.model_dump_json(indent=2) + "\n")
    (out / "recheck.txt").write_text(report.explanation + "\n")
    return report


def _check(workload: Workload, scenario: Scenario, history_path: Path, records: list[OpRecord],
           note: str) -> tuple[list[Finding], CheckResult, float]:
    """The workload's checks, the search within ``check_time_limit_s`` (from when the history
    has been read: reading it is not the search), and the seconds they took."""
    start = time.monotonic()
    deadline = start + scenario.check_time_limit_s
    findings, result = workload.check(history_path, records, note,
                                      should_stop=lambda: time.monotonic() > deadline)
    return findings, result, round(time.monotonic() - start, 3)


def _run_findings(stats: WorkloadStats, nemesis: Nemesis, records: list[OpRecord]
                  ) -> list[Finding]:
    """What the run itself says: a replica that started on corrupt data or crashed on its own
    (violations: nothing the nemesis did excuses them), clients that never returned, final
    reads that failed (both weaken the checks: unknown)."""
    out = []
    if nemesis.violations:
        out.append(Finding(check="data-faults", verdict="violation",
                           detail="; ".join(nemesis.violations[:5])))
    if nemesis.crashed:
        out.append(Finding(check="no-crash", verdict="violation",
                           detail="; ".join(nemesis.crashed[:5])))
    stuck = stats.errors.get(STUCK_CLIENT, 0)
    if stuck:
        out.append(Finding(check="clients", verdict="unknown",
                           detail=f"{stuck} client(s) still blocked after the run: their last "
                                  "operations are not in the history"))
    return out + _final_read_findings(records)


def _final_read_findings(records: list[OpRecord]) -> list[Finding]:
    out = []
    failed = sorted({inv.key for inv, done in pair_records(records)
                     if inv.process == "final" and (done is None or done.type != "ok")})
    if failed:
        out.append(Finding(check="final-reads", verdict="unknown",
                           detail=f"the final read of {', '.join(failed[:5])} failed: "
                                  "lost writes on those keys cannot be ruled out"))
    return out


def _report(result: CheckResult, findings: list[Finding], convergence: Convergence,
            digests: list[str | None], injected: int, out: Path,
            check_s: float | None) -> ChaosReport:
    problems = [f"{f.check}: {f.verdict}" + ("" if f.check == "linearizable" else
                                             f" ({f.detail})")
                for f in findings if f.verdict != "ok"]
    if convergence == "diverged":
        problems.append("replicas did not converge to one digest after heal")
    elif convergence == "unknown":
        problems.append("convergence unknown: a replica never answered at the common index")
    verdicts = {f.verdict for f in findings}
    verdict: Verdict = (
        "invalid" if "violation" in verdicts or convergence == "diverged"
        else "unknown" if "unknown" in verdicts or convergence == "unknown" else "valid")
    converged = convergence == "converged"
    notes = [f"{f.check}: {f.verdict}: {f.detail}" for f in findings if f.check != "linearizable"]
    return ChaosReport(verdict=verdict, linearizable=result.verdict, findings=findings,
                       converged=converged, digests=digests,
                       operations=sum(k.operations for k in result.keys),
                       faults_injected=injected, problems=problems, check_s=check_s,
                       explanation="\n".join([result.explain(), *notes]), out=str(out))


def _write_outputs(out: Path, scenario: Scenario, result: CheckResult, report: ChaosReport,
                   records: list[OpRecord]) -> None:
    events = read_faults(out / "faults.jsonl")
    summary = summarize(records, events)
    (out / "verdict.json").write_text(report.model_dump_json(indent=2) + "\n")
    (out / "verdict.txt").write_text(report.explanation + "\n")
    (out / "summary.json").write_text(summary.model_dump_json(indent=2) + "\n")
    timeline = _timeline(scenario, records, events, result, report, summary)
    (out / "timeline.html").write_text(_page(timeline, report, summary))
    _draw_png(timeline, out / "timeline.png")


def _draw_png(timeline: Timeline, path: Path) -> bool:
    """The PNG, if the plotting library is installed (the ``plots`` extra); without it the
    run's data and the HTML page are all there is, and :func:`print_summary` says how to get
    the PNG. Only matplotlib's absence is forgiven: any other import error is a bug."""
    try:
        from quorumboard.consensus.testing.picture_png import draw_png
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "matplotlib":
            raise
        log.info("timeline.png not drawn: matplotlib is not installed")
        return False
    draw_png(timeline, path)
    return True


def _timeline(scenario: Scenario, records: list[Any], events: list[Any], result: CheckResult,
              report: ChaosReport, summary: RunSummary) -> Timeline:
    times = [r.time_ns for r in records] + [e.time_ns for e in events]
    t0 = min(times, default=0)
    end_s = summary.duration_s
    spans = pair_ops(records, t0)
    series = series_of(spans, end_s)  # every operation, before thinning the bars
    stride = max(1, -(-len(spans) // BARS_DRAWN_MAX))
    if stride > 1:  # a long run: every fail and info bar, one ok bar in ``stride``
        spans = [s for k, s in enumerate(spans) if s.kind != "ok" or k % stride == 0]
    lanes = sorted({s.process for s in spans}, key=_lane_order) or ["-"]
    lane_of = {p: i for i, p in enumerate(lanes)}
    bars = [Bar(lane_of[s.process], s.start_s, end_s if s.end_s is None else s.end_s, s.kind)
            for s in spans]
    faults = [Band(f.start_s, f.end_s, f"{f.event.kind} {f.event.mode}", f.event.kind)
              for f in fault_spans(events, t0, end_s)]
    mark = None
    for key in result.violations:
        calls = [op.call for op in key.window]
        if calls:
            stop = key.cut_time if key.cut_time != float("inf") else max(
                (op.ret for op in key.window if op.ret != float("inf")), default=max(calls))
            mark = Band(min(calls) - t0 / 1e9, stop - t0 / 1e9, f"violation on {key.key}")
            break
    title = (f"{scenario.workload} x{scenario.clients} on {scenario.replicas} replicas, "
             f"nemesis {','.join(scenario.nemesis)}, seed {scenario.seed}: {report.verdict}"
             + (f" (1 in {stride} ok operations drawn)" if stride > 1 else ""))
    return Timeline(title, lanes, end_s, bars, faults, mark, series)


def _lane_order(process: str) -> tuple[int, int, str]:
    digits = "".join(ch for ch in process if ch.isdigit())
    return (1 if process == "final" else 0, int(digits) if digits else 0, process)


def _page(timeline: Timeline, report: ChaosReport, summary: RunSummary) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(w.label)}</td><td>{w.start_s:.2f}-{w.end_s:.2f}</td>"
        f"<td>{w.invoked}</td><td>{w.ok}</td><td>{w.fail}</td><td>{w.info}</td>"
        f"<td>{_fmt(w.ok_per_s)}</td><td>{_fmt(w.gap_max_s)}</td><td>{_fmt(w.availability)}</td><td>{_fmt(w.latency_p50_ms)}</td>"
        f"<td>{_fmt(w.latency_p99_ms)}</td><td>{_fmt(w.recover_s)}</td>"
        f"<td>{html.escape(w.error)}</td></tr>"
        for w in [summary.total, summary.quiet, *summary.faults])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>quorumboard chaos: {report.verdict}</title>
<style>body{{font-family:sans-serif;margin:1em}} td,th{{padding:2px 8px;text-align:right}}
td:first-child{{text-align:left}} pre{{background:#f4f4f4;padding:8px}}</style></head><body>
<h1>Verdict: {report.verdict}</h1>
<p>linearizable: {report.linearizable}; converged: {report.converged};
operations checked: {report.operations}; faults injected: {report.faults_injected}</p>
<p>availability: share of operations invoked in the window that completed ok; ok/s: ok
completions inside it per second; longest gap: the longest time inside it with no ok completion.
Bars, one lane per client: green ok; red fail (certainly not applied); orange indeterminate (may
have applied). Bands: faults, tinted by kind (legend under the picture; hover for times).
Outlined in dark red: the smallest failing window of a violation. Under the lanes: ok completions
per second and availability (ok / invoked), then p50 and p99 latency of the operations invoked
in each of {len(timeline.series.starts_s) if timeline.series else 0} slices of the run.</p>
{to_svg(timeline)}
<h2>Figures</h2>
<table><tr><th>window</th><th>span s</th><th>invoked</th><th>ok</th><th>fail</th>
<th>info</th><th>ok/s</th><th>longest gap s</th><th>availability</th><th>p50 ms</th><th>p99 ms</th><th>recover s</th>
<th>error</th></tr>
{rows}
</table>
<h2>Checker</h2><pre>{html.escape(report.explanation)}</pre>
</body></html>
"""


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def print_summary(report: ChaosReport, summary_path: Path) -> str:
    """The human-readable result the CLI prints."""
    summary = RunSummary.model_validate(json.loads(summary_path.read_text()))
    lines = [f"verdict: {report.verdict} (linearizable: {report.linearizable}, "
             f"converged: {report.converged})",
             f"operations: {summary.total.invoked} invoked, {summary.total.ok} ok, "
             f"{summary.total.fail} fail, {summary.total.info} indeterminate; "
             f"faults injected: {report.faults_injected}",
             f"{'window':30} {'invoked':>7} {'ok/s':>7} {'gap s':>6} {'avail':>6} "
             f"{'p50 ms':>8} {'p99 ms':>8} {'recover s':>9}"]
    for w in [summary.quiet, *summary.faults]:
        lines.append(f"{w.label[:30]:30} {w.invoked:7} {_fmt(w.ok_per_s):>7} "
                     f"{_fmt(w.gap_max_s):>6} {_fmt(w.availability):>6} "
                     f"{_fmt(w.latency_p50_ms):>8} {_fmt(w.latency_p99_ms):>8} "
                     f"{_fmt(w.recover_s):>9}" + (f"  ({w.error})" if w.error else ""))
    lines += [f"problem: {p}" for p in report.problems]
    out = Path(report.out)
    written = [name for name in OUTPUTS if (out / name).exists()]
    lines.append(f"wrote {report.out}/ ({', '.join(written)})")
    if not (out / "timeline.png").exists():
        lines.append(PNG_HINT)
    return "\n".join(lines)


def print_recheck(report: ChaosReport) -> str:
    """What ``quorumboard chaos --recheck`` prints."""
    lines = [f"verdict: {report.verdict} (linearizable: {report.linearizable}, "
             f"converged: {report.converged})",
             f"operations checked: {report.operations}; faults injected: "
             f"{report.faults_injected}; checks took {report.check_s:g} s",
             *[f"problem: {p}" for p in report.problems]]
    lines += [f.detail for f in report.findings
              if f.check == "linearizable" and f.verdict != "ok"]
    lines.append(f"wrote {report.out}/recheck.json, recheck.txt")
    return "\n".join(lines)
