"""The study brains against their calibration files: simulated per-reply rates re-measured
must match the study's fitted rows within binomial tolerances wherever the file says its brains
reproduce them, and a brain with one rate moved 25 % (a planted miscalibration, injected here)
must fail the same check.

The file says a (row, metric) pair is reproduced when 40 runs of each of six seeds put it
within 0.8 of its tolerance (``calibrate.annotate``); the test re-measures 40 runs of the first
of those seeds at the full tolerance, so any change to the brains or the rules that moves a
rate beyond its tolerance fails it, deterministically (everything is seeded). A pair the file
says is not reproduced must stay within tolerance of the simulated figure the file recorded.

A tolerance's study side comes from the study alone (``calibrate.study_se``: binomial for
shares, §2's per-reply spread for means), so a brain cannot widen that side by replying more
erratically (the simulation's side, its re-measurement's own noise, still grows with the
spread); a planted brain that did (the extra edits a tried fit once bought) must fail."""

from __future__ import annotations

import math

import pytest

from quorumboard.agents.brains.calibrate import (
    ANNOTATE_RUNS,
    ANNOTATE_SEEDS,
    METRICS,
    check_rows,
    fitted_rows,
    tolerance,
)
from quorumboard.agents.brains.study import STUDY_MODELS, Calibration, ModeParams, load_calibration

RUNS = ANNOTATE_RUNS
SEED = ANNOTATE_SEEDS[0]
MODES = ("decentralized", "preassign")




def _misses(cal: Calibration, mode: str, params: ModeParams | None = None,
            n_max: int = 2) -> tuple[list[str], int]:
    """(row, metric) pairs the simulation misses (rows up to team size ``n_max``): a pair the
    file says is reproduced must be within tolerance of the study's figure; a pair the file
    says it does not reproduce must be within tolerance of the simulated figure the file
    recorded for it (``annotate`` measures the same seed and runs as this test), so a change
    that moves it is caught too. And how many pairs were checked against the study."""
    entry = cal.sources.get(mode, {})
    outside = entry.get("outside_tolerance", {})
    recorded = entry.get("residuals [study, simulated]", {})
    misses, checked = [], 0
    rows = [r for r in fitted_rows(cal.model, mode) if r.n <= n_max]
    results = check_rows(cal, rows, runs=RUNS, seed=SEED,
                         params={mode: params} if params is not None else None)
    for row, sim, bad in results:
        key = f"{row.level} n={row.n}"
        expected = [m for m in METRICS if m not in outside.get(key, [])]
        checked += len(expected)
        misses += [f"{key} {m}: study {row.values[m]:.3f}, simulated {sim.values[m]:.3f}"
                   for m in bad if m in expected]
        for m in outside.get(key, []):
            was = recorded[key][m][1]
            if abs(sim.values[m] - was) > tolerance(row, sim, m):
                misses.append(f"{key} {m} (not reproduced): recorded {was:.3f}, "
                              f"simulated {sim.values[m]:.3f}")
    return misses, checked


@pytest.mark.parametrize("model", STUDY_MODELS)
@pytest.mark.parametrize("mode", MODES)
def test_brains_reproduce_the_fitted_per_reply_rows(model: str, mode: str) -> None:
    cal = load_calibration(model)
    misses, checked = _misses(cal, mode)
    assert not misses, "\n".join(misses)
    # The file may declare pairs it does not reproduce (the README counts them), not nearly all.
    assert checked >= len(fitted_rows(model, mode)) * len(METRICS) // 3


def _moved(p: ModeParams, name: str, factor: float) -> ModeParams:
    """``name`` moved by ``factor``: a probability through its value, engagement through the
    probability its logit gives."""
    if name == "engage":
        prob = 1 / (1 + math.exp(-p.engage0)) * factor
        prob = min(max(prob, 1e-6), 1 - 1e-6)
        return p.model_copy(update={"engage0": math.log(prob / (1 - prob))})
    return p.model_copy(update={name: getattr(p, name) * factor})


