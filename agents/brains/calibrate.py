"""Fit and re-measure the study brains on the study's per-reply tables.

Inputs only: the per-reply rows of notes/paper-calibration.md §3-§4 (shipped as
``agents/brains/calibration/study_replies.json``). The fit uses the rows with n = 1 and n = 2; the rows
with n = 3-5 are never seen by it (they are printed beside the simulated rates for validation).
The outcome figures of the study (speedup, messages, idle rounds, conflicts, tokens per run) are
not inputs anywhere.

``python -m quorumboard.agents.brains.calibrate fit [--model M] [--evals K]`` refits and rewrites the
calibration files; ``... check`` prints simulated per-reply rates beside the study's for every
row. Simulations here run the study's rules on :class:`~agents.study.MemoryStore` (the same code
the board runs, without the board: a test checks the two agree event for event), on projects of
the study's three shapes (:func:`study_shape`: the task files' dependency structure, not their
text).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from quorumboard.agents.brains.study import (
    STUDY_MODELS,
    Assumptions,
    Calibration,
    LatencyBin,
    ModeParams,
    StudyBrain,
    load_calibration,
)
from quorumboard.agents.study.metrics import run_metrics
from quorumboard.agents.team.events import EventLog, RunEvent
from quorumboard.agents.team.study_harness import MemoryStore, ReplyStats, StudyEngine, reply_stats
from quorumboard.agents.team.tasks import Project, Task

__all__ = ["METRICS", "STUDY_FOREIGN", "Rates", "StudyRow", "check_foreign", "check_rows",
           "dispersions", "fitted_rows", "foreign_rate", "measure", "simulate", "study_rows",
           "study_se", "study_shape", "tolerance"]

LEVELS = ("p02", "p05", "p09")
METRICS = ("idle", "blocked", "edits", "completions", "multi", "claims")
SHARES = frozenset({"idle", "blocked", "multi"})
"""Metrics that are shares of replies (or of claim attempts): binomial errors."""
Z = 3.0
"""Tolerance in standard errors of the difference (study's and simulation's)."""
MEAN_SE_FLOOR = 0.02


def study_shape(level: str) -> Project:
    """A project with the dependency structure of the study's task files at ``level``
    (paper.md: p09 = 19 independent tasks + 1 depending on one of them; p05 = 11 roots + a
    9-task chain hanging off a root; p02 = 5 roots + a 15-task chain), one file per task."""
    chain = {"p02": 16, "p05": 10, "p09": 2}[level]
    tasks = [Task(id=f"task-{i}", dependencies=(f"task-{i - 1}",) if 1 < i <= chain else (),
                  files=(f"t{i}.py",)) for i in range(1, 21)]
    return Project(name=f"shape-{level}", suite="shape", level=level, tasks=tuple(tasks))


@dataclass(frozen=True)
class StudyRow:
    model: str
    mode: str
    level: str
    n: int
    values: dict[str, float]
    replies: int | None


def _study_data() -> dict[str, Any]:
    text = (resources.files("quorumboard.agents.brains") / "calibration" / "study_replies.json"
            ).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def study_rows() -> list[StudyRow]:
    """The study's per-reply rows (§3, with §4's n = 1 reply counts). The note gives no reply
    count for n >= 2: such a row takes the n = 1 count of its (model, mode, level), an
    assumption that usually understates it (a larger team's runs mostly have more replies;
    not everywhere: gpt-5.2's pre-assigned runs at p = 0.5 imply fewer in a pair than alone)
    and so widens its tolerance."""
    raw = _study_data()["rows"]
    lone = {(r["model"], r["mode"], r["level"]): r["replies"] for r in raw if r["n"] == 1}
    return [StudyRow(model=r["model"], mode=r["mode"], level=r["level"], n=r["n"],
                     values={m: float(r[m]) for m in METRICS},
                     replies=r["replies"] or lone.get((r["model"], r["mode"], r["level"])))
            for r in raw]


_BIN_POINTS = {"0": 0.0, "1": 1.0, "2": 2.0, "3-5": 4.0}


def _dispersion(h: dict[str, Any]) -> float:
    """Variance over mean of a §2 histogram (bins 0, 1, 2, 3-5, 6+ in % of replies, and the
    mean). Assumed inside the open bins: 3-5 uniform on 3, 4, 5; 6+ at the mean the histogram's
    mean implies, spread uniformly from 6 to twice that less 6."""
    share = {k: float(v) / 100 for k, v in h["percent"].items()}
    mean = float(h["mean"])
    if mean <= 0:  # nothing but empty replies: no spread
        return 0.0
    known = sum(share[k] * x for k, x in _BIN_POINTS.items())
    top = max((mean - known) / share["6+"], 6.0) if share["6+"] > 0 else 6.0
    second = sum(share[k] * x * x for k, x in _BIN_POINTS.items()) + share["3-5"] * 2 / 3 \
        + share["6+"] * (top * top + (2 * top - 12) ** 2 / 12)
    return max(second - mean * mean, 0.0) / mean


@functools.cache
def dispersions() -> dict[tuple[str, str, str], float]:
    """(model, mode, metric) -> a mean's per-reply variance over its mean, from §2's pooled
    histograms of edits, first-time completions and claim attempts per reply. Pooled over p
    and n, it carries the spread between cells too, so on average it overstates a cell's own
    (a wider tolerance, but never one the simulation can move)."""
    return {(h["model"], h["mode"], h["metric"]): _dispersion(h)
            for h in _study_data()["per_reply_histograms"]}


def study_se(row: StudyRow, metric: str) -> float:
    """The standard error of the study's per-reply figure of ``row``, from the study's side
    only, so that nothing a fit moves can widen it. Shares: binomial with the row's reply count
    (blocked: of claim attempts, estimated as replies x claims per reply). Means: quasi-Poisson,
    the row's mean times the model and mode's index of dispersion (:func:`dispersions`),
    over the row's reply count."""
    study_n = row.replies or 100
    value = row.values[metric]
    if metric == "blocked":
        study_n = max(1, round(study_n * row.values["claims"]))
    if metric in SHARES:
        v = min(max(value, 0.5 / study_n), 1 - 0.5 / study_n)
        return math.sqrt(v * (1 - v) / study_n)
    spread = math.sqrt(max(value, 0.0) * dispersions()[(row.model, row.mode, metric)])
    return max(spread, MEAN_SE_FLOOR) / math.sqrt(study_n)


def fitted_rows(model: str, mode: str) -> list[StudyRow]:
    """The rows a fit of ``model`` in ``mode`` sees: n = 1 and 2 (n = 3-5 validate)."""
    return [r for r in study_rows() if r.model == model and r.mode == mode and r.n <= 2]


def _fit_record(loss: float, evals: int, runs: int, starts: int) -> dict[str, Any]:
    """What a calibration file records of the fit behind a mode's propensities."""
    return {"rows": "n = 1, 2 of this model and mode (study_replies.json)",
            "loss": round(loss, 2), "evals": evals, "runs_per_row": runs, "starts": starts}


@dataclass(frozen=True)
class Rates:
    """Per-reply rates of a set of replies, with their standard errors clustered by run (the
    replies of one run are not independent draws: a lone pre-assigned agent's early sweep
    decides every later reply of its run)."""

    replies: int
    attempts: int
    values: dict[str, float]
    se: dict[str, float]


def _parts(s: ReplyStats) -> dict[str, tuple[float, float]]:
    """Per reply, each metric as (numerator, denominator) of a ratio over replies."""
    return {"idle": (float(s.idle), 1.0), "multi": (float(s.completions >= 2), 1.0),
            "edits": (float(s.edits), 1.0), "completions": (float(s.completions), 1.0),
            "claims": (float(s.claims), 1.0), "blocked": (float(s.blocked), float(s.claims))}


def ratio_estimate(parts: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Σ numerators ÷ Σ denominators over runs (one (num, den) pair a run), and the ratio
    estimator's standard error clustered by run (0 with fewer than two runs or no
    denominator)."""
    num = sum(n for n, _ in parts)
    den = sum(d for _, d in parts)
    value = num / den if den else 0.0
    k = len(parts)
    resid = sum((n - value * d) ** 2 for n, d in parts)
    return value, (math.sqrt(resid * k / max(k - 1, 1)) / den if den and k > 1 else 0.0)


def measure(stats: Sequence[ReplyStats]) -> Rates:
    """The study's per-reply figures of these replies (blocked: of logged claim attempts),
    with the ratio estimator's standard error over runs."""
    runs: dict[int, dict[str, list[float]]] = {}
    for s in stats:
        acc = runs.setdefault(s.run, {m: [0.0, 0.0] for m in METRICS})
        for m, (num, den) in _parts(s).items():
            acc[m][0] += num
            acc[m][1] += den
    values, se = {}, {}
    for m in METRICS:
        values[m], se[m] = ratio_estimate([(r[m][0], r[m][1]) for r in runs.values()])
    return Rates(replies=len(stats), attempts=sum(s.claims for s in stats), values=values,
                 se=se)


def simulate_runs(cal: Calibration, mode: str, level: str, n: int, runs: int, seed: int = 0,
                  assumptions: Assumptions | None = None, params: ModeParams | None = None,
                  round_cap: int = 60) -> list[list[RunEvent]]:
    """The event logs of ``runs`` in-memory runs of one (model, mode, level, n), each ending
    in a ``run_end`` like the runner's (success, tasks done, harness)."""
    project = study_shape(level)
    team = tuple(f"a{i}" for i in range(n))
    out: list[list[RunEvent]] = []
    for r in range(runs):
        s = seed * 1_000_003 + r * 7_919 + n * 31 + LEVELS.index(level)
        brains = {a: StudyBrain(cal, mode, seed=s * 17 + i, assumptions=assumptions,
                                params=params) for i, a in enumerate(team)}
        log = EventLog(None)
        engine = StudyEngine(project=project, team=team, mode=mode, store=MemoryStore(),
                             brains=brains, log=log, round_cap=round_cap, seed=s)
        engine.setup()
        rounds = engine.run()
        log.emit(max(e.t_s for e in log.events), "run_end",
                 data={"success": engine.done, "rounds": rounds, "harness": "study",
                       "tasks_done": sum(1 for rec in engine.records().values()
                                         if rec["status"] == "done")})
        out.append(log.events)
    return out


def simulate(cal: Calibration, mode: str, level: str, n: int, runs: int, seed: int = 0,
             assumptions: Assumptions | None = None, params: ModeParams | None = None,
             round_cap: int = 60) -> list[ReplyStats]:
    """The replies of ``runs`` in-memory runs of one (model, mode, level, n)."""
    return [dataclasses.replace(st, run=i)
            for i, events in enumerate(simulate_runs(cal, mode, level, n, runs, seed,
                                                     assumptions, params, round_cap))
            for st in reply_stats(events)]


OUTCOMES = ("messages", "idle_rounds", "concurrent_writes", "tokens", "makespan_s")


def outcomes(cal: Calibration, mode: str, level: str, n: int, runs: int,
             assumptions: Assumptions | None = None, seed: int = 0) -> dict[str, float]:
    """Mean outcomes of in-memory runs (makespan over successful runs), and success rate."""
    ms = [run_metrics(ev) for ev in simulate_runs(cal, mode, level, n, runs, seed,
                                                  assumptions)]
    out = {k: statistics.fmean(float(getattr(m, k) or 0) for m in ms) for k in OUTCOMES[:4]}
    ok = [m.makespan_s for m in ms if m.success]
    out["makespan_s"] = statistics.fmean(ok) if ok else math.nan
    out["success"] = len(ok) / len(ms)
    return out


KNOBS: tuple[tuple[str, str], ...] = (
    ("baseline", ""), ("pick_first=0", "pick_first=0"), ("pick_first=0.5", "pick_first=0.5"),
    ("pick_first=1", "pick_first=1"),
    ("cooccur=1", "cooccur=1"), ("persist=0.5", "persist=0.5"),
    ("helper_share=0", "helper_share=0"), ("helper_share=0.5", "helper_share=0.5"),
    ("foreign_share=0", "foreign_share=0"), ("foreign_share=1", "foreign_share=1"),
    ("foreign_open=1", "foreign_open=1"))


def sensitivity(models: Sequence[str], runs: int, ns: Sequence[int] = (3, 5)) -> list[str]:
    """How the outcomes move with each assumption knob: per knob setting, model and mode,
    means over p levels and ``ns`` of messages, idle rounds, concurrent writes, tokens and
    speedup (mean n = 1 makespan / mean makespan), as a markdown table."""
    from quorumboard.agents.brains.study import parse_assumptions
    from quorumboard.agents.study.metrics import amdahl

    lines = ["| knob | model | mode | messages | idle rounds | concurrent writes | tokens | "
             "speedup | below Amdahl | success |", "|" + "---|" * 10]
    for label, text in KNOBS:
        for model in models:
            cal = load_calibration(model)
            for mode in ("decentralized", "preassign"):
                a = parse_assumptions(text, cal, mode)
                acc: dict[str, list[float]] = {k: [] for k in (*OUTCOMES[:4], "speedup",
                                                               "success")}
                below = total = 0
                for level in LEVELS:
                    base = outcomes(cal, mode, level, 1, runs, a)["makespan_s"]
                    for n in ns:
                        o = outcomes(cal, mode, level, n, runs, a)
                        for k in OUTCOMES[:4]:
                            acc[k].append(o[k])
                        acc["success"].append(o["success"])
                        speed = base / o["makespan_s"]
                        if math.isfinite(speed):
                            acc["speedup"].append(speed)
                            total += 1
                            below += speed < amdahl({"p02": 0.2, "p05": 0.5, "p09": 0.9}[level],
                                                    n)
                mean = {k: statistics.fmean(v) if v else math.nan for k, v in acc.items()}
                lines.append(f"| {label} | {model} | {mode} | {mean['messages']:.0f} | "
                             f"{mean['idle_rounds']:.1f} | {mean['concurrent_writes']:.1f} | "
                             f"{mean['tokens'] / 1e3:.0f}k | {mean['speedup']:.2f} | "
                             f"{below}/{total} | {100 * mean['success']:.0f}% |")
    return lines


def tolerance(row: StudyRow, sim: Rates, metric: str) -> float:
    """Z standard errors of (study - simulation): the study's (:func:`study_se`) and the
    simulation's, clustered by run (:class:`Rates`). The simulation's shrinks with the runs
    simulated; it is here because the check re-measures a finite sample, and it is left out
    of the fit's loss (:func:`_loss`), where a fit could widen it by adding spread."""
    return Z * math.hypot(study_se(row, metric), sim.se[metric])


def check_rows(cal: Calibration, rows: Sequence[StudyRow], runs: int, seed: int = 0,
               params: dict[str, ModeParams] | None = None, margin: float = 1.0
               ) -> list[tuple[StudyRow, Rates, list[str]]]:
    """Simulate each row's cell and list the metrics outside ``margin`` x tolerance."""
    out = []
    for row in rows:
        sim = measure(simulate(cal, row.mode, row.level, row.n, runs, seed,
                               params=(params or {}).get(row.mode)))
        bad = [m for m in METRICS
               if abs(sim.values[m] - row.values[m]) > margin * tolerance(row, sim, m)]
        out.append((row, sim, bad))
    return out


# ------------------------------------------------------------------------------- fitting

FIT_NAMES = {
    "decentralized": ("engage0", "engage_n", "greedy", "claim_held", "beta", "same", "hazard",
                      "edit_task", "edit_more", "edit_sure", "extra", "extra_idle"),
    "preassign": ("engage0", "engage_n", "sweep0", "sweep1", "sweep_n", "sweep_len",
                  "claim_first", "same",
                  "edit_task", "edit_more", "extra", "extra_idle"),
}
_PROB = frozenset({"greedy", "claim_held", "beta", "same", "hazard", "claim_first",
                   "edit_sure"})
_RATE = frozenset({"edit_task", "edit_more", "extra", "extra_idle"})
SOURCES = {
    "engage0": "§3 idle % and completions per reply, n = 1, p02/p05/p09",
    "engage_n": "§3 idle % and completions per reply, n = 2 against n = 1, p02/p05/p09",
    "greedy": "§3 claim attempts per reply and % replies completing >= 2, n = 1-2",
    "claim_held": "§3 claim attempts and completions per reply, n = 1-2 (cf. §4: claim -> "
                  "completion in a later reply)",
    "edit_more": "§3 edit_file per reply against completions per reply, n = 1-2",
    "beta": "§3 blocked % of claim attempts, n = 1-2, p02/p05/p09",
    "same": "§3 first-time completions per reply and % >= 2, n = 1-2 (cf. §4: claim -> "
            "completion in the same reply)",
    "hazard": "§3 first-time completions per reply, n = 1-2 (cf. §4: completion in a later "
              "reply)",
    "sweep0": "§3 % replies completing >= 2 and completions per reply, n = 1-2",
    "sweep1": "§3 % replies completing >= 2 across p02/p05/p09 (share of the dealt list "
              "blocked), n = 1-2",
    "sweep_n": "§3 % replies completing >= 2, n = 2 against n = 1",
    "sweep_len": "§3 % replies completing >= 2 and completions per reply, n = 1 (a 20-task "
                 "list) against n = 2 (dealt lists of 2-18: §1's loads)",
    "claim_first": "§3 claim attempts per reply against completions per reply, n = 1-2",
    "edit_task": "§3 edit_file per reply, n = 1-2",
    "edit_sure": "§3 idle % against edit_file per reply, n = 1-2 (cf. §2: the share of replies "
                 "writing exactly one file)",
    "extra": "§3 edit_file per reply and idle %, n = 1-2",
    "extra_idle": "§3 edit_file per reply and idle %, n = 1-2",
    "tests": "§2 run_tests per reply (pooled over p and n; direct)",
}


def _to_params(base: ModeParams, names: Sequence[str], x: Sequence[float]) -> ModeParams:
    vals: dict[str, float] = {}
    for name, v in zip(names, x, strict=True):
        if name in _PROB:
            vals[name] = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, v))))
        elif name in _RATE:
            vals[name] = min(20.0, math.exp(max(-10.0, min(3.0, v))))
        else:
            vals[name] = v
    return base.model_copy(update=vals)


