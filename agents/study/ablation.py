"""The ablation (``quorumboard experiment ablate``): which of the study's findings come from
coordination structure and which from its harness's rules, one rule at a time.

The study's harness has rules no real system should have (completion checks ownership only,
files are last-writer-wins, claims never expire, a refused claim is silent). ``ablate`` runs the
study harness, each fix alone (:data:`~agents.team.study_harness.FIXES`) and all of them
together on the same seeds (a run's seed depends on its project, team size and repetition, not
on its rules), so every run under a fix has a twin under the study's rules: differences are
paired. Stalls and stragglers go beyond the study; ``fenced-claims`` only matters when a holder
stops replying, so the grid adds a stall experiment (the last agent stops mid-task), and the
recovery finding is measured there.

How an agent reacts to feedback it never got in the study is an assumption of the brains
(:class:`~agents.brains.study.Assumptions`: ``phantom``, ``heed``, ``rewrite``, ``adopt``);
the report adds sensitivity rows with those knobs moved.

Pure: reads records, writes markdown lines. Intervals are seeded percentile bootstraps.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from quorumboard.agents.study.metrics import RunRecord, amdahl, paired_speedups
from quorumboard.agents.team.study_harness import FIXES

__all__ = ["RULE_SETS", "SENSITIVITY", "Finding", "ablation_report", "rule_label"]

RULE_SETS: tuple[str, ...] = ("", *FIXES, ",".join(FIXES))
"""The study's rules, each fix alone, all fixes together (the board's rules)."""

SENSITIVITY: tuple[tuple[str, str, str], ...] = (
    ("", "phantom=0.5", "agents keep working on a claim they silently lost (half the time)"),
    ("claim-feedback", "phantom=0.5", "the same agents, told their claim was refused"),
    ("claim-feedback", "phantom=0.5,heed=0", "told, and ignoring it"),
    ("reject-stale-files", "rewrite=0", "a refused write is never written again"),
    ("fenced-claims", "adopt=0", "pre-assigned agents never take an orphaned task"),
    ("fenced-claims", "adopt=1", "pre-assigned agents always take an orphaned task"),
)
"""(rule set, ``--assume`` knobs, what the row assumes): the reactions the study cannot tell."""

RESAMPLES = 1_000
LEVELS = (0.2, 0.5, 0.9)
NS = (3, 5)


def rule_label(fix: str) -> str:
    if not fix:
        return "study rules"
    return "all fixes" if fix == ",".join(FIXES) else fix


@dataclass(frozen=True)
class Estimate:
    mean: float
    lo: float
    hi: float
    count: int

    def text(self, digits: int = 1) -> str:
        if self.count == 0 or math.isnan(self.mean):
            return "n/a"
        if self.count < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"

    @property
    def sure(self) -> bool:
        """The interval excludes zero (the estimate's sign is resolved)."""
        return self.count >= 2 and (self.lo > 0 or self.hi < 0)


NONE = Estimate(math.nan, math.nan, math.nan, 0)


def _boot(values: Sequence[float], seed: str) -> Estimate:
    if not values:
        return NONE
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Estimate(mean, mean, mean, 1)
    rng = random.Random(f"ablation|{seed}")
    means = sorted(statistics.fmean(rng.choice(values) for _ in values)
                   for _ in range(RESAMPLES))
    return Estimate(mean, means[int(0.025 * (RESAMPLES - 1))],
                    means[int(0.975 * (RESAMPLES - 1))], len(values))


def _boot_diff(a: Sequence[float], b: Sequence[float], seed: str) -> Estimate:
    """mean(a) - mean(b), resampling each group."""
    if not a or not b:
        return NONE
    mean = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Estimate(mean, mean, mean, 1)
    rng = random.Random(f"ablation-diff|{seed}")
    diffs = sorted(statistics.fmean(rng.choice(a) for _ in a)
                   - statistics.fmean(rng.choice(b) for _ in b) for _ in range(RESAMPLES))
    return Estimate(mean, diffs[int(0.025 * (RESAMPLES - 1))],
                    diffs[int(0.975 * (RESAMPLES - 1))], min(len(a), len(b)))


def _twin(r: RunRecord) -> tuple[object, ...]:
    """What a run shares with its twins under other rules: everything but the rules."""
    s = r.spec
    return (s.experiment, s.suite, s.level, s.project, s.mode, s.model, s.agents, s.rep,
            s.seed, tuple(f.model_dump_json() for f in s.faults), s.assume)


@dataclass(frozen=True)
class Finding:
    """One row of a model's table: a value per rule set from the runs it selects."""

    name: str
    select: Callable[[RunRecord], bool]
    value: Callable[[RunRecord], float | None]
    digits: int = 1


class _Data:
    def __init__(self, records: Sequence[RunRecord]) -> None:
        self.records = list(records)
        self.speedup = paired_speedups(self.records)
        self.by_rule: dict[str, list[RunRecord]] = defaultdict(list)
        for r in self.records:
            self.by_rule[r.spec.fix].append(r)
        self.twins: dict[tuple[str, tuple[object, ...]], RunRecord] = {
            (r.spec.fix, _twin(r)): r for r in self.records}

    def values(self, fix: str, f: Finding) -> list[tuple[tuple[object, ...], float]]:
        out = []
        for r in self.by_rule.get(fix, []):
            if f.select(r):
                v = f.value(r)
                if v is not None and math.isfinite(v):
                    out.append((_twin(r), v))
        return out

    def estimate(self, fix: str, f: Finding) -> Estimate:
        return _boot([v for _, v in self.values(fix, f)], f"{fix}|{f.name}")

    def paired(self, fix: str, f: Finding) -> Estimate:
        """Mean of (value under ``fix`` - value of its twin under the study's rules)."""
        base = dict(self.values("", f))
        diffs = [v - base[k] for k, v in self.values(fix, f) if k in base]
        return _boot(diffs, f"paired|{fix}|{f.name}")


def _sweep(mode: str, n: int | None = None, p: float | None = None
           ) -> Callable[[RunRecord], bool]:
    def pick(r: RunRecord) -> bool:
        s = r.spec
        return (s.experiment == "sweep" and s.mode == mode and not s.faults
                and (s.agents in NS if n is None else s.agents == n)
                and (p is None or abs(s.p - p) < 1e-6))
    return pick


def _stalled(mode: str) -> Callable[[RunRecord], bool]:
    return lambda r: (r.spec.experiment == "stall" and r.spec.mode == mode
                      and bool(r.spec.faults))


def _findings(data: _Data) -> list[Finding]:
    out: list[Finding] = []
    for mode in ("preassign", "decentralized"):
        for n in NS:
            for p in LEVELS:
                out.append(Finding(f"speedup {mode} n={n} p={p}", _sweep(mode, n, p),
                                   lambda r: data.speedup.get(r.spec.run_id), 2))
    for mode in ("preassign", "decentralized"):
        out += [
            Finding(f"messages {mode}", _sweep(mode), lambda r: float(r.metrics.messages), 0),
            Finding(f"idle rounds {mode}", _sweep(mode),
                    lambda r: float(r.metrics.idle_rounds or 0), 1),
            Finding(f"conflicts {mode}", _sweep(mode),
                    lambda r: float(r.metrics.conflicts_total), 1),
            Finding(f"lost updates {mode}", _sweep(mode),
                    lambda r: float(r.metrics.lost_updates), 1),
            Finding(f"success % {mode}", _sweep(mode),
                    lambda r: 100.0 * r.metrics.success, 0),
            Finding(f"recovery after a stall (s) {mode}", _stalled(mode),
                    lambda r: r.metrics.recovery_s, 0),
            Finding(f"stalls unrecovered % {mode}", _stalled(mode),
                    lambda r: (100.0 * r.metrics.unrecovered / r.metrics.agent_faults
                               if r.metrics.agent_faults else None), 0),
        ]
    return out


def _contrast(data: _Data, fix: str, metric: str, digits: int = 1) -> Estimate:
    """decentralized - preassign of one per-run metric under ``fix`` (team sizes 3 and 5)."""
    def vals(mode: str) -> list[float]:
        return [float(getattr(r.metrics, metric) or 0) for r in data.by_rule.get(fix, [])
                if _sweep(mode)(r)]
    return _boot_diff(vals("decentralized"), vals("preassign"), f"{fix}|{metric}")


def _speed_contrast(data: _Data, fix: str, n: int) -> Estimate:
    """decentralized - preassign makespan (s) of successful runs at p = 0.9 (the study:
    pre-assignment at least as fast there). Makespans, not speedups: each mode's speedup has
    its own n = 1 baseline, and a lone pre-assigned agent is not a lone self-claiming one."""
    def vals(mode: str) -> list[float]:
        return [r.metrics.makespan_s for r in data.by_rule.get(fix, [])
                if _sweep(mode, n, 0.9)(r) and r.metrics.success]
    return _boot_diff(vals("decentralized"), vals("preassign"), f"{fix}|speed|{n}")


def _below_amdahl(data: _Data, fix: str) -> tuple[int, int]:
    """Cells (mode, n, p) whose mean speedup is below Amdahl's prediction, of those measured."""
    below = total = 0
    for mode in ("preassign", "decentralized"):
        for n in NS:
            for p in LEVELS:
                vals = [v for r in data.by_rule.get(fix, []) if _sweep(mode, n, p)(r)
                        for v in [data.speedup.get(r.spec.run_id)] if v is not None]
                if vals:
                    total += 1
                    below += statistics.fmean(vals) < amdahl(p, n)
    return below, total


SHRINK_NOTABLE = 0.25
"""A gap that keeps its sign but shrinks by this share under some rule set is called partly
the harness's."""


def _verdict(name: str, ests: dict[str, Estimate], claim: str) -> str:
    """One sentence: does the direction the study reports hold under every rule set, and how
    much of it do the fixes take away?"""
    base = ests.get("")
    if base is None or base.count == 0:
        return f"- **{name}**: not measured."
    if not base.mean > 0:
        return (f"- **{name}** ({claim}): under the study's rules the simulation does not "
                f"show it ({base.text(1)}); nothing to attribute.")
    measured = {f: e for f, e in ests.items() if e.count}
    flipped = [rule_label(f) for f, e in measured.items() if e.mean <= 0]
    unsure = [rule_label(f) for f, e in measured.items()
              if not e.sure and rule_label(f) not in flipped]
    if flipped:
        return (f"- **{name}** ({claim}): **harness** — it vanishes or reverses under "
                f"{', '.join(flipped)}" + (f"; it holds but unresolved (interval spans 0) "
                                            f"under {', '.join(unsure)}" if unsure else "")
                + ".")
    if not base.sure:
        return (f"- **{name}** ({claim}): **unresolved** — the study's direction shows under "
                "its rules and keeps its sign under every fix, but the intervals span 0 "
                f"under {', '.join(unsure)}: this sweep cannot tell structure from noise.")
    least = min(measured, key=lambda f: measured[f].mean)
    shrink = 1 - measured[least].mean / base.mean
    how = ("sure: every interval excludes 0" if not unsure else
           f"less sure: the interval spans 0 under {', '.join(unsure)}")
    if shrink >= SHRINK_NOTABLE:
        return (f"- **{name}** ({claim}): **structure, partly harness** — it holds under every "
                f"rule set, but the gap shrinks by {100 * shrink:.0f} % under "
                f"{rule_label(least)} ({how}).")
    return (f"- **{name}** ({claim}): **structure** — it holds under every rule set, the gap "
            f"within {100 * max(shrink, 0):.0f} % of the study rules' ({how}).")


def _recovery_verdict(data: _Data, fixes: Sequence[str], mode: str) -> str:
    """The stall finding: under the study's rules a claim never expires, so a stalled holder's
    tasks wait for it; does the team recover without it under each rule set?"""
    unrec = Finding("u", _stalled(mode), lambda r: (
        100.0 * r.metrics.unrecovered / r.metrics.agent_faults if r.metrics.agent_faults
        else None))
    secs = Finding("s", _stalled(mode), lambda r: r.metrics.recovery_s)
    ests = {fix: data.estimate(fix, unrec) for fix in fixes}
    text = "; ".join(f"{rule_label(k)} {e.text(0)} % unrecovered, "
                     f"{data.estimate(k, secs).text(0)} s" for k, e in ests.items() if e.count)
    base = ests.get("")
    if base is None or base.count == 0:
        return f"- **recovery after a stall, {mode}**: not measured."
    better = [k for k, e in ests.items() if k and e.count and e.mean < base.mean - 1e-9]
    unsure = [rule_label(k) for k in better if not data.paired(k, unrec).sure]
    head = (f"**harness** — the stalled holder's tasks are taken over only under "
            f"{', '.join(rule_label(k) for k in better)}"
            + (f" (less sure under {', '.join(unsure)}: its paired interval reaches 0, "
               f"{ests[''].count} stalls)" if unsure else "") if better else
            "**structure** — no rule set changes how often the team recovers without its "
            "stalled member")
    return (f"- **recovery after a stall, {mode}** (the last agent stops mid-task for the stall "
            f"time): {head}. {text}.")


def _model_section(data: _Data, model: str, fixes: Sequence[str]) -> list[str]:
    lines = [f"### {model}", "",
             "Each cell: mean [95 % bootstrap interval]; second line: paired difference to the "
             "study's rules (the same seeds), mean [interval]. Team sizes 3 and 5 pooled "
             "unless named; recovery: the stall experiment (the last agent stops mid-task).", ""]
    head = "| finding | " + " | ".join(rule_label(f) for f in fixes) + " |"
    lines += [head, "|" + "---|" * (len(fixes) + 1)]
    for f in _findings(data):
        row = [data.estimate(fix, f) for fix in fixes]
        if all(e.count == 0 for e in row):
            continue
        cells = []
        for fix, e in zip(fixes, row, strict=True):
            cell = e.text(f.digits)
            if fix:
                d = data.paired(fix, f)
                if d.count:
                    cell += f"<br>Δ {d.text(f.digits)}"
            cells.append(cell)
        lines.append(f"| {f.name} | " + " | ".join(cells) + " |")
    lines += ["", "**Findings: structure or harness**", ""]
    for metric, name, claim in (
            ("messages", "messages", "decentralized above pre-assignment"),
            ("idle_rounds", "idle rounds", "decentralized above pre-assignment"),
            ("conflicts_total", "conflicts", "decentralized above pre-assignment"),
            ("lost_updates", "lost updates", "decentralized above pre-assignment")):
        ests = {fix: _contrast(data, fix, metric) for fix in fixes}
        lines.append(_verdict(name, ests, claim)
                     + "  dec - pre: " + "; ".join(f"{rule_label(k)} {e.text(1)}"
                                                   for k, e in ests.items()))
    for n in NS:
        ests = {fix: _speed_contrast(data, fix, n) for fix in fixes}
        lines.append(_verdict(f"pre-assignment faster at p = 0.9, n = {n}", ests,
                              "decentralized makespan above pre-assigned")
                     + "  dec - pre (s): " + "; ".join(f"{rule_label(k)} {e.text(0)}"
                                                       for k, e in ests.items()))
    below = {fix: _below_amdahl(data, fix) for fix in fixes}
    lines.append("- **teams below Amdahl** (cells with mean speedup below 1/((1-p)+p/n)): "
                 + "; ".join(f"{rule_label(k)} {b}/{t}" for k, (b, t) in below.items()) + ".")
    for mode in ("preassign", "decentralized"):
        lines.append(_recovery_verdict(data, fixes, mode))
    return lines


def _sensitivity(records: Sequence[RunRecord]) -> list[str]:
    """The assumption rows: each knob setting against the same rule set at the defaults."""
    base = [r for r in records if not r.spec.assume]
    knob = [r for r in records if r.spec.assume]
    if not knob:
        return []
    lines = ["", "### Sensitivity to the reaction assumptions", "",
             "The study never told its agents of a refused claim or write, so how they react "
             "is assumed (knobs of `--assume`). Each row: the rule set with the knob moved, "
             "against the same rule set at the default knobs (team sizes 3 and 5, both modes "
             "pooled; stall runs for `adopt`).", "",
             "| model | rules | knobs | assumes | lost updates | conflicts | makespan (s) | "
             "recovery (s) |", "|---|---|---|---|---|---|---|---|"]
    for model in sorted({r.spec.model for r in knob}):
        for fix, assume, what in SENSITIVITY:
            rows = [r for r in knob if r.spec.model == model and r.spec.fix == fix
                    and r.spec.assume == assume]
            if not rows:
                continue
            ref = [r for r in base if r.spec.model == model and r.spec.fix == fix]

            def col(rs: list[RunRecord], get: Callable[[RunRecord], float | None],
                    name: str, tag: str = f"{model}|{fix}|{assume}") -> str:
                vals = [v for r in rs if r.spec.agents in NS
                        for v in [get(r)] if v is not None]
                return _boot(vals, f"{tag}|{name}|{len(rs)}").text(1)

            cells = []
            for name, get in (("lost", lambda r: float(r.metrics.lost_updates)),
                              ("conflicts", lambda r: float(r.metrics.conflicts_total)),
                              ("span", lambda r: r.metrics.makespan_s if r.metrics.success
                               else None),
                              ("recovery", lambda r: r.metrics.recovery_s)):
                same_exp = {r.spec.experiment for r in rows}
                ref_rows = [r for r in ref if r.spec.experiment in same_exp
                            and bool(r.spec.faults) == bool(rows[0].spec.faults)]
                cells.append(f"{col(rows, get, name)} (default {col(ref_rows, get, name)})")
            lines.append(f"| {model} | {rule_label(fix)} | `{assume}` | {what} | "
                         + " | ".join(cells) + " |")
    return lines


def ablation_report(records: Sequence[RunRecord]) -> list[str]:
    """The ablation's markdown: one table per model, a verdict per finding, sensitivity rows."""
    study = [r for r in records if r.spec.harness == "study"]
    if not study:
        return ["_No study-harness runs recorded._"]
    fixes = [f for f in RULE_SETS if any(r.spec.fix == f for r in study)]
    out = ["# Ablation: the study's rules, one fix at a time", "",
           f"{len(study)} runs. Rule sets: " + ", ".join(
               f"`{rule_label(f)}`" for f in fixes) + ".", "",
           "- `completion-deps` changes pre-assignment only: decentralized agents already "
           "complete only what they claimed, and a claim needs its dependencies done.",
           "- `fenced-claims` matters only when a holder stops replying: its effect is in the "
           "stall rows (the other rows are fault-free and should not move).",
           "- `claim-feedback` changes what an agent is told, not what the board holds: it "
           "moves outcomes only through how agents react (`phantom`, `heed`).", ""]
    for model in sorted({r.spec.model for r in study}):
        rs = [r for r in study if r.spec.model == model and not r.spec.assume]
        out += [*_model_section(_Data(rs), model, fixes), ""]
    out += _sensitivity(study)
    return out