@pytest.mark.parametrize(("model", "mode", "name", "factor"), [
    ("gpt-5.2", "decentralized", "engage", 0.75),
    ("claude-sonnet-4-6", "decentralized", "same", 0.75),
    ("gpt-5.2", "preassign", "engage", 0.75),
    ("gemini-3-flash-preview", "decentralized", "engage", 0.75),
])
def test_negative_control_a_rate_moved_25_percent_fails(model: str, mode: str, name: str,
                                                        factor: float) -> None:
    cal = load_calibration(model)
    # The lone agents' rows suffice (and halve the time): their reply counts are the largest.
    misses, _ = _misses(cal, mode, _moved(cal.modes[mode], name, factor), n_max=1)
    assert misses, f"moving {name} by x{factor} went unnoticed"


def test_a_means_study_error_comes_from_the_studys_spread_not_the_simulations() -> None:
    """Hand-checkable histograms give their variance; the study side of a tolerance is the
    same whatever the simulated replies look like; a brain that writes 3.3 files a reply where
    the study's wrote 1.4 (gemini's decentralized extra edits at 20: a fit under a tolerance
    that grew with the simulation's spread bought exactly this) is outside it."""
    from quorumboard.agents.brains.calibrate import Rates, _dispersion, dispersions, study_se

    one = {"mean": 1.0, "percent": {"0": 0, "1": 100, "2": 0, "3-5": 0, "6+": 0}}
    assert _dispersion(one) == 0.0
    half = {"mean": 1.0, "percent": {"0": 50, "1": 0, "2": 50, "3-5": 0, "6+": 0}}
    assert math.isclose(_dispersion(half), 1.0)  # 0 or 2, even odds: variance 1, mean 1
    fives = {"mean": 4.0, "percent": {"0": 0, "1": 0, "2": 0, "3-5": 100, "6+": 0}}
    assert math.isclose(_dispersion(fives), (2 / 3) / 4)  # uniform on 3, 4, 5
    tops = {"mean": 8.0, "percent": {"0": 0, "1": 0, "2": 0, "3-5": 0, "6+": 100}}
    assert math.isclose(_dispersion(tops), (4 ** 2 / 12) / 8)  # uniform on 6..10
    assert all(d > 0 for d in dispersions().values())
    assert len(dispersions()) == len(STUDY_MODELS) * len(MODES) * 3

    model, mode = "gemini-3-flash-preview", "decentralized"
    row = next(r for r in fitted_rows(model, mode) if r.level == "p02" and r.n == 2)
    assert row.replies is not None
    exact = Rates(replies=500, attempts=500, values=dict(row.values),
                  se=dict.fromkeys(METRICS, 0.0))
    assert math.isclose(tolerance(row, exact, "edits"), 3 * study_se(row, "edits"))
    assert study_se(row, "edits") == pytest.approx(
        math.sqrt(row.values["edits"] * dispersions()[(model, mode, "edits")] / row.replies))
    cal = load_calibration(model)
    erratic = cal.modes[mode].model_copy(update={"extra_idle": 20.0})
    [(_, sim, bad)] = check_rows(cal, [row], runs=RUNS, seed=SEED, params={mode: erratic})
    assert sim.values["edits"] > 2 * row.values["edits"], sim.values
    assert "edits" in bad, (sim.values["edits"], row.values["edits"])


# ------------------------------------------------------------------- the choice of task