def _from_params(p: ModeParams, names: Sequence[str]) -> list[float]:
    out = []
    for name in names:
        v = float(getattr(p, name))
        if name in _PROB:
            v = min(max(v, 1e-4), 1 - 1e-4)
            out.append(math.log(v / (1 - v)))
        elif name in _RATE:
            out.append(math.log(max(v, 1e-4)))
        else:
            out.append(v)
    return out


def _loss(cal: Calibration, mode: str, params: ModeParams, rows: Sequence[StudyRow],
          runs: int, seed: int = 1) -> float:
    total = 0.0
    for row in rows:
        sim = measure(simulate(cal, mode, row.level, row.n, runs, seed=seed, params=params))
        for m in METRICS:
            scale = max(study_se(row, m), 0.02 if m in SHARES
                        else 0.05 * max(row.values[m], 0.2))
            total += ((sim.values[m] - row.values[m]) / scale) ** 2
    return total


STEP_MIN = 0.03


def fit_mode(cal: Calibration, mode: str, rows: Sequence[StudyRow], evals: int,
             runs: int, only: Sequence[str] = ()) -> tuple[ModeParams, float]:
    """Coordinate search over the mode's propensities (logits of probabilities, logs of
    means): each pass tries a step up and down per parameter, keeps an improvement, halves the
    step of a parameter that found none. Common random numbers (fixed seeds) make the loss a
    deterministic, piecewise-constant function of the parameters, on which a simplex stalls
    while a shrinking coordinate step does not. Bounded by ``evals`` loss evaluations."""
    names = tuple(n for n in FIT_NAMES[mode] if not only or n in only)
    base = cal.modes[mode]
    x = _from_params(base, names)
    best = _loss(cal, mode, base, rows, runs)
    steps = [1.0] * len(names)
    used = 1
    while used < evals and max(steps) > STEP_MIN:
        for i in range(len(names)):
            if steps[i] <= STEP_MIN:
                continue
            for sign in (1.0, -1.0):
                trial = list(x)
                trial[i] += sign * steps[i]
                loss = _loss(cal, mode, _to_params(base, names, trial), rows, runs)
                used += 1
                if loss < best:
                    x, best = trial, loss
                    break
            else:
                steps[i] /= 2
    return _to_params(base, names, x), best


