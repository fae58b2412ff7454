"""The sweep report: ``results.jsonl`` in; tables, plots and a written report out.

:func:`write_report` reads a sweep folder's ``results.jsonl`` (one :class:`RunRecord` a line)
and writes, next to it, ``summary.csv`` (every cell aggregate), ``summary.md`` (the cell table),
five PNG plots (:mod:`agents.plots`) and ``report.md``: headline findings computed from the
data, the study's statistics (:mod:`agents.stats`), one section per experiment label, the plots
and what each metric means. Sweeps are often partial (one mode, one p, no n=1 run, no faults):
every section then says what is missing instead of failing. Output is deterministic: no
timestamps, sorted groupings, PNGs without a software/time stamp.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from quorumboard.agents.study.experiment import read_records
from quorumboard.agents.study.metrics import (
    BOUND_SLACK,
    CONFLICT_KINDS,
    CellRow,
    RunRecord,
    amdahl,
    cell_rows,
    dag_bound,
    fit_serial_fraction,
    mean_or_none,
    paired_speedups,
    per_run_speedups,
    sd_or_none,
)
from quorumboard.agents.study.plots import Series, box_plot, grouped_bars, line_plot
from quorumboard.agents.study.stats import (
    StatResult,
    kruskal_across_p,
    spearman_vs_n,
    wilcoxon_vs_amdahl,
)
from quorumboard.agents.study.studyreport import study_sections

__all__ = ["METRIC_MEANINGS", "PLOTS", "read_records", "write_report"]

PRIMARY_EXPERIMENT = "sweep"
"""Headlines, statistics and plots (but recovery) use this experiment's runs when present: the
fault experiments would otherwise mix injected slowdowns into the scaling curves."""

PLOTS: tuple[tuple[str, str], ...] = (
    ("speedup_vs_n.png", "Speedup vs team size"),
    ("messages_vs_n.png", "Messages per run vs team size"),
    ("conflicts.png", "Conflicts per run by kind"),
    ("recovery.png", "Recovery time after a stalled or crashed agent"),
    ("tokens_vs_n.png", "Tokens per run vs team size"),
)

METRIC_MEANINGS: tuple[tuple[str, str], ...] = (
    ("success", "all tasks marked done before the round cap (not 'tests pass', as in the study)"),
    ("makespan_s", "run time (virtual for simulated brains) from start to the run's end; "
                   "cell means use successful runs only"),
    ("speedup", "mean makespan of the successful n=1 runs of the same cell / the run's "
                "makespan (an n=1 run: over the cell's other n=1 runs), averaged over "
                "successful runs (undefined without an n=1 baseline)"),
    ("amdahl", "Amdahl's prediction 1 / ((1 - p) + p / n), p = (tasks - critical path) / tasks"),
    ("ratio speedup [95% CI]", "mean n=1 makespan / mean makespan of the group's successful "
                               "runs (the mean of per-run speedups is biased upward by "
                               "Jensen's inequality), with a percentile bootstrap interval "
                               "(1,000 seeded resamples of both groups)"),
    ("bound min(n, N/CP)", "the most n agents can speed up N equal tasks whose longest chain "
                           "is CP (N/CP = 1 / (1 - p)); runs above it are listed"),
    ("paired speedup", "against the n=1 run of the same cell and repetition (in a sweep: the "
                       "same tasks' work times)"),
    ("gap", "speedup / amdahl: below 100% the team is under the bound"),
    ("karp_flatt", "Karp-Flatt serial fraction (1/s - 1/n) / (1 - 1/n) from the mean speedup; "
                   "compare with the design's 1 - p"),
    ("fitted f", "least-squares serial fraction f of speedup = 1 / (f + (1 - f) / n) over a "
                 "cell family's n > 1 runs"),
    ("messages", "agent replies per run (the study's messages; n x rounds in round mode)"),
    ("chat_messages", "team messages agents posted"),
    ("idle_replies", "replies with no effective action: none of their actions succeeded "
                     "(the study's idle replies)"),
    ("idle_rounds", "rounds in which no task was completed (round mode only)"),
    ("idle share, blocked share", "idle replies / replies; claims refused for unfinished "
                                  "dependencies / claim attempts (granted, blocked or held)"),
    ("concurrent_writes", "(round, file) pairs that >= 2 distinct agents tried to write in one "
                          "round, committed or refused alike (so a policy that refuses some "
                          "writes compares with last-writer-wins); round mode only"),
    ("rewrites", "writes of a file in a later round than its first write (async: every write "
                 "after the first)"),
    ("claims_blocked", "claims refused because a dependency was not done"),
    ("claims_contended", "claims refused because another agent held the task"),
    ("claims_lost", "agents finding their claim gone (lease lapsed or fenced out); not a "
                    "conflict kind, not in conflicts_total"),
    ("claims_expired", "agents silent past the claim TTL, so their claims' leases ended; not in "
                       "conflicts_total"),
    ("lost_updates", "versions a writer overwrote without having seen them "
                     "(sum of version - 1 - base_version)"),
    ("stale_rejected", "writes the board refused as based on a stale version"),
    ("fenced_rejected", "writes or completions refused for an outdated fencing token"),
    ("conflicts_total", "sum of the seven conflict kinds above"),
    ("straggler_gap_s", "per round, slowest minus mean reply latency (rounds with >= 2 replies "
                        "between 0 and 180 s), averaged; round mode only"),
    ("tokens", "input + output tokens per run"),
    ("token_multiplier", "tokens / mean tokens of the cell's n=1 runs"),
    ("efficiency", "speedup / token multiplier"),
    ("recovery_s", "time from a stall or crash of an agent working on tasks (tasks it had "
                   "claimed; tasks merely assigned to it do not count) until all those tasks "
                   "are done, averaged over faults (undefined if any stayed undone)"),
    ("unrecovered", "agent faults whose claimed tasks were never all completed"),
    ("recovered_by_other", "share of the runs with an agent fault in which another agent "
                           "finished a task of a recovered fault"),
    ("recovered_by_self", "share of the runs with a recovered agent fault in which the faulty "
                          "agent finished all its recovered tasks itself (after resuming)"),
    ("board time, longest board wait", "wall time the agents waited on the board per run "
                                       "(summed), part of run time unless the spec's "
                                       "board_time is off; the longest single wait (a view "
                                       "catch-up, or one reply's board calls)"),
    ("board_faults", "injected blackboard faults (leader killed, a replica partitioned away)"),
    ("board_heals", "injected blackboard faults undone (replica restarted, partition healed)"),
    ("board_errors", "board calls that failed (the action was lost)"),
    ("lost_work", "work the run reports lost (run_end)"),
)

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_NA = "—"


# ---------------------------------------------------------------------------------------------
# Reading


# ---------------------------------------------------------------------------------------------
# Formatting


def _f(x: float | int | None, digits: int = 2) -> str:
    if x is None:
        return _NA
    if isinstance(x, int):
        return str(x)
    return f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return _NA if x is None else f"{100 * x:.0f}%"


def _pm(mean: float | None, sd: float | None, digits: int = 1) -> str:
    if mean is None:
        return _NA
    return _f(mean, digits) if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _runs(k: int) -> str:
    return f"{k} run" if k == 1 else f"{k} runs"


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _err(values: Sequence[float]) -> float:
    """An error bar: the sd, or none drawn (0) for a single run (:func:`sd_or_none`)."""
    sd = sd_or_none(values)
    return 0.0 if sd is None else sd


def _primary(records: Sequence[RunRecord]) -> tuple[list[RunRecord], str]:
    """The runs headlines and scaling plots use, and a phrase saying which they are."""
    sweep = [r for r in records if r.spec.experiment == PRIMARY_EXPERIMENT]
    if sweep:
        return sweep, f"the `{PRIMARY_EXPERIMENT}` experiment's {len(sweep)} runs"
    return list(records), f"all {len(records)} runs (no `{PRIMARY_EXPERIMENT}` experiment)"


# ---------------------------------------------------------------------------------------------
# Tables

_CELL_HEADERS = ("suite/level", "model", "p", "mode", "policy", "sync", "faults", "n", "runs",
                 "success", "makespan s", "speedup", "ratio speedup [95% CI]", "Amdahl",
                 "bound min(n, N/CP)", "runs > bound", "gap", "Karp-Flatt", "messages",
                 "idle rounds", "conflicts", "straggler gap s", "tokens", "tokens x",
                 "efficiency", "note")


def _cell_cells(r: CellRow) -> list[str]:
    return [f"{r.suite}/{r.level}", r.model, f"{r.p:.2f}", r.mode, r.policy, r.sync, r.faults,
            str(r.agents), str(r.runs), _pct(r.success_rate), _pm(r.makespan_s, r.makespan_sd),
            _pm(r.speedup, r.speedup_sd, 2), _ratio(r), _f(r.amdahl), _f(r.dag_bound),
            str(r.above_bound), _pct(r.gap), _f(r.karp_flatt),
            _f(r.messages, 1), _f(r.idle_rounds, 1), _f(r.conflicts_total, 1),
            _f(r.straggler_gap_s), f"{r.tokens:.0f}", _f(r.token_multiplier),
            _f(r.efficiency), r.note]


def _ratio(r: CellRow) -> str:
    """The ratio-of-means speedup with its bootstrap interval."""
    if r.speedup_ratio is None:
        return _NA
    if r.speedup_ci_lo is None or r.speedup_ci_hi is None:
        return f"{r.speedup_ratio:.2f}"
    return f"{r.speedup_ratio:.2f} [{r.speedup_ci_lo:.2f}, {r.speedup_ci_hi:.2f}]"


def _write_csv(path: Path, rows: Sequence[CellRow]) -> None:
    fields = list(CellRow.model_fields)
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(fields)
        for row in rows:
            data = row.model_dump()
            w.writerow(["" if data[k] is None else data[k] for k in fields])


def _fault_free_key(r: CellRow) -> tuple[object, ...]:
    return (r.suite, r.level, f"{r.p:.3f}", r.mode, r.policy, r.brain, r.model, r.sync,
            r.round_cap, r.agents)


def _inflation_table(rows: Sequence[CellRow], all_rows: Sequence[CellRow]) -> list[str]:
    """Makespan of each faulted cell vs the same cell without faults: from the same experiment
    when it ran one (its clean arm), else from another experiment (e.g. the sweep)."""
    label = rows[0].experiment if rows else ""
    clean = sorted((r for r in all_rows if r.faults == "none"),
                   key=lambda r: (r.experiment == label, r.experiment))
    ref = {_fault_free_key(r): r for r in clean}  # same-experiment rows come last and win
    faulted = [r for r in rows if r.faults != "none"]
    out = ["", "Makespan inflation vs the same cell without faults:", ""]
    table = []
    for r in faulted:
        base = ref.get(_fault_free_key(r))
        infl = (r.makespan_s / base.makespan_s if base is not None and r.makespan_s is not None
                and base.makespan_s else None)
        table.append([f"{r.p:.2f}", r.mode, r.policy, r.faults, str(r.agents),
                      _pct(r.success_rate), _f(r.makespan_s, 1),
                      f"`{base.experiment}`" if base else _NA,
                      _f(base.makespan_s if base else None, 1),
                      _NA if infl is None else f"{infl:.2f}x",
                      _f(r.straggler_gap_s),
                      _f(base.straggler_gap_s if base else None)])
    if not any(ref.get(_fault_free_key(r)) for r in faulted):
        out.append("_No fault-free run of the same cells in this sweep: inflation undefined._")
        out.append("")
    out += _table(["p", "mode", "policy", "faults", "n", "success", "makespan s",
                   "fault-free from", "fault-free makespan s", "inflation", "straggler gap s",
                   "fault-free straggler gap s"], table)
    return out


def _recovery_table(rows: Sequence[CellRow]) -> list[str]:
    faulted = [r for r in rows if r.agent_faults > 0]
    out = ["", "Recovery after stalled or crashed agents, measured over the tasks each agent was "
           "working on (had claimed) when it stopped; tasks merely assigned to it are not "
           "counted. By another agent: share of the faulted runs in which another agent "
           "finished such a task; by itself: share of the runs with a recovered fault in which "
           "the faulty agent finished them all after resuming.", ""]
    if not faulted:
        return [*out, "_No stalled or crashed agent had claimed tasks in these runs: no "
                "recovery data._"]
    out += _table(
        ["p", "mode", "policy", "faults", "n", "runs", "success", "agent faults",
         "recovery s", "unrecovered", "by another agent", "by itself"],
        [[f"{r.p:.2f}", r.mode, r.policy, r.faults, str(r.agents), str(r.runs),
          _pct(r.success_rate), str(r.agent_faults), _f(r.recovery_s, 1), str(r.unrecovered),
          _pct(r.recovered_by_other), _pct(r.recovered_by_self)] for r in faulted])
    return out


def _board_table(rows: Sequence[CellRow]) -> list[str]:
    faulted = [r for r in rows if "board@" in r.faults]
    out = ["", "Blackboard faults (leader killed, a replica partitioned away) and heals:", ""]
    out += _table(
        ["p", "mode", "policy", "sync", "faults", "n", "runs", "success", "board faults",
         "board heals", "board errors", "lost work", "makespan s", "wall_s",
         "longest board wait s", "board time s"],
        [[f"{r.p:.2f}", r.mode, r.policy, r.sync, r.faults, str(r.agents), str(r.runs),
          _pct(r.success_rate), _f(r.board_faults, 1), _f(r.board_heals, 1),
          _f(r.board_errors, 1), _f(r.lost_work, 1), _f(r.makespan_s, 1), _f(r.wall_s, 1),
          _f(r.board_wait_max_s, 3), _f(r.board_s, 2)] for r in faulted])
    clean = {_fault_free_key(r): r for r in rows if r.faults == "none"}
    if clean:
        out += ["", "The same cells without board faults (board waits are part of run time "
                "unless a run's spec turned `board_time` off):", ""]
        out += _table(["p", "mode", "n", "runs", "makespan s", "wall_s",
                       "longest board wait s", "board time s"],
                      [[f"{r.p:.2f}", r.mode, str(r.agents), str(r.runs), _f(r.makespan_s, 1),
                        _f(r.wall_s, 1), _f(r.board_wait_max_s, 3), _f(r.board_s, 2)]
                       for r in clean.values()
                       if any(_fault_free_key(f)[:-1] == _fault_free_key(r)[:-1]
                              for f in faulted)])
    return out


def _experiment_section(label: str, records: Sequence[RunRecord], rows: Sequence[CellRow],
                        all_rows: Sequence[CellRow]) -> list[str]:
    out = [f"### Experiment `{label}`", "",
           f"{_runs(len(records))} in {len(rows)} (cell, team size) "
           f"group{'' if len(rows) == 1 else 's'}.", ""]
    out += _table(_CELL_HEADERS, (_cell_cells(r) for r in rows))
    specs = [r.spec for r in records]
    if any(s.faults or s.board_fault for s in specs):
        out += _inflation_table(rows, all_rows)
    if any(f.stall_at_s is not None or f.crash_at_s is not None
           for s in specs for f in s.faults) or any(r.metrics.agent_faults for r in records):
        out += _recovery_table(rows)
    if any(s.board_fault for s in specs):
        out += _board_table(rows)
    return [*out, ""]


def _above_bound(records: Sequence[RunRecord]) -> list[tuple[RunRecord, float]]:
    """n > 1 runs whose speedup (the study's: against the cell's mean n=1 makespan) exceeds
    min(n, N/CP). (An n=1 run's bound is 1: its leave-one-out speedup exceeds it whenever it
    was faster than its cell's other n=1 runs, which is spread, not a finding.)"""
    return [(r, s) for r, s in per_run_speedups(records)
            if s is not None and r.spec.agents > 1
            and s > dag_bound(r.spec.p, r.spec.agents) * (1 + BOUND_SLACK)]


def _bound_counts(records: Sequence[RunRecord]) -> tuple[int, int, int, int]:
    """(runs above by the study's speedup, n > 1 runs with one; runs above by the paired
    speedup, n > 1 runs with one)."""
    with_speedup = sum(1 for r, s in per_run_speedups(records)
                       if s is not None and r.spec.agents > 1)
    paired = paired_speedups(records)
    by_id = {r.spec.run_id: r for r in records}
    paired_above = sum(1 for rid, s in paired.items()
                       if s > dag_bound(by_id[rid].spec.p, by_id[rid].spec.agents)
                       * (1 + BOUND_SLACK))
    return len(_above_bound(records)), with_speedup, paired_above, len(paired)


def _bound_section(records: Sequence[RunRecord]) -> list[str]:
    above = sorted(_above_bound(records), key=lambda x: -x[1])
    paired = paired_speedups(records)
    n_above, n_all, p_above, p_all = _bound_counts(records)
    out = ["## Runs above the DAG bound", "",
           f"{n_above} of {n_all} runs with n > 1 have a speedup above min(n, N/CP) "
           "(N/CP = 1 / (1 - p)), the most a team can speed up a DAG of equal tasks. The "
           "study's speedup measures each run against the mean n=1 makespan of its cell, so a "
           "repetition whose work came out small exceeds the bound by noise. The paired "
           "speedup measures it against the n=1 run of the same repetition (in a sweep, the "
           f"same tasks' work times): {p_above} of {p_all} runs exceed the bound by it; what "
           "remains comes from tasks of unequal size (the bound assumes equal ones) and from "
           "a lone agent's wasted replies (a misread claim, an idle reply), which are on its "
           "critical path while in a team another agent covers some of them.", ""]
    if not above:
        return [*out, "_None._", ""]
    shown = above[:BOUND_LIST_MAX]
    out += _table(["run", "p", "mode", "sync", "task time", "n", "speedup", "paired speedup",
                   "bound", "makespan s"],
                  [[f"`{r.spec.run_id}`", f"{r.spec.p:.2f}", r.spec.mode, r.spec.sync,
                    r.spec.task_time, str(r.spec.agents), f"{s:.2f}",
                    _f(paired.get(r.spec.run_id)),
                    f"{dag_bound(r.spec.p, r.spec.agents):.2f}", f"{r.metrics.makespan_s:.1f}"]
                   for r, s in shown])
    if len(above) > len(shown):
        out += ["", f"... and {len(above) - len(shown)} more (all in `results.jsonl`)."]
    return [*out, ""]


def _rates_section(records: Sequence[RunRecord]) -> list[str]:
    """Emergent behaviour rates beside the study's ranges (paper.md): the simulated brains'
    rate constants are inputs, these are what they produce on the board."""
    out = ["## Behaviour rates vs the study", "",
           "Emergent rates of these runs (the simulated brains' rate constants are sensitivity "
           "knobs, not calibrated on the study), beside the ranges across the study's three "
           "models: idle share of replies (replies with no effective action) and the share of "
           "claim attempts refused for unfinished dependencies.", ""]
    rows = []
    for mode in sorted({r.spec.mode for r in records}):
        for n_label, pick in (("all n", lambda r: True), ("n > 1", lambda r: r.spec.agents > 1)):
            ms = [r.metrics for r in records if r.spec.mode == mode and pick(r)]
            replies = sum(m.messages for m in ms)
            attempts = sum(m.claim_attempts for m in ms)
            idle = sum(m.idle_replies for m in ms) / replies if replies else None
            blocked = sum(m.claims_blocked for m in ms) / attempts if attempts else None
            study = STUDY_RATES.get(mode, (_NA, _NA))
            rows.append([mode, n_label, str(len(ms)), _pct(idle), study[0], _pct(blocked),
                         study[1]])
    out += _table(["mode", "team sizes", "runs", "idle share of replies", "study",
                   "blocked share of claim attempts", "study"], rows)
    return [*out, ""]


STUDY_RATES: dict[str, tuple[str, str]] = {
    "decentralized": ("7-56%", "35-82%"),
    "preassign": ("14-41%", "27-40%"),
}
"""The study's per-reply ranges across its three models (notes/paper.md); no data for the
lead-based and hybrid modes."""

BOUND_LIST_MAX = 50


def _stats_section(records: Sequence[RunRecord], source: str) -> list[str]:
    results: list[StatResult] = [
        *wilcoxon_vs_amdahl(records, by="p"),
        *kruskal_across_p(records, "gap", by="mode"),
        *kruskal_across_p(records, "speedup", by="mode"),
        *spearman_vs_n(records, "speedup", by="mode"),
        *spearman_vs_n(records, "tokens", by="mode"),
    ]
    out = ["## Statistics", "",
           f"Over {source}. Wilcoxon: observed vs Amdahl speedup paired per n > 1 run "
           "(effect: median observed - Amdahl). Kruskal-Wallis: across p levels, n > 1 runs "
           "(effect: range of per-p medians). Spearman: against team size n (effect: rho).", ""]
    out += _table(["test", "metric", "group", "runs", "statistic", "p-value", "effect", "note"],
                  [[s.test, s.metric, s.group, str(s.n), _f(s.statistic, 3),
                    _NA if s.p_value is None else f"{s.p_value:.3g}", _f(s.effect, 3), s.note]
                   for s in results])
    return [*out, ""]


# ---------------------------------------------------------------------------------------------
# Headlines


def _speedups_by(records: Sequence[RunRecord]
                 ) -> dict[tuple[float, str], dict[int, list[float]]]:
    """(p, mode) -> n -> per-run speedups (runs without one left out)."""
    out: dict[tuple[float, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r, s in per_run_speedups(records):
        if s is not None:
            out[(r.spec.p, r.spec.mode)][r.spec.agents].append(s)
    return out


def _headlines(records: Sequence[RunRecord], all_records: Sequence[RunRecord],
               source: str) -> list[str]:
    out = ["## Headline findings", "", f"Computed from {source}.", ""]
    ok = sum(1 for r in records if r.metrics.success)
    out.append(f"- {ok} of {len(records)} runs succeeded ({_pct(ok / len(records))}).")
    by = _speedups_by(records)
    cells = cell_rows(records)
    if not by:
        out.append("- No speedup figures: no cell has a successful n=1 run (speedup is "
                   "measured against it; an n=1 run against the cell's *other* n=1 runs).")
    for (p, mode), per_n in sorted(by.items()):
        multi = {n: v for n, v in per_n.items() if n > 1}
        if not multi:
            out.append(f"- At p={p:.2f} ({mode}) only n=1 runs have a speedup.")
            continue
        n = max(multi)
        s, pred = statistics.fmean(multi[n]), amdahl(p, n)
        ratios = [c for c in cells if c.p == p and c.mode == mode and c.agents == n
                  and c.speedup_ratio is not None]
        ratio = mean_or_none(c.speedup_ratio for c in ratios)
        ci = (f"; per-cell 95% CIs from {min(c.speedup_ci_lo or 0 for c in ratios):.2f} to "
              f"{max(c.speedup_ci_hi or 0 for c in ratios):.2f}"
              if ratios and all(c.speedup_ci_lo is not None for c in ratios) else "")
        out.append(f"- At p={p:.2f} ({mode}), teams of {n} reach speedup {s:.2f} (mean of "
                   f"per-run speedups; ratio of mean makespans {_f(ratio)}{ci}) vs Amdahl "
                   f"{pred:.2f} ({_pct(s / pred)} of it) and the DAG bound "
                   f"{dag_bound(p, n):.2f} ({_runs(len(multi[n]))}).")
        f = fit_serial_fraction((k, x) for k, vals in multi.items() for x in vals)
        if f is not None:
            out.append(f"  Fitted serial fraction f = {f:.2f} (design 1 - p = {1 - p:.2f}).")
    modes = sorted({r.spec.mode for r in records})
    multi_runs = [r for r in records if r.spec.agents > 1]
    if multi_runs:
        parts = []
        for mode in modes:
            ms = [r.metrics for r in multi_runs if r.spec.mode == mode]
            if not ms:
                continue
            idle = mean_or_none(m.idle_rounds for m in ms)
            parts.append(f"{mode}: {statistics.fmean(m.messages for m in ms):.1f} messages, "
                         f"{_f(idle, 1)} idle rounds, "
                         f"{statistics.fmean(m.conflicts_total for m in ms):.1f} conflicts, "
                         f"{statistics.fmean(m.tokens for m in ms):.0f} tokens")
        out.append("- Coordination cost per run (n > 1 runs): " + "; ".join(parts) + ".")
    else:
        out.append("- No runs with n > 1: no coordination-cost comparison.")
    rows = [r for r in cell_rows(records) if r.agents > 1 and r.token_multiplier is not None]
    if rows:
        parts = []
        for mode in modes:
            mr = [r for r in rows if r.mode == mode]
            if mr:
                n = max(r.agents for r in mr)
                mult = mean_or_none(r.token_multiplier for r in mr if r.agents == n)
                eff = mean_or_none(r.efficiency for r in mr if r.agents == n)
                parts.append(f"{mode} at n={n}: tokens x{_f(mult)}, efficiency {_f(eff)}")
        out.append("- Token cost vs one agent: " + "; ".join(parts) + ".")
    n_above, n_all, p_above, p_all = _bound_counts(records)
    out.append(f"- {n_above} of {n_all} runs with n > 1 have a speedup above the DAG bound "
               f"min(n, N/CP) (listed under \"Runs above the DAG bound\"); against the n=1 "
               f"run of the same repetition (same work), {p_above} of {p_all}.")
    faulted = [r for r in all_records if r.metrics.agent_faults > 0]
    if faulted:
        parts = []
        for mode in sorted({r.spec.mode for r in faulted}):
            fm = [r.metrics for r in faulted if r.spec.mode == mode]
            rec = mean_or_none(m.recovery_s for m in fm)
            parts.append(f"{mode}: {_f(rec, 1)} s ({_runs(len(fm))} with a fault, "
                         f"{sum(m.unrecovered for m in fm)} unrecovered; finished by another "
                         f"agent in {sum(1 for m in fm if m.recovered_by_other)}, by the "
                         f"faulty agent itself in {sum(1 for m in fm if m.recovered_by_self)})")
        out.append("- Recovery of the tasks a stalled/crashed agent had claimed (all "
                   "experiments): " + "; ".join(parts) + ".")
    else:
        out.append("- No stalled or crashed agent had claimed tasks in any run: no recovery "
                   "data.")
    boarded = [r for r in all_records if r.spec.board_fault is not None]
    if boarded:
        ok_b = sum(1 for r in boarded if r.metrics.success)
        lost = statistics.fmean(r.metrics.lost_work for r in boarded)
        out.append(f"- Under blackboard faults {ok_b} of {len(boarded)} runs succeeded; "
                   f"mean lost work {lost:.2f} per run.")
    return [*out, ""]


# ---------------------------------------------------------------------------------------------
# Plots


def _by_mode_n(records: Sequence[RunRecord], value: Callable[[RunRecord], float]
               ) -> list[Series]:
    per: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        per[r.spec.mode][r.spec.agents].append(value(r))
    out = []
    for i, (mode, by_n) in enumerate(sorted(per.items())):
        ns = sorted(by_n)
        out.append(Series(label=mode, xs=ns, ys=[statistics.fmean(by_n[n]) for n in ns],
                          yerr=[_err(by_n[n]) for n in ns], marker=_MARKERS[i % len(_MARKERS)]))
    return out


def _plot_speedup(path: Path, records: Sequence[RunRecord], label: str = "") -> Path:
    by = _speedups_by(records)
    modes = sorted({mode for _, mode in by})
    series: list[Series] = []
    for (p, mode), per_n in sorted(by.items()):
        ns = sorted(per_n)
        series.append(Series(label=f"p={p:.2f} {mode}", xs=ns,
                             ys=[statistics.fmean(per_n[n]) for n in ns],
                             yerr=[_err(per_n[n]) for n in ns], color_key=f"p={p:.2f}",
                             marker=_MARKERS[modes.index(mode) % len(_MARKERS)]))
    if series:
        n_max = max(r.spec.agents for r in records)
        grid = [1 + (n_max - 1) * i / 50 for i in range(51)]
        for p in sorted({p for p, _ in by}):
            series.append(Series(label=f"Amdahl p={p:.2f}", xs=grid,
                                 ys=[1.0 / ((1 - p) + p / x) for x in grid],
                                 color_key=f"p={p:.2f}", style="dashed", marker=None))
    return line_plot(path, series, title=f"Speedup vs team size{label} (mean ± sd; dashed: Amdahl)",
                     xlabel="agents (n)", ylabel="speedup", ideal=bool(series),
                     empty_message="no speedup data (no successful n=1 run)")


def _plot_conflicts(path: Path, records: Sequence[RunRecord]) -> Path:
    per: dict[str, list[RunRecord]] = defaultdict(list)
    for r in records:
        per[f"{r.spec.mode} / {r.spec.policy}"].append(r)
    groups: dict[str, list[float]] = {}
    for name, rs in sorted(per.items()):
        vals = []
        for kind in CONFLICT_KINDS:
            xs = [getattr(r.metrics, kind) for r in rs]
            vals.append(mean_or_none(xs) or 0.0)
        groups[name] = vals
    return grouped_bars(path, list(CONFLICT_KINDS), groups,
                        title="Conflicts per run by kind (mode / policy)",
                        ylabel="mean per run")


def _plot_recovery(path: Path, records: Sequence[RunRecord]) -> tuple[Path, bool]:
    groups: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        if r.metrics.agent_faults > 0:
            counts[r.spec.mode][1] += 1
            if r.metrics.recovery_s is not None:
                groups[r.spec.mode].append(r.metrics.recovery_s)
                counts[r.spec.mode][0] += 1
    sorted_groups = dict(sorted(groups.items()))
    box_plot(path, sorted_groups, title="Recovery time after a stalled/crashed agent",
             ylabel="recovery (s)", empty_message="no data: no stall/crash faults",
             censored={m: (k, n) for m, (k, n) in counts.items()})
    return path, bool(counts)


def _write_plots(out_dir: Path, primary: Sequence[RunRecord], all_records: Sequence[RunRecord]
                 ) -> dict[str, str]:
    """Write every plot; returns file name -> a sentence on its data (or its absence)."""
    notes: dict[str, str] = {}
    _plot_speedup(out_dir / "speedup_vs_n.png", primary)
    notes["speedup_vs_n.png"] = (
        "Mean per-run speedup (± sd) per p level and mode; dashed: Amdahl's prediction per p; "
        "dotted: linear." if any(s is not None for _, s in per_run_speedups(primary))
        else "No speedup data: no cell has a successful n=1 run.")
    line_plot(out_dir / "messages_vs_n.png", _by_mode_n(primary, lambda r: r.metrics.messages),
              title="Messages (agent replies) per run", xlabel="agents (n)",
              ylabel="replies per run")
    notes["messages_vs_n.png"] = "Mean agent replies per run (± sd), one line per mode."
    _plot_conflicts(out_dir / "conflicts.png", primary)
    notes["conflicts.png"] = "Mean conflicts per run of each kind, by mode and conflict policy."
    _, has_recovery = _plot_recovery(out_dir / "recovery.png", all_records)
    notes["recovery.png"] = (
        "Recovery time per run (all experiments with stall/crash faults), by mode; each "
        "label says how many faulted runs recovered, and a mode with none is shown as a "
        "censored marker at the top (its recovery time exceeds every one observed)."
        if has_recovery else
        "No data: no run had a stalled or crashed agent holding tasks.")
    line_plot(out_dir / "tokens_vs_n.png", _by_mode_n(primary, lambda r: r.metrics.tokens),
              title="Tokens per run", xlabel="agents (n)", ylabel="tokens (in + out)")
    notes["tokens_vs_n.png"] = "Mean input + output tokens per run (± sd), one line per mode."
    return notes


# ---------------------------------------------------------------------------------------------
# Orchestration


def write_report(sweep_dir: Path) -> Path:
    """Write the summary, plots and ``report.md`` of ``sweep_dir/results.jsonl`` into
    ``sweep_dir``; returns the report's path. Raises ``FileNotFoundError`` without a
    ``results.jsonl`` and ``ValueError`` on a corrupt line other than a torn last one."""
    sweep_dir = Path(sweep_dir)
    results = sweep_dir / "results.jsonl"
    if not results.is_file():
        raise FileNotFoundError(f"{results}: no such file (not a sweep's output folder?)")
    records, duplicates = read_records(results)
    rows = cell_rows(records)
    _write_csv(sweep_dir / "summary.csv", rows)
    summary = ["# Cell summary", ""]
    summary += (_table(_CELL_HEADERS, (_cell_cells(r) for r in rows)) if rows
                else ["_No runs recorded._"])
    (sweep_dir / "summary.md").write_text("\n".join(summary) + "\n", encoding="utf-8")

    primary, source = _primary(records)
    plot_notes = _write_plots(sweep_dir, primary, records)
    labels = sorted({r.spec.experiment for r in records},
                    key=lambda x: (x != PRIMARY_EXPERIMENT, x))
    modes = sorted({r.spec.mode for r in records})
    harnesses = sorted({r.spec.harness for r in records})
    ps = sorted({r.spec.p for r in records})
    ns = sorted({r.spec.agents for r in records})
    out = [f"# Sweep report: {sweep_dir.name}", ""]
    if not records:
        out += ["No runs recorded in `results.jsonl`: nothing to report.", ""]
    else:
        out += [f"{len(records)} runs; harness: {', '.join(harnesses)}; models: "
                f"{', '.join(sorted({r.spec.model for r in records}))}; experiments: "
                f"{', '.join(labels)}; modes: "
                f"{', '.join(modes)}; p levels: {', '.join(f'{p:.2f}' for p in ps)}; "
                f"team sizes: {', '.join(map(str, ns))}."
                + (f" {duplicates} duplicate records ignored (last kept)." if duplicates
                   else ""), ""]
        out += _headlines(primary, records, source)
        out += _bound_section(primary)
        board = [r for r in primary if r.spec.harness == "board"]
        out += _rates_section(board) if board else []
        out += study_sections(primary)
        out += _stats_section(primary, source)
        out += ["## Experiments", ""]
        for label in labels:
            recs = [r for r in records if r.spec.experiment == label]
            out += _experiment_section(label, recs, [r for r in rows if r.experiment == label],
                                       rows)
    out += ["## Plots", ""]
    for name, title in PLOTS:
        out += [f"### {title}", "", plot_notes[name], "", f"![{title}]({name})", ""]
    for model in sorted({r.spec.model for r in primary if r.spec.harness == "study"}):
        name = f"speedup_{model}.png"
        _plot_speedup(sweep_dir / name, [r for r in primary if r.spec.harness == "study"
                                         and r.spec.model == model], f", {model}")
        out += [f"### Speedup vs team size, {model} (study harness)", "",
                "Mean per-run speedup (± sd) per p level and mode; dashed: Amdahl.", "",
                f"![speedup {model}]({name})", ""]
    out += ["## What each metric means", ""]
    out += [f"- **{name}**: {meaning}." for name, meaning in METRIC_MEANINGS]
    out += ["", "Cell = every spec field but team size, repetition and seed; the full cell "
            "table is in `summary.md` / `summary.csv`."]
    report = sweep_dir / "report.md"
    report.write_text("\n".join(out) + "\n", encoding="utf-8")
    return report