def _round_one_replies(pick_first: float, **params: float) -> list:  # type: ignore[type-arg]
    """Replies of engaged, non-greedy decentralized gemini brains (20 seeds x 3 agents) on a
    round-one board of 19 ready tasks, with the ``pick_first`` knob and ``params`` set."""
    from quorumboard.agents.brains.study import StudyBrain, parse_assumptions
    from quorumboard.agents.team.actions import TaskView, View

    cal = load_calibration("gemini-3-flash-preview")
    params = cal.modes["decentralized"].model_copy(
        update={"engage0": 20.0, "greedy": 0.0, **params})
    knob = parse_assumptions(f"pick_first={pick_first}", cal, "decentralized")
    tasks = tuple(TaskView(id=f"task-{i}", dependencies=(), files=(f"t{i}.py",))
                  for i in range(1, 20))
    replies = []
    for seed in range(20):
        for i, agent in enumerate(("a0", "a1", "a2")):
            brain = StudyBrain(cal, "decentralized", seed=seed * 7 + i, assumptions=knob,
                               params=params)
            replies.append(brain.decide(View(agent=agent, team=("a0", "a1", "a2"), round=1,
                                             time_s=0.0, mode="decentralized", tasks=tasks)))
    return replies


def _round_one(pick_first: float) -> tuple[list[str], list[float]]:
    """Claims and latencies of :func:`_round_one_replies`."""
    from quorumboard.agents.team.actions import ClaimTask

    replies = _round_one_replies(pick_first)
    return ([a.task for r in replies for a in r.actions if isinstance(a, ClaimTask)],
            [r.latency_s for r in replies])


def test_the_choice_of_task_leaves_the_later_draws_alone() -> None:
    """The sensitivity rows of ``pick_first`` compare runs on common random numbers: which task
    a claim goes to must not change any later draw (here, the reply's latency)."""
    first, lat_first = _round_one(1.0)
    spread, lat_spread = _round_one(0.0)
    assert set(first) == {"task-1"} and len(set(spread)) > 5
    assert lat_first == lat_spread


def _edit_counts(**params: float) -> list[int]:
    from quorumboard.agents.team.actions import WriteFile

    return [sum(1 for a in r.actions if isinstance(a, WriteFile))
            for r in _round_one_replies(0.5, extra=0.0, **params)]


def test_a_sure_edit_writes_the_claimed_tasks_file_once_and_keeps_the_mean() -> None:
    """``edit_sure``: a reply writes one file for sure (its task's, else an extra one) and the
    rest of its edits stay Poisson with the same mean. A Poisson of mean 1 (``edit_sure`` 0) leaves
    a third of such replies writing nothing, which makes an agent that lost a claim race look
    idle (§2: 9 % of gemini's decentralized replies write nothing, 79 % exactly one file)."""
    poisson = _edit_counts(edit_task=1.0, edit_sure=0.0)
    sure = _edit_counts(edit_task=1.0, edit_sure=1.0)
    assert set(sure) == {1}
    assert poisson.count(0) >= len(poisson) // 5 and max(poisson) >= 2
    mixed = _edit_counts(edit_task=2.0, edit_sure=1.0)
    assert min(mixed) == 1 and 1.6 <= sum(mixed) / len(mixed) <= 2.4
    # A reply that does not work (not engaged) places its certain edit among its extra ones.
    idle = _edit_counts(engage0=-20.0, extra_idle=1.0, edit_sure=1.0)
    assert set(idle) == {1}


# ------------------------------------------------------------------------ partial fits


def test_a_partial_fit_moves_only_the_named_propensities_and_refuses_unknown_names() -> None:
    from quorumboard.agents.brains.calibrate import _fit

    cal = load_calibration("gemini-3-flash-preview")
    with pytest.raises(ValueError, match="bogus"):
        _fit(cal.model, evals=2, runs=1, start=cal, which=("preassign",), only=("bogus",))
    with pytest.raises(ValueError, match="fresh"):
        _fit(cal.model, evals=2, runs=1, start=None, which=("preassign",), only=("same",))
    got = _fit(cal.model, evals=4, runs=1, start=cal, which=("preassign",), only=("same",))
    before, after = cal.modes["preassign"], got.modes["preassign"]
    moved = {k for k in ModeParams.model_fields if getattr(before, k) != getattr(after, k)}
    assert moved <= {"same"}, moved  # the sweep's starting slopes must not leak in
    assert got.modes["decentralized"] == cal.modes["decentralized"]
    fit = got.sources["preassign"]["fit"]
    assert fit["then"][-1]["parameters"] == ["same"]
    assert fit["loss"] == cal.sources["preassign"]["fit"]["loss"]  # the full fit's record stays