FIT_STARTS: dict[str, tuple[dict[str, float], ...]] = {
    "decentralized": ({},),
    "preassign": ({}, *({"sweep_len": sl, "sweep0": s0, "sweep_n": 0.0}
                        for sl in (0.0, -1.0, -2.0, -3.0) for s0 in (0.5, 2.0))),
}
"""Starting points of the fit per mode (over the current values; ``{}`` is the current values
themselves, so a refit never ends worse than where it began): the pre-assigned sweep's
list-length slope trades off against its intercept and team term, which a coordinate search
cannot move together, so the fit starts from several slopes and keeps the best."""


def fit_starts(mode: str, only: Sequence[str] = ()) -> list[dict[str, float]]:
    """The mode's :data:`FIT_STARTS` restricted to the fitted names (a start must not move a
    propensity the fit was told to leave alone), without repeats."""
    out: list[dict[str, float]] = []
    for start in FIT_STARTS[mode]:
        kept = {k: v for k, v in start.items() if not only or k in only}
        if kept not in out:
            out.append(kept)
    return out


def fit_mode_multi(cal: Calibration, mode: str, rows: Sequence[StudyRow], evals: int,
                   runs: int, only: Sequence[str] = ()) -> tuple[ModeParams, float]:
    """:func:`fit_mode` from each of the mode's :data:`FIT_STARTS`; the lowest loss wins."""
    best: tuple[ModeParams, float] | None = None
    for start in fit_starts(mode, only):
        trial = cal.model_copy(update={"modes": dict(
            cal.modes, **{mode: cal.modes[mode].model_copy(update=start)})})
        got = fit_mode(trial, mode, rows, evals, runs, only)
        if best is None or got[1] < best[1]:
            best = got
    assert best is not None
    return best


