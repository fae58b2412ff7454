"""The report's study sections: per-reply rates beside the study's, and the study's directions.

For runs under ``--harness study``: the simulated brains' per-reply rates per (model, mode, p,
n) beside the study's own (notes/paper-calibration.md §3; the rows with n = 1-2 are what the
brains were fitted on, n = 3-5 were never seen by the fit), and, per model and p, whether the
outcomes point the study's way (paper.md): decentralized above pre-assignment in messages, idle
rounds, concurrent writes and tokens; teams below Amdahl; pre-assignment at least as fast at
p = 0.9. ``lead`` and ``hybrid`` have no study data and are marked so.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence

from quorumboard.agents.brains.calibrate import METRICS, STUDY_FOREIGN, study_rows
from quorumboard.agents.study.metrics import CellRow, RunMetrics, RunRecord, amdahl, cell_rows
from quorumboard.agents.team.study_harness import STUDY_MODES

__all__ = ["LEVEL_OF_P", "direction_rows", "implied_messages", "implied_rows", "per_reply_rates",
           "study_sections"]

LEVEL_OF_P = {0.2: "p02", 0.5: "p05", 0.9: "p09"}
_NA = "—"


def _level(p: float) -> str:
    return LEVEL_OF_P.get(round(p, 2), f"p={p:.2f}")


def per_reply_rates(ms: Sequence[RunMetrics]) -> dict[str, float] | None:
    """Pooled per-reply rates of these runs (replies weigh equally, as in the study's tables)."""
    replies = sum(m.messages for m in ms)
    if not replies:
        return None
    attempts = sum(m.claim_attempts for m in ms)
    return {"idle": sum(m.study_idle_replies for m in ms) / replies,
            "blocked": sum(m.claims_blocked for m in ms) / attempts if attempts else 0.0,
            "edits": sum(m.edits for m in ms) / replies,
            "completions": sum(m.first_completions for m in ms) / replies,
            "multi": sum(m.multi_complete_replies for m in ms) / replies,
            "claims": attempts / replies}


def _fmt(metric: str, v: float) -> str:
    return f"{100 * v:.0f}%" if metric in ("idle", "blocked", "multi") else f"{v:.2f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(r) + " |" for r in rows)]


Cell = tuple[str, str, str, int]
"""(model, mode, p level, n): the key of a study row and of a sweep's runs."""


def _cells(records: Sequence[RunRecord]
           ) -> tuple[dict[Cell, dict[str, float]], dict[Cell, list[RunMetrics]]]:
    """The study's per-reply rows and the sweep's run metrics, both by cell."""
    study = {(r.model, r.mode, r.level, r.n): r.values for r in study_rows()}
    groups: dict[Cell, list[RunMetrics]] = defaultdict(list)
    for r in records:
        groups[(r.spec.model, r.spec.mode, _level(r.spec.p), r.spec.agents)].append(r.metrics)
    return study, groups


def per_reply_section(records: Sequence[RunRecord]) -> list[str]:
    study, groups = _cells(records)
    rows = []
    for key in sorted(groups):
        model, mode, level, n = key
        ours = per_reply_rates(groups[key])
        if ours is None:
            continue
        theirs = study.get(key)
        role = ("no study data" if mode not in STUDY_MODES else
                "fit" if n <= 2 else "validation")
        rows.append([model, mode, level, str(n), role, str(sum(m.messages for m in groups[key])),
                     *(f"{_fmt(m, ours[m])} / {_fmt(m, theirs[m]) if theirs else _NA}"
                       for m in METRICS)])
    agree: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for key, ms in groups.items():
        ours, theirs = per_reply_rates(ms), study.get(key)
        if ours is None or theirs is None:
            continue
        role = "fit" if key[3] <= 2 else "validation"
        for m in METRICS:
            tally = agree[(key[0], key[1], role)]
            tally[0] += close(m, ours[m], theirs[m])
            tally[1] += 1
    out = ["## Per-reply rates vs the study", "",
           "Agreement per model, mode and role: (row, metric) pairs whose simulated rate is "
           f"within {100 * SHARE_CLOSE:.0f} points (shares) or {100 * MEAN_CLOSE:.0f} % (means: "
           "of the study's value, at least 0.2) of the study's.", ""]
    out += _table(["model", "mode", "role", "pairs close"],
                  [[m, mode, role, f"{a} of {b}"] for (m, mode, role), (a, b)
                   in sorted(agree.items())])
    out += ["",
           "Simulated / study per reply (notes/paper-calibration.md §3). The brains were "
           "fitted on the n = 1-2 rows only (role `fit`); n = 3-5 rows (`validation`) were never "
           "seen by the fit. idle: no edit, no granted claim, no first-time completion; blocked: "
           "of logged claim attempts; multi: replies completing >= 2 tasks.", ""]
    return [*out, *_table(["model", "mode", "p", "n", "role", "replies", *METRICS], rows), ""]


SHARE_CLOSE = 0.10
MEAN_CLOSE = 0.25


def close(metric: str, ours: float, theirs: float) -> bool:
    """Whether a simulated per-reply rate is close to the study's (see :data:`SHARE_CLOSE`)."""
    if metric in ("idle", "blocked", "multi"):
        return abs(ours - theirs) <= SHARE_CLOSE
    return abs(ours - theirs) <= MEAN_CLOSE * max(theirs, 0.2)


# The study's pooled rates (notes/paper-calibration.md §2, §4, §6) per model: decentralized,
# preassign. Test runs and no-task edits are inputs (the brains' test rate and the default of
# the helper_share knob); the claim -> completion split and rewrites are not fitted.
STUDY_OTHER: dict[str, dict[str, tuple[float | None, float | None]]] = {
    "claude-sonnet-4-6": {"tests": (0.36, 0.77), "edits0": (0.629, 0.158),
                          "edits1": (0.128, 0.159), "same": (0.61, None),
                          "later": (0.37, None), "never": (0.023, None),
                          "no_task": (0.21, 0.20), "rewrites": (0.62, 0.16)},
    "gemini-3-flash-preview": {"tests": (0.90, 0.57), "edits0": (0.094, 0.450),
                               "edits1": (0.788, 0.353), "same": (0.81, None),
                               "later": (0.19, None), "never": (0.001, None),
                               "no_task": (0.003, 0.002), "rewrites": (0.29, 0.14)},
    "gpt-5.2": {"tests": (0.30, 0.46), "edits0": (0.711, 0.536), "edits1": (0.217, 0.342),
                "same": (0.50, None), "later": (0.44, None), "never": (0.06, None),
                "no_task": (0.20, 0.18), "rewrites": (0.43, 0.35)},
}
_OTHER = (("tests", "test runs per reply (§2, input)"),
          ("edits0", "replies writing no file (§2)"),
          ("edits1", "replies writing exactly one file (§2)"),
          ("same", "claim -> completion in the same reply (§4)"),
          ("later", "... in a later reply (§4)"), ("never", "... never (§4)"),
          ("no_task", "edits to files of no task (§6, input)"),
          ("rewrites", "edits of a path first written in an earlier round (§6)"))


def _other_rates(ms: Sequence[RunMetrics]) -> dict[str, float | None]:
    replies = sum(m.messages for m in ms)
    edits = sum(m.edits for m in ms)
    claims = sum(m.claims_done_same_reply + m.claims_done_later + m.claims_never_done
                 for m in ms)
    return {"tests": sum(m.test_runs for m in ms) / replies if replies else None,
            "edits0": sum(m.no_edit_replies for m in ms) / replies if replies else None,
            "edits1": sum(m.one_edit_replies for m in ms) / replies if replies else None,
            "same": sum(m.claims_done_same_reply for m in ms) / claims if claims else None,
            "later": sum(m.claims_done_later for m in ms) / claims if claims else None,
            "never": sum(m.claims_never_done for m in ms) / claims if claims else None,
            "no_task": sum(m.no_task_edits for m in ms) / edits if edits else None,
            "rewrites": sum(m.rewrites for m in ms) / edits if edits else None}


def other_rates_section(records: Sequence[RunRecord]) -> list[str]:
    """Rates pooled over p and n beside the study's (§2, §4, §6; none fitted but the inputs
    marked so), per model and study mode."""
    by: dict[tuple[str, str], list[RunMetrics]] = defaultdict(list)
    for r in records:
        if r.spec.mode in STUDY_MODES:
            by[(r.spec.model, r.spec.mode)].append(r.metrics)
    rows = []
    for (model, mode), ms in sorted(by.items()):
        ours = _other_rates(ms)
        theirs = STUDY_OTHER.get(model, {})
        col = 0 if mode == "decentralized" else 1
        for key, label in _OTHER:
            study = theirs.get(key, (None, None))[col]
            if study is None and mode == "preassign" and key in ("same", "later", "never"):
                continue
            rows.append([model, mode, label, _pct_or(ours[key], key),
                         _pct_or(study, key)])
    return ["## Other per-reply rates vs the study (pooled over p and n)", "",
            *_table(["model", "mode", "rate", "simulated", "study"], rows), ""]


def foreign_section(records: Sequence[RunRecord]) -> list[str]:
    """Pre-assigned edits of a task file dealt to another agent, per model and n, beside §6's
    (n = 2 is the input ``foreign_share`` is fitted on; n = 3-5 were never seen)."""
    by: dict[tuple[str, int], list[RunMetrics]] = defaultdict(list)
    for r in records:
        if r.spec.mode == "preassign" and r.spec.agents >= 2:
            by[(r.spec.model, r.spec.agents)].append(r.metrics)
    rows = []
    for (model, n), ms in sorted(by.items()):
        edits = sum(m.edits for m in ms)
        study = STUDY_FOREIGN.get(model)
        theirs = study[n - 2] if study is not None and n <= 5 else None
        rows.append([model, str(n), "fit" if n == 2 else "validation",
                     _pct_or(sum(m.foreign_edits for m in ms) / edits if edits else None, ""),
                     _pct_or(theirs, "")])
    if not rows:
        return []
    return ["## Pre-assigned edits of another agent's task file vs the study (§6, pooled over p)",
            "", *_table(["model", "n", "role", "simulated", "study"], rows), ""]


def _pct_or(x: float | None, key: str) -> str:
    if x is None:
        return _NA
    return f"{x:.2f}" if key == "tests" else f"{100 * x:.1f}%"


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def direction_rows(records: Sequence[RunRecord]) -> list[list[str]]:
    """Per model and p level, over n > 1: the study's directions, each with our figures."""
    by: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for r in records:
        if r.spec.agents > 1:
            by[(r.spec.model, _level(r.spec.p), r.spec.mode)].append(r)
    cells = cell_rows(records)
    out: list[list[str]] = []
    metrics: list[tuple[str, Callable[[RunMetrics], float | None]]] = [
        ("messages", lambda m: float(m.messages)),
        ("idle rounds", lambda m: None if m.idle_rounds is None else float(m.idle_rounds)),
        ("concurrent writes",
         lambda m: None if m.concurrent_writes is None else float(m.concurrent_writes)),
        ("tokens", lambda m: float(m.tokens))]
    for model, level in sorted({(m, lv) for m, lv, _ in by}):
        dec, pre = by.get((model, level, "decentralized"), []), by.get(
            (model, level, "preassign"), [])
        if not dec or not pre:
            continue
        for name, get in metrics:
            d = _mean([v for r in dec if (v := get(r.metrics)) is not None])
            p = _mean([v for r in pre if (v := get(r.metrics)) is not None])
            ok = d is not None and p is not None and d > p
            out.append([model, level, f"decentralized > preassign in {name}",
                        f"{_f(d)} vs {_f(p)}", "yes" if ok else "NO"])
        below = [c for c in cells if c.model == model and _level(c.p) == level
                 and c.agents > 1 and c.mode in STUDY_MODES and c.speedup_ratio is not None]
        n_below = sum(1 for c in below if c.speedup_ratio is not None
                      and c.speedup_ratio < amdahl(c.p, c.agents))
        out.append([model, level, "teams below Amdahl (ratio speedup, per mode and n > 1)",
                    f"{n_below} of {len(below)} cells", "yes" if below and n_below == len(
                        below) else "NO"])
        if level == "p09":
            faster = []
            for n in sorted({r.spec.agents for r in pre}):
                ps = _mean([r.metrics.makespan_s for r in pre
                            if r.spec.agents == n and r.metrics.success])
                ds = _mean([r.metrics.makespan_s for r in dec
                            if r.spec.agents == n and r.metrics.success])
                if ps is not None and ds is not None:
                    faster.append((n, ps, ds))
            ok = bool(faster) and all(ps <= ds for _, ps, ds in faster)
            out.append([model, level, "preassign at least as fast (makespan, each n > 1)",
                        "; ".join(f"n={n} {ps:.0f} vs {ds:.0f} s" for n, ps, ds in faster),
                        "yes" if ok else "NO"])
    return out


STUDY_TASKS = 20
"""Tasks per project in every study task file."""
STUDY_ROUND_CAP = 60
"""The study script's default round cap (its batches used 30-100)."""


def implied_messages(completions_per_reply: float, n: int, tasks: int = STUDY_TASKS,
                     round_cap: int = STUDY_ROUND_CAP) -> float:
    """The messages per run that a cell's first-time completions per reply imply.

    In the study every agent replies every round (messages = replies) and a successful run
    completes each task once for the first time, so over a cell's runs replies = completions ÷
    (completions per reply) and, when every run succeeds, messages per run = ``tasks`` ÷
    (completions per reply). Runs that hit the round cap complete fewer and stop at
    ``round_cap`` x n replies. So the figure is an upper bound on the messages per run, exact
    when every run of the cell succeeded (the note's first-time count is 20 in every
    successful run), clipped at ``round_cap`` rounds (the script's default 60; the study's
    batches used 30-100). Arithmetic on the per-reply inputs (notes/paper-calibration.md §3), not an
    outcome read from the study."""
    if completions_per_reply <= 0:
        return float(round_cap * n)
    return min(tasks / completions_per_reply, float(round_cap * n))


def implied_rows(records: Sequence[RunRecord]) -> tuple[list[list[str]], dict[str, list[int]]]:
    """Per (model, mode, p, n) with a study row: the messages its replies imply beside the
    sweep's mean, and per model the (within 2x, cells) tally at n = 3 and 5."""
    study, groups = _cells(records)
    rows: list[list[str]] = []
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for key in sorted(groups):
        theirs = study.get(key)
        if theirs is None:
            continue
        model, mode, level, n = key
        implied = implied_messages(theirs["completions"], n)
        ours = statistics.fmean(float(m.messages) for m in groups[key])
        ratio = ours / implied
        within = 0.5 <= ratio <= 2.0
        if n in (3, 5):
            tally[model][0] += within
            tally[model][1] += 1
        rows.append([model, mode, level, str(n), f"{implied:.1f}", f"{ours:.1f}",
                     f"{ratio:.2f}", "yes" if within else "NO"])
    return rows, dict(tally)


def implied_section(records: Sequence[RunRecord]) -> list[str]:
    rows, tally = implied_rows(records)
    if not rows:
        return []
    out = ["## Messages the study's replies imply", "",
           "Every study agent replies every round and a successful run completes each of its "
           f"{STUDY_TASKS} tasks once, so a cell's messages per run are {STUDY_TASKS} ÷ its "
           "first-time completions per reply (§3): arithmetic on the per-reply inputs, an upper "
           f"bound exact when every run of the cell succeeded, clipped at {STUDY_ROUND_CAP} rounds "
           "times n "
           "(the study's batches used caps of 30-100). Within 2x at "
           "n = 3 and 5: " + "; ".join(f"{m} {a} of {b}" for m, (a, b) in sorted(
               tally.items())) + ".", ""]
    return [*out, *_table(["model", "mode", "p", "n", "implied", "ours", "ours ÷ implied",
                           "within 2x"], rows), ""]


def _f(x: float | None) -> str:
    return _NA if x is None else f"{x:.1f}" if abs(x) < 1e4 else f"{x / 1e3:.0f}k"


def reproduction_rows(records: Sequence[RunRecord], ns: Sequence[int] = (3, 5)
                      ) -> list[list[str]]:
    """Per model, p level and mode: outcomes at team sizes ``ns`` (means over the suites'
    runs; speedup: mean n = 1 makespan of each suite's cell / mean makespan, averaged over
    suites), as ``a / b`` cells."""
    cells = [c for c in cell_rows(records) if c.agents in ns]
    by: dict[tuple[str, str, str], dict[int, list[CellRow]]] = defaultdict(
        lambda: defaultdict(list))
    for c in cells:
        by[(c.model, _level(c.p), c.mode)][c.agents].append(c)
    out = []
    for (model, level, mode), per_n in sorted(by.items()):
        def col(get: Callable[[CellRow], float | None], digits: int = 1,
                per_n: dict[int, list[CellRow]] = per_n) -> str:
            vals = []
            for n in ns:
                xs = [v for c in per_n.get(n, []) if (v := get(c)) is not None]
                vals.append(_NA if not xs else f"{statistics.fmean(xs):.{digits}f}")
            return " / ".join(vals)

        out.append([model, level, mode,
                    col(lambda c: c.success_rate * 100, 0),
                    col(lambda c: c.messages),
                    col(lambda c: c.idle_rounds),
                    col(lambda c: c.concurrent_writes),
                    col(lambda c: c.tokens / 1e3, 0),
                    col(lambda c: c.speedup_ratio, 2),
                    " / ".join(f"{amdahl(_P[level], n):.2f}" for n in ns) if level in _P
                    else _NA])
    return out


REPRODUCTION_HEADERS = ("model", "p", "mode", "success %", "messages", "idle rounds",
                        "concurrent writes", "tokens (k)", "speedup (ratio)", "Amdahl")
_P = {"p02": 0.2, "p05": 0.5, "p09": 0.9}


def study_sections(records: Sequence[RunRecord]) -> list[str]:
    """The report's study sections (empty without runs of the study harness)."""
    study = [r for r in records if r.spec.harness == "study"]
    if not study:
        return []
    out = ["## Reproduction per model (n = 3 / 5)", "",
           "Means over the suites' cells; speedup: the ratio of mean makespans against the "
           "same cell's n = 1 runs.", ""]
    out += _table(REPRODUCTION_HEADERS, reproduction_rows(study))
    out += ["", *implied_section(study), *per_reply_section(study),
            *other_rates_section(study), *foreign_section(study)]
    out += ["## The study's directions", "",
            "Per model and p, over team sizes n > 1 (paper.md's qualitative findings; the "
            "calibration never saw an outcome).", ""]
    out += _table(["model", "p", "direction", "decentralized vs preassign (or as said)",
                   "holds"], direction_rows(study))
    other = sorted({r.spec.mode for r in study} - set(STUDY_MODES))
    if other:
        out += ["", f"Modes {', '.join(other)}: no study data (the study released runs of "
                "preassign and decentralized only)."]
    return [*out, ""]