# -------------------------------------------------------------- the choice of task, profiled


def test_a_profiled_choice_of_task_is_the_knobs_default_and_the_knob_still_overrides_it() -> None:
    from quorumboard.agents.brains.study import parse_assumptions

    cal = load_calibration("gpt-5.2")
    profiled = cal.model_copy(update={"pick_first": {"decentralized": 0.9}})
    assert parse_assumptions("", profiled, "decentralized").pick_first == 0.9
    assert parse_assumptions("", profiled, "hybrid").pick_first == 0.9
    assert parse_assumptions("pick_first=0", profiled, "decentralized").pick_first == 0.0
    assert parse_assumptions("", cal.model_copy(update={"pick_first": {}}),
                             "decentralized").pick_first == 0.5


def test_the_profile_keeps_the_setting_with_the_lowest_held_out_loss() -> None:
    """Each setting's fit is the better of a start from the current values and, for the
    settings behind, a start from the leading setting's optimum (never worse than the single
    start), and the setting with the lowest held-out loss becomes the default."""
    from quorumboard.agents.brains.calibrate import (
        PROFILE_SEEDS,
        fit_mode,
        fitted_rows,
        profile_pick_first,
    )

    cal = load_calibration("gpt-5.2")
    got = profile_pick_first(cal, "decentralized", (0.0, 1.0), evals=3, runs=2)
    table = got.sources["pick_first decentralized"]
    held = {float(k): sum(v["held-out losses"]) / len(PROFILE_SEEDS)
            for k, v in table["settings"].items()}
    assert set(held) == {0.0, 1.0}
    assert got.pick_first["decentralized"] == table["chosen"] == min(held, key=held.__getitem__)
    assert got.modes["preassign"] == cal.modes["preassign"]  # the other mode is left alone
    rows = fitted_rows("gpt-5.2", "decentralized")
    # the setting behind was fitted a second time, from the leader's optimum
    behind = [k for k, v in table["settings"].items()
              if "fit loss from the leading optimum" in v]
    assert len(behind) == 1, table["settings"]
    entry = table["settings"][behind[0]]
    assert entry["fit loss"] <= entry["fit loss from the leading optimum"]
    for value, other in ((0.0, 1.0), (1.0, 0.0)):
        entry = table["settings"][f"{value:g}"]
        assert entry["started from"] in ("the current values",
                                         f"the optimum at pick_first={other:g}")
        at = cal.model_copy(update={"pick_first": {**cal.pick_first, "decentralized": value}})
        _, single = fit_mode(at, "decentralized", rows, 3, 2)
        assert entry["fit loss"] <= round(single, 1), (value, entry, single)


# ------------------------------------- §6: pre-assigned edits of another agent's task file


@pytest.mark.parametrize("model", STUDY_MODELS)
def test_pre_assigned_edits_of_anothers_file_match_the_studys_share_at_n_2(model: str) -> None:
    """The shipped ``foreign_share`` puts §6's n = 2 share of edits of a task file dealt to
    another agent within tolerance, re-measured on a seed the fit never used."""
    from quorumboard.agents.brains.calibrate import check_foreign

    study, simulated, tol = check_foreign(load_calibration(model), RUNS, SEED)
    assert abs(simulated - study) <= tol, (study, simulated, tol)


@pytest.mark.parametrize(("model", "share"), [("gpt-5.2", 1.0), ("gemini-3-flash-preview", 1.0),
                                               ("gpt-5.2", 0.0)])
def test_negative_control_a_miscalibrated_foreign_share_fails(model: str, share: float) -> None:
    """Planted miscalibrations: every extra edit of a task file goes to another agent's (far
    above §6's share), or none does (gpt-5.2's 12 % against 0: the near control)."""
    from quorumboard.agents.brains.calibrate import check_foreign

    study, simulated, tol = check_foreign(load_calibration(model), RUNS, SEED, share=share)
    assert abs(simulated - study) > tol, (study, simulated, tol)