PROFILE_SEEDS = (2, 3, 4)
"""Held-out seeds on which a profiled knob's settings are compared (the fit sees seed 1 only,
and with a few runs per row its in-sample loss flatters whichever setting it fitted)."""


def profile_pick_first(cal: Calibration, mode: str, values: Sequence[float], evals: int,
                       runs: int) -> Calibration:
    """Which setting of the ``pick_first`` knob the mode's n = 1-2 rows prefer, made its
    default (``Calibration.pick_first``) with the propensities refitted there.

    The log cannot tell which ready task a claim goes to, but the n = 2 rows show how often
    two agents go for the same one: a claim that another agent's faster reply won is ignored
    without a trace, so collisions halve the logged claims and completions per reply in a pair
    while the pair's throughput stays a lone agent's. Each setting gets its own fit of every
    propensity (a profile of the loss) from the calibration's current propensities, and the
    settings are compared on held-out seeds (:data:`PROFILE_SEEDS`). Then every other setting
    is fitted again from the leading setting's optimum, and keeps that fit if it is better in
    sample: the coordinate search lands in different basins from different starts (one start
    per setting put gemini's fits at 50-81 in one profile and 43-63 in another), so a lead
    won from a better basin must survive the others being given that basin. The table goes
    into the file's sources. The caller re-derives the helper shares and residuals
    (``fit_helper``, :func:`annotate`)."""
    if not values:
        raise ValueError("profile: no pick_first setting to compare (--values is empty)")
    rows = fitted_rows(cal.model, mode)
    table: dict[str, Any] = {}
    fits: dict[float, tuple[Calibration, float, list[float]]] = {}

    def held_out(trial: Calibration) -> list[float]:
        return [_loss(trial, mode, trial.modes[mode], rows, runs, seed=s) for s in PROFILE_SEEDS]

    def record(value: float, origin: str) -> None:
        _, loss, held = fits[value]
        table[f"{value:g}"] = {"fit loss": round(loss, 1), "started from": origin,
                               "held-out losses": [round(h, 1) for h in held]}
        print(f"{cal.model} {mode} pick_first={value:g}: fit {loss:.1f} from {origin}, held out "
              f"{', '.join(f'{h:.1f}' for h in held)}", file=sys.stderr)

    for value in values:
        trial = cal.model_copy(update={"pick_first": {**cal.pick_first, mode: value}})
        fitted, loss = fit_mode(trial, mode, rows, evals, runs)
        trial = trial.model_copy(update={"modes": {**trial.modes, mode: fitted}})
        fits[value] = (trial, loss, held_out(trial))
        record(value, "the current values")
    lead = min(values, key=lambda v: statistics.fmean(fits[v][2]))
    lead_params = fits[lead][0].modes[mode]
    for value in values:
        if value == lead:
            continue
        trial = fits[value][0].model_copy(update={"modes": {**cal.modes, mode: lead_params}})
        fitted, loss = fit_mode(trial, mode, rows, evals, runs)
        if loss < fits[value][1]:
            trial = trial.model_copy(update={"modes": {**trial.modes, mode: fitted}})
            fits[value] = (trial, loss, held_out(trial))
            record(value, f"the optimum at pick_first={lead:g}")
        else:
            print(f"{cal.model} {mode} pick_first={value:g}: from the optimum at {lead:g} "
                  f"fit {loss:.1f}, not better", file=sys.stderr)
        table[f"{value:g}"]["fit loss from the leading optimum"] = round(loss, 1)
    chosen = min(values, key=lambda v: statistics.fmean(fits[v][2]))
    out = fits[chosen][0]
    sources = dict(out.sources)
    sources[f"pick_first {mode}"] = {
        "rows": "n = 1, 2 of this model and mode; every propensity refitted at each setting "
                "from the current values, then the other settings from the leading one's optimum",
        "evals": evals, "runs_per_row": runs, "held-out seeds": list(PROFILE_SEEDS),
        "settings": table, "chosen": chosen}
    sources[mode] = {"fit": {**_fit_record(table[f"{chosen:g}"]["fit loss"], evals, runs, 1),
                             "profiled": f"pick_first {mode}"}}
    return out.model_copy(update={"sources": sources})


