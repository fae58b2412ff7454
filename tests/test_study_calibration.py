"""The study brains against their calibration files: simulated per-reply rates re-measured
must match the study's fitted rows within binomial tolerances wherever the file says its brains
reproduce them, and a brain with one rate moved 25 % (a planted miscalibration, injected here)
must fail the same check.

The file says a (row, metric) pair is reproduced when 40 runs of each of six seeds put it
within 0.8 of its tolerance (``calibrate.annotate``); the test re-measures 40 runs of the first
of those seeds at the full tolerance, so any change to the brains or the rules that moves a
rate beyond its tolerance fails it, deterministically (everything is seeded)."""

from __future__ import annotations

import math

import pytest

from quorumboard.agents.brains.calibrate import ANNOTATE_SEEDS, METRICS, check_rows, fitted_rows
from quorumboard.agents.brains.study import STUDY_MODELS, Calibration, ModeParams, load_calibration

RUNS = 40
SEED = ANNOTATE_SEEDS[0]
MODES = ("decentralized", "preassign")




def _misses(cal: Calibration, mode: str, params: ModeParams | None = None,
            n_max: int = 2) -> tuple[list[str], int]:
    """(row, metric) pairs the file says are reproduced but the simulation misses (rows up to
    team size ``n_max``); and how many pairs were checked."""
    outside = cal.sources.get(mode, {}).get("outside_tolerance", {})
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
    from quorumboard.agents.brains.calibrate import PROFILE_SEEDS, profile_pick_first

    cal = load_calibration("gpt-5.2")
    got = profile_pick_first(cal, "decentralized", (0.0, 1.0), evals=2, runs=2)
    table = got.sources["pick_first decentralized"]
    held = {float(k): sum(v["held-out losses"]) / len(PROFILE_SEEDS)
            for k, v in table["settings"].items()}
    assert set(held) == {0.0, 1.0}
    assert got.pick_first["decentralized"] == table["chosen"] == min(held, key=held.__getitem__)
    assert got.modes["preassign"] == cal.modes["preassign"]  # the other mode is left alone