def test_foreign_share_routes_extra_edits_and_leaves_a_lone_agent_alone() -> None:
    """At 0 no pre-assigned agent of a pair writes the other's files (each has its own, open
    or done, to go to); at 1 some do; a lone agent has no other's file, makes no draw for the
    knob, and replays event for event whatever its value, the rule before the knob (None)
    included; lead workers have no deal and keep that rule."""
    from quorumboard.agents.brains.calibrate import simulate_runs
    from quorumboard.agents.brains.study import parse_assumptions
    from quorumboard.agents.study.metrics import run_metrics
    from quorumboard.agents.team.events import RunEvent

    cal = load_calibration("gpt-5.2")

    def runs(share: float | None, n: int, mode: str = "preassign") -> list[list[RunEvent]]:
        knob = parse_assumptions("helper_share=0", cal, mode).model_copy(
            update={"foreign_share": share})
        return simulate_runs(cal, mode, "p09", n, 6, seed=1, assumptions=knob)

    def foreign(share: float) -> int:
        return sum(run_metrics(ev).foreign_edits for ev in runs(share, 2))

    assert foreign(0.0) == 0
    assert foreign(1.0) > 0
    assert runs(None, 1) == runs(0.0, 1) == runs(1.0, 1)
    assert runs(None, 1, "lead") == runs(1.0, 1, "lead")
    assert runs(None, 3, "lead") == runs(1.0, 3, "lead")
    assert parse_assumptions("", cal, "lead").foreign_share is None
    assert parse_assumptions("", cal, "decentralized").foreign_share is None
    assert parse_assumptions("", cal, "preassign").foreign_share == cal.foreign_share


def test_foreign_open_sends_edits_of_others_files_to_their_open_tasks() -> None:
    """``foreign_open=1``: every edit of a file dealt to another agent, made while another
    agent had a task open, goes to such a task (open when the round began: what its writer
    saw); at the default 0
    (any of their files, done or not) some go to finished ones, so the check can fail. A lone
    agent has no other's file: its stream is the same whatever the knob."""
    from quorumboard.agents.brains.calibrate import simulate_runs, study_shape
    from quorumboard.agents.brains.study import parse_assumptions
    from quorumboard.agents.team.events import RunEvent

    cal = load_calibration("gpt-5.2")
    task_of = {f: t.id for t in study_shape("p09").tasks for f in t.files}

    def runs(open_share: float, n: int = 3) -> list[list[RunEvent]]:
        knob = parse_assumptions(f"helper_share=0,foreign_share=1,foreign_open={open_share}",
                                 cal, "preassign")
        return simulate_runs(cal, "preassign", "p09", n, 8, seed=2, assumptions=knob)

    def foreign_writes(events: list[list[RunEvent]]) -> tuple[int, int]:
        """(foreign writes made while another agent had a task open, those of them that went
        to a task done before their round began)."""
        total = of_done = 0
        for run in events:
            done_in: dict[str, int] = {}
            owner: dict[str, str] = {}
            for e in run:
                if e.kind == "complete" and e.task is not None:
                    done_in.setdefault(e.task, e.round)
                if e.kind == "claim" and e.task is not None and e.agent is not None:
                    owner.setdefault(e.task, e.agent)  # the deal
            for e in run:
                if e.kind != "write" or e.reason != "foreign" or e.file is None:
                    continue
                open_others = [t for t, a in owner.items()
                               if a != e.agent and done_in.get(t, e.round) >= e.round]
                if open_others:
                    total += 1
                    of_done += done_in.get(task_of[e.file], e.round) < e.round
        return total, of_done

    total, of_done = foreign_writes(runs(1.0))
    assert total > 0 and of_done == 0
    total0, of_done0 = foreign_writes(runs(0.0))
    assert total0 > 0 and of_done0 > 0
    assert runs(0.0, 1) == runs(1.0, 1)