def calibration_path(model: str) -> Path:
    return Path(__file__).parent / "calibration" / f"{model}.json"


# §5 p50 / mean latency per edit count, §2 run_tests per reply, §6 helper-file share.
_LATENCY = {
    "claude-sonnet-4-6": ((1.9, 3.0), (5.8, 8.2), (10.6, 11.9), (16.8, 18.5), (31.4, 30.2),
                          (37.7, 36.0)),
    "gemini-3-flash-preview": ((3.6, 6.2), (3.9, 4.9), (7.2, 8.8), (9.2, 11.0), (13.7, 14.5),
                               (15.1, 15.1)),
    "gpt-5.2": ((1.3, 2.1), (3.6, 4.2), (7.0, 7.8), (11.8, 13.4), (20.7, 23.1), (41.2, 37.7)),
}
_BINS = ((0, 0), (1, 1), (2, 2), (3, 5), (6, 10), (11, 10_000))
_TESTS = {"claude-sonnet-4-6": (0.36, 0.77), "gemini-3-flash-preview": (0.90, 0.57),
          "gpt-5.2": (0.30, 0.46)}
_HELPER = {"claude-sonnet-4-6": (0.21, 0.20), "gemini-3-flash-preview": (0.003, 0.002),
           "gpt-5.2": (0.20, 0.18)}
