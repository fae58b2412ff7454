"""The study's significance tests over a sweep's records (SciPy).

* :func:`wilcoxon_vs_amdahl` - are observed speedups below Amdahl's bound? Signed-rank test of
  each n > 1 run's speedup against its Amdahl prediction (paired per run).
* :func:`kruskal_across_p` - does speedup (or speedup / Amdahl) differ across parallel
  fractions p? Kruskal-Wallis over n > 1 runs grouped by p.
* :func:`spearman_vs_n` - do speedup and tokens grow with team size? Spearman's rho against n.

Each test is run over all records ("all") and per group (p level or mode), and returns one
:class:`StatResult` per group. Sweeps are small (5 repetitions a cell, sometimes 1-3), so small
or degenerate input (too few runs, all-equal values) is the normal case: it yields a result
with ``note`` set and no statistic, never an exception.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from scipy import stats as sps

from quorumboard.agents.study.metrics import RunRecord, amdahl, per_run_speedups

__all__ = [
    "GroupBy",
    "StatResult",
    "kruskal_across_p",
    "spearman_vs_n",
    "wilcoxon_vs_amdahl",
]

GroupBy = Literal["p", "mode", "none"]
SAMPLES_MIN = 3
"""Fewer paired runs / points than this and a test is not run (its p-value would mean little)."""


class StatResult(BaseModel):
    """One test on one group of runs. ``statistic``/``p_value`` are None when the test could not
    be computed; ``note`` then says why. ``effect`` is a plain-language size: the median of
    observed - Amdahl (Wilcoxon), the spread of group medians (Kruskal-Wallis), rho (Spearman)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    test: str
    metric: str
    group: str
    n: int
    statistic: float | None = None
    p_value: float | None = None
    effect: float | None = None
    effect_name: str = ""
    note: str = ""


def _group_key(by: GroupBy) -> Callable[[RunRecord], str]:
    if by == "p":
        return lambda r: f"p={r.spec.p:.2f}"
    if by == "mode":
        return lambda r: f"mode={r.spec.mode}"
    return lambda r: "all"


def _grouped(items: Sequence[tuple[RunRecord, float]], by: GroupBy
             ) -> list[tuple[str, list[tuple[RunRecord, float]]]]:
    """("all", everything) first, then each group (sorted) when ``by`` splits the records."""
    out: list[tuple[str, list[tuple[RunRecord, float]]]] = [("all", list(items))]
    if by == "none":
        return out
    key = _group_key(by)
    groups: dict[str, list[tuple[RunRecord, float]]] = defaultdict(list)
    for item in items:
        groups[key(item[0])].append(item)
    out.extend(sorted(groups.items()))
    return out


def _finite(x: object) -> float | None:
    """A SciPy result field as a float, or None if it is NaN/inf/not a number."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _computed(base: StatResult, test: Callable[..., Any], *args: Any,
              effect_is_statistic: bool = False) -> StatResult:
    """Run one SciPy test; a failure or a NaN becomes a note on the result, never an error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small-sample / constant-input warnings: noted below
            res = test(*args)
    except (ValueError, ZeroDivisionError, FloatingPointError) as exc:
        return base.model_copy(update={"note": f"not computable: {exc}"})
    stat, pv = _finite(res.statistic), _finite(res.pvalue)
    update: dict[str, Any] = {"statistic": stat, "p_value": pv}
    if effect_is_statistic:
        update["effect"] = stat
    if stat is None or pv is None:
        update["note"] = "not computable (NaN)"
    return base.model_copy(update=update)


def _speedups(records: Sequence[RunRecord], multi_only: bool) -> list[tuple[RunRecord, float]]:
    return [(r, s) for r, s in per_run_speedups(records)
            if s is not None and (r.spec.agents > 1 or not multi_only)]