STUDY_FOREIGN: dict[str, tuple[float, float, float, float]] = {
    "claude-sonnet-4-6": (0.001, 0.03, 0.001, 0.03),
    "gemini-3-flash-preview": (0.04, 0.05, 0.01, 0.06),
    "gpt-5.2": (0.12, 0.10, 0.15, 0.23)}
"""§6: pre-assigned edits of a task file dealt to another agent, share of all edits, at
n = 2, 3, 4, 5 (n = 2 fits ``foreign_share``; n = 3-5 validate it)."""
_TOKENS_PER_EDIT = {"claude-sonnet-4-6": 500, "gemini-3-flash-preview": 350, "gpt-5.2": 450}


def initial_calibration(model: str) -> Calibration:
    """A model's direct inputs (§2, §5, §6) and starting propensities before the fit."""
    dec_t, pre_t = _TESTS[model]
    return Calibration(
        model=model,
        modes={"decentralized": ModeParams(engage0=3.0, engage_n=-1.0, greedy=0.3, beta=0.3,
                                           same=0.6, hazard=0.3, edit_task=1.0, extra=1.0,
                                           extra_idle=0.5, tests=dec_t),
               "preassign": ModeParams(engage0=2.0, engage_n=-1.0, sweep0=0.0, sweep1=0.0,
                                       claim_first=0.9, same=0.8, edit_task=1.0, extra=0.5,
                                       extra_idle=0.3, tests=pre_t)},
        latency=tuple(LatencyBin(edits_min=lo, edits_max=hi, p50_s=p50, mean_s=mean)
                      for (lo, hi), (p50, mean) in zip(_BINS, _LATENCY[model], strict=True)),
        tokens_per_edit=_TOKENS_PER_EDIT[model],
        helper_share={"decentralized": _HELPER[model][0], "preassign": _HELPER[model][1]},
        sources={"latency": "§5 p50 / mean s by edits in reply (pooled)",
                 "tokens_per_edit": "assumption: output tokens per edit, so that 11+ edits "
                                    "reach the 8,192-token cap where §5's latency saturates"})


HELPER_RUNS = 40


def fit_helper(cal: Calibration) -> Calibration:
    """The ``helper_share`` default per mode, so that edits to files of no task make up the
    study's share of *all* edits (§6). The knob sends that share of the *extra* edits to helper
    files; the other edits are the reply's own tasks', so with ``helper_share`` = 1 the no-task
    share is the extra edits' share s1, and h = target / s1 (capped at 1) hits the target (the
    share is linear in h). Measured on the fitted rows' cells (n = 1, 2)."""
    from quorumboard.agents.brains.study import parse_assumptions

    shares = dict(cal.helper_share)
    sources: dict[str, Any] = dict(cal.sources)
    for mode in ("decentralized", "preassign"):
        target = _HELPER[cal.model][0 if mode == "decentralized" else 1]
        everything = parse_assumptions("helper_share=1", cal, mode)
        edits = no_task = 0
        for level in LEVELS:
            for n in (1, 2):
                for events in simulate_runs(cal, mode, level, n, HELPER_RUNS, seed=3,
                                            assumptions=everything):
                    m = run_metrics(events)
                    edits += m.edits
                    no_task += m.no_task_edits
        s1 = no_task / edits if edits else 0.0
        shares[mode] = round(min(1.0, target / s1), 4) if s1 > 0 else 1.0
        sources[f"helper_share {mode}"] = (
            f"§6 edits to files of no task ({100 * target:.1f} % of all edits): extra edits "
            f"are {100 * s1:.1f} % of all edits in the n = 1-2 cells, so {shares[mode]} of "
            "them go to helper files" + (" (capped: the target is not reached)"
                                         if target > s1 else ""))
    return cal.model_copy(update={"helper_share": shares, "sources": sources})


def foreign_rate(cal: Calibration, share: float | None, runs: int, seed: int
                 ) -> tuple[float, float]:
    """Pre-assigned teams of two (the §6 input's n), pooled over p: the share of all edits
    that write a task file dealt to another agent with ``foreign_share`` at ``share`` (None:
    the file's), and its standard error clustered by run (:func:`ratio_estimate`)."""
    from quorumboard.agents.brains.study import parse_assumptions

    knob = parse_assumptions("", cal, "preassign")
    if share is not None:
        knob = knob.model_copy(update={"foreign_share": share})
    return ratio_estimate([(float(m.foreign_edits), float(m.edits)) for level in LEVELS
                           for m in map(run_metrics, simulate_runs(
                               cal, "preassign", level, 2, runs, seed=seed,
                               assumptions=knob))])


def check_foreign(cal: Calibration, runs: int, seed: int, share: float | None = None
                  ) -> tuple[float, float, float]:
    """(study, simulated, tolerance) of §6's n = 2 share of edits of a task file dealt to
    another agent. The study's side is binomial over its edits in those cells (each row's
    reply count, as :func:`study_se` takes it, times its edits per reply), which treats the
    study's edits as independent: they cluster by run and agent, so it understates the study's
    error (a strict tolerance); the simulation's is :func:`foreign_rate`'s, clustered by
    run."""
    target = STUDY_FOREIGN[cal.model][0]
    study_edits = max(1.0, sum((r.replies or 100) * r.values["edits"]
                               for r in fitted_rows(cal.model, "preassign") if r.n == 2))
    v = min(max(target, 0.5 / study_edits), 1 - 0.5 / study_edits)
    rate, se = foreign_rate(cal, share, runs, seed)
    return target, rate, Z * math.hypot(math.sqrt(v * (1 - v) / study_edits), se)


def fit_foreign(cal: Calibration) -> Calibration:
    """The pre-assigned ``foreign_share`` default, so that edits of a task file dealt to
    another agent make up §6's n = 2 share of all edits. The share is linear in the knob in
    expectation (it only picks which file an extra edit goes to, and a write changes no task's
    state; the two runs' random streams part after the first such pick, so only up to noise),
    so two measurements, at 0 and 1, give it: f = (target - r0) / (r1 - r0), clipped to
    [0, 1]. r0 is 0 unless an agent was dealt nothing (then it works on others' tasks)."""
    target = STUDY_FOREIGN[cal.model][0]
    r0, r1 = (foreign_rate(cal, value, HELPER_RUNS, seed=3)[0] for value in (0.0, 1.0))
    exact = (target - r0) / (r1 - r0) if r1 > r0 else 0.0
    share = round(min(1.0, max(0.0, exact)), 4)
    note = (" (the knob moves nothing: no extra edit goes to a task file)" if r1 <= r0 else
            " (clipped: the target is out of reach)" if not 0.0 <= exact <= 1.0 else "")
    sources = {**cal.sources, "foreign_share preassign": (
        f"§6 edits of a task file dealt to another agent at n = 2 ({100 * target:.1f} % of all "
        f"edits): {100 * r0:.1f} % with the knob at 0, {100 * r1:.1f} % at 1, so {share}"
        + note)}
    return cal.model_copy(update={"foreign_share": share, "sources": sources})


def _fit(model: str, evals: int, runs: int, start: Calibration | None,
         which: Sequence[str] = ("decentralized", "preassign"),
         only: Sequence[str] = ()) -> Calibration:
    """Fit ``which`` modes of ``model`` from ``start``: every propensity, or ``only`` these
    (the others stay as ``start`` has them, and the file records both fits)."""
    for mode in which:  # all names checked before any fit runs
        unknown = [n for n in only if n not in FIT_NAMES[mode]]
        if unknown:
            raise ValueError(f"--params {','.join(unknown)}: not fitted in {mode} mode "
                             f"(fitted: {', '.join(FIT_NAMES[mode])})")
    if only and start is None:
        raise ValueError("--params fits some propensities and keeps the others as shipped: "
                         "it needs a shipped calibration (not --fresh)")
    cal = start or initial_calibration(model)
    modes = dict(cal.modes)
    sources: dict[str, Any] = dict(cal.sources)
    for mode in which:
        rows = fitted_rows(model, mode)
        cal = cal.model_copy(update={"modes": modes})
        fitted, loss = fit_mode_multi(cal, mode, rows, evals, runs, only)
        modes[mode] = fitted
        cal = cal.model_copy(update={"modes": modes})
        fit = _fit_record(loss, evals, runs, len(fit_starts(mode, only)))
        if only:  # a partial refit: the earlier record stays, this one is appended
            earlier = dict(sources.get(mode, {}).get("fit", {}))
            fit = {**earlier, "then": [*earlier.get("then", []),
                                       {**fit, "parameters": list(only)}]}
        sources[mode] = {"fit": fit}
    return annotate(fit_foreign(fit_helper(cal.model_copy(update={"modes": modes,
                                                                  "sources": sources}))))


ANNOTATE_SEEDS = (5, 6, 7, 8, 9, 10)
"""A (row, metric) pair counts as reproduced only if :data:`ANNOTATE_RUNS` runs of each of
these seeds put it within 0.8 of its tolerance; the figures recorded are the first seed's (the
calibration test re-measures exactly those)."""
ANNOTATE_RUNS = 40