def wilcoxon_vs_amdahl(records: Sequence[RunRecord], by: GroupBy = "p") -> list[StatResult]:
    """Wilcoxon signed-rank of observed speedup vs Amdahl's prediction, paired per n > 1 run
    (two-sided; ``effect`` = median of observed - predicted, negative = below the bound)."""
    out: list[StatResult] = []
    for group, items in _grouped(_speedups(records, multi_only=True), by):
        diffs = [s - amdahl(r.spec.p, r.spec.agents) for r, s in items]
        base = StatResult(test="wilcoxon", metric="speedup - amdahl", group=group,
                          n=len(diffs), effect=statistics.median(diffs) if diffs else None,
                          effect_name="median(observed - amdahl)")
        if len(diffs) < SAMPLES_MIN:
            out.append(base.model_copy(update={"note": f"too few runs ({len(diffs)} < "
                                                       f"{SAMPLES_MIN})"}))
            continue
        if all(d == 0 for d in diffs):
            out.append(base.model_copy(update={"note": "every difference is zero"}))
            continue
        out.append(_computed(base, sps.wilcoxon, diffs))
    return out


def kruskal_across_p(records: Sequence[RunRecord], metric: Literal["speedup", "gap"] = "gap",
                     by: GroupBy = "mode") -> list[StatResult]:
    """Kruskal-Wallis of speedup (or gap = speedup / Amdahl) across p levels, over n > 1 runs;
    ``effect`` = max - min of the per-p medians."""
    items: list[tuple[RunRecord, float]] = []
    for r, s in _speedups(records, multi_only=True):
        items.append((r, s / amdahl(r.spec.p, r.spec.agents) if metric == "gap" else s))
    out: list[StatResult] = []
    for group, members in _grouped(items, by):
        by_p: dict[float, list[float]] = defaultdict(list)
        for r, v in members:
            by_p[r.spec.p].append(v)
        samples = [by_p[p] for p in sorted(by_p)]
        medians = [statistics.median(v) for v in samples]
        base = StatResult(test="kruskal", metric=metric, group=group, n=len(members),
                          effect=(max(medians) - min(medians)) if len(medians) >= 2 else None,
                          effect_name="range of per-p medians")
        if len(samples) < 2:
            out.append(base.model_copy(update={"note": f"needs >= 2 p levels ({len(samples)})"}))
            continue
        if len(members) < SAMPLES_MIN:
            out.append(base.model_copy(update={"note": f"too few runs ({len(members)} < "
                                                       f"{SAMPLES_MIN})"}))
            continue
        if len({v for _, v in members}) == 1:
            out.append(base.model_copy(update={"note": "all values are equal"}))
            continue
        out.append(_computed(base, sps.kruskal, *samples))
    return out


def spearman_vs_n(records: Sequence[RunRecord], metric: Literal["speedup", "tokens"],
                  by: GroupBy = "mode") -> list[StatResult]:
    """Spearman's rho of speedup (runs with a speedup, n = 1 included) or tokens (every run)
    against team size n."""
    items: list[tuple[RunRecord, float]]
    if metric == "speedup":
        items = _speedups(records, multi_only=False)
    else:
        items = [(r, float(r.metrics.tokens)) for r in records]
    out: list[StatResult] = []
    for group, members in _grouped(items, by):
        xs = [float(r.spec.agents) for r, _ in members]
        ys = [v for _, v in members]
        base = StatResult(test="spearman", metric=f"{metric} vs n", group=group,
                          n=len(members), effect_name="rho")
        if len(members) < SAMPLES_MIN:
            out.append(base.model_copy(update={"note": f"too few runs ({len(members)} < "
                                                       f"{SAMPLES_MIN})"}))
            continue
        if len(set(xs)) == 1 or len(set(ys)) == 1:
            what = "team size" if len(set(xs)) == 1 else metric
            out.append(base.model_copy(update={"note": f"{what} is constant"}))
            continue
        out.append(_computed(base, sps.spearmanr, xs, ys, effect_is_statistic=True))
    return out