def annotate(cal: Calibration) -> Calibration:
    """Record, per mode, where each parameter came from and how the fitted brains reproduce
    each fitted row (study, simulated), and which (row, metric) pairs they do not. A pair
    counts as reproduced only within 0.8 of its tolerance here, so the calibration test's
    re-measurement (other seeds) does not flip on a pair at the edge."""
    sources: dict[str, Any] = dict(cal.sources)
    for mode in ("decentralized", "preassign"):
        rows = fitted_rows(cal.model, mode)
        checked = check_rows(cal, rows, runs=ANNOTATE_RUNS, seed=ANNOTATE_SEEDS[0],
                             margin=0.8)
        outside = {f"{r.level} n={r.n}": set(bad) for r, _, bad in checked}
        for seed in ANNOTATE_SEEDS[1:]:
            for r, _, bad in check_rows(cal, rows, runs=ANNOTATE_RUNS, seed=seed,
                                        margin=0.8):
                outside[f"{r.level} n={r.n}"] |= set(bad)
        entry = dict(sources.get(mode, {}))
        entry.update({
            "parameters": {name: SOURCES[name] for name in (*FIT_NAMES[mode], "tests")},
            "residuals [study, simulated]": {f"{r.level} n={r.n}": {
                m: [round(r.values[m], 3), round(s.values[m], 3)] for m in METRICS}
                for r, s, _ in checked},
            "outside_tolerance": {k: [m for m in METRICS if m in v]
                                  for k, v in outside.items() if v},
        })
        sources[mode] = entry
        print(f"{cal.model} {mode}: outside tolerance: {entry['outside_tolerance']}",
              file=sys.stderr)
    return cal.model_copy(update={"sources": sources})


def _started(cal: Calibration, modes: Sequence[str], values: dict[str, float],
             parser: argparse.ArgumentParser) -> Calibration:
    """``cal`` with ``--start`` values set in ``modes`` (unknown names refused)."""
    unknown = sorted(set(values) - set(ModeParams.model_fields))
    if unknown:
        parser.error(f"--start: unknown propensities {', '.join(unknown)}")
    return cal.model_copy(update={"modes": {
        **cal.modes, **{m: cal.modes[m].model_copy(update=values) for m in modes}}})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quorumboard.agents.brains.calibrate")
    p.add_argument("action", choices=["fit", "profile", "annotate", "helper", "check",
                                      "sensitivity"])
    p.add_argument("--model", default=",".join(STUDY_MODELS))
    p.add_argument("--evals", type=int, default=300)
    p.add_argument("--runs", type=int, default=8, help="simulated runs per row in the fit")
    p.add_argument("--fresh", action="store_true", help="start from the initial values")
    p.add_argument("--modes", default="decentralized,preassign", help="modes to fit")
    p.add_argument("--params", default="",
                   help="fit only these propensities (comma list); the others stay as shipped")
    p.add_argument("--start", default="",
                   help="name=value,... set before a fit or profile (a probability at 0 or 1 "
                        "sits where a coordinate step cannot move it)")
    p.add_argument("--values", default="0,0.5,1",
                   help="profile: the pick_first settings to compare")
    args = p.parse_args(argv)
    if args.action == "sensitivity":
        print("\n".join(sensitivity([m.strip() for m in args.model.split(",") if m.strip()],
                                     runs=args.runs)))
        return 0
    try:
        start_values = {k.strip(): float(v) for k, _, v in
                        (x.partition("=") for x in args.start.split(",") if x.strip())}
        profile_values = [float(x) for x in args.values.split(",") if x.strip()]
    except ValueError as exc:
        p.error(f"--start / --values: {exc}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for model in (m.strip() for m in args.model.split(",") if m.strip()):
        if args.action == "profile":
            cal = _started(load_calibration(model), modes, start_values, p)
            try:
                for mode in modes:
                    cal = profile_pick_first(cal, mode, profile_values, args.evals, args.runs)
            except ValueError as exc:
                p.error(str(exc))
            cal = annotate(fit_foreign(fit_helper(cal)))
            calibration_path(model).write_text(
                json.dumps(cal.model_dump(mode="json"), indent=1) + "\n", encoding="utf-8")
            continue
        if args.action == "fit":
            start = None if args.fresh or not calibration_path(model).exists() \
                else _started(load_calibration(model), modes, start_values, p)
            try:
                cal = _fit(model, args.evals, args.runs, start, modes,
                           [x.strip() for x in args.params.split(",") if x.strip()])
            except ValueError as exc:
                p.error(str(exc))
            calibration_path(model).write_text(
                json.dumps(cal.model_dump(mode="json"), indent=1) + "\n", encoding="utf-8")
            continue
        cal = load_calibration(model)
        if args.action in ("annotate", "helper"):
            # helper and foreign shares change the simulated figures the file records:
            # re-annotate
            cal = annotate(fit_foreign(fit_helper(cal)) if args.action == "helper" else cal)
            calibration_path(model).write_text(json.dumps(
                cal.model_dump(mode="json"), indent=1) + "\n", encoding="utf-8")
            continue
        for row, sim, bad in check_rows(cal, [r for r in study_rows() if r.model == model],
                                        runs=20):
            cells = "  ".join(f"{m} {row.values[m]:.2f}/{sim.values[m]:.2f}" for m in METRICS)
            print(f"{model[:6]} {row.mode[:4]} {row.level} n={row.n}  {cells}  "
                  f"{'OUT: ' + ','.join(bad) if bad else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
