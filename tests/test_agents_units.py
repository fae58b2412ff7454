"""Pure parts of agents/: task files and generated DAGs, the simulated brains' calibration and
choices, the sweep grid. No cluster."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumboard.agents.brains.sim import PROFILES, BrainProfile, SimBrain, quantile_of, study_knots
from quorumboard.agents.study.experiment import SweepConfig, expand, parse_generated, parse_range
from quorumboard.agents.team.actions import (
    ClaimTask,
    CompleteTask,
    Idle,
    TaskView,
    View,
    WriteFile,
    parse_action,
)
from quorumboard.agents.team.tasks import (
    TaskFileError,
    critical_path,
    generate_project,
    load_project,
    load_projects,
)

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper-tasks"


def test_the_study_task_files_load_with_their_parallel_fractions() -> None:
    assert PAPER.is_dir(), f"the study's task files are expected at {PAPER}"
    projects = load_projects(PAPER)
    assert len(projects) == 9
    by_level = {(p.suite, p.level): p for p in projects}
    for suite in ("amdahl_dataanalysis", "amdahl_mathutilities20", "amdahl_svgutils"):
        assert [by_level[(suite, lv)].critical_path for lv in ("p02", "p05", "p09")] == [16, 10, 2]
        assert [by_level[(suite, lv)].parallel_fraction for lv in ("p02", "p05", "p09")] == \
            pytest.approx([0.2, 0.5, 0.9])
    assert all(p.size == 20 for p in projects)


@given(st.integers(1, 40), st.data(), st.integers(0, 30), st.integers(0, 2**16))
@settings(max_examples=150, deadline=None)
def test_generated_dags_have_exactly_the_asked_critical_path(
        subtasks: int, data: st.DataObject, extra: int, seed: int) -> None:
    cp = data.draw(st.integers(1, subtasks))
    project = generate_project(subtasks, cp, extra, seed)
    assert project.size == subtasks and project.critical_path == cp
    assert critical_path(project.tasks) == cp
    assert project.parallel_fraction == pytest.approx((subtasks - cp) / subtasks)
    assert generate_project(subtasks, cp, extra, seed) == project  # deterministic


def _write(tmp: Path, tasks: object, name: str = "p01.json") -> Path:
    path = tmp / name
    path.write_text(json.dumps({"project": "x", "tasks": tasks}))
    return path


@pytest.mark.parametrize(("tasks", "message"), [
    ([{"id": "a", "dependencies": ["b"]}], "unknown task b"),
    ([{"id": "a", "dependencies": ["b"]}, {"id": "b", "dependencies": ["a"]}], "cycle"),
    ([{"id": "a", "files": ["f.py"]}, {"id": "b", "files": ["f.py"]}], "share file f.py"),
    ([{"id": "a"}, {"id": "a"}], "not unique"),
    ([{"id": "a/../b"}], "tasks.0.id"),
    ([], "tasks"),
    ("nope", "tasks"),
])
def test_malformed_task_files_name_the_problem(tmp_path: Path, tasks: object,
                                               message: str) -> None:
    with pytest.raises(TaskFileError, match=message.replace(".", r"\.")):
        load_project(_write(tmp_path, tasks))


def test_unreadable_task_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TaskFileError, match="cannot read"):
        load_project(bad)
    with pytest.raises(TaskFileError, match="no task files"):
        load_projects(tmp_path / "empty")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(TaskFileError, match="not a JSON object"):
        load_project(tmp_path / "list.json")


# The study's calibration table (notes/paper.md): p10, p50, p90, p99 of all replies, seconds.
TABLE = {"claude-sonnet-4-6": (1.18, 3.50, 33.4, 48.6), "gpt-5.2": (0.87, 1.83, 6.77, 42.8),
         "gemini-3-flash-preview": (2.24, 4.07, 10.6, 27.7)}
MEANS = {"claude-sonnet-4-6": 9.85, "gpt-5.2": 3.78, "gemini-3-flash-preview": 5.74}


def _quantile(draws: list[float], q: float) -> float:
    return draws[int(len(draws) * q)]


@pytest.mark.parametrize("name", sorted(TABLE))
def test_latency_matches_the_calibration_table(name: str) -> None:
    profile = PROFILES[name].model_copy(update={"act_latency_factor": 1.0,
                                                "idle_latency_factor": 1.0})
    brain = SimBrain(profile, seed=1)
    draws = sorted(brain.latency_s(acting=True) for _ in range(200_000))
    p10, p50, p90, p99 = TABLE[name]
    assert _quantile(draws, 0.10) == pytest.approx(p10, rel=0.06)
    assert _quantile(draws, 0.50) == pytest.approx(p50, rel=0.06)
    assert _quantile(draws, 0.90) == pytest.approx(p90, rel=0.06)
    assert _quantile(draws, 0.99) == pytest.approx(p99, rel=0.10)
    assert statistics.fmean(draws) == pytest.approx(MEANS[name], rel=0.15)
    assert max(draws) <= 603.0
    assert min(draws) >= max(0.2, p10 / 3)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_idle_and_acting_mixture_keeps_the_table_median(name: str) -> None:
    """The table is over all replies: ~30% idle (faster), ~70% acting (slower) must still give
    its median."""
    brain, coin = SimBrain(PROFILES[name], seed=2), random.Random(7)
    draws = [brain.latency_s(acting=coin.random() >= 0.3) for _ in range(50_000)]
    assert statistics.median(draws) == pytest.approx(TABLE[name][1], rel=0.12)
    assert max(draws) <= 603.0


def test_latency_knots_interpolate_log_linearly_and_are_validated() -> None:
    knots = ((0.0, 1.0), (0.5, 4.0), (1.0, 4.0))
    assert quantile_of(knots, 0.0) == 1.0
    assert quantile_of(knots, 0.25) == pytest.approx(2.0, abs=1e-12)  # geometric midpoint
    assert quantile_of(knots, 0.5) == pytest.approx(4.0, abs=1e-12)
    assert quantile_of(knots, 0.9) == 4.0  # a flat segment is exact
    assert study_knots(0.3, 1.0, 2.0, 3.0)[0] == (0.0, 0.2)  # p10 / 3 floored at 0.2 s
    base = PROFILES["exact"]
    for bad in (((0.0, 1.0),), ((0.0, 2.0), (1.0, 1.0)), ((0.0, 1.0), (0.5, 2.0), (0.5, 3.0),
                                                         (1.0, 4.0)),
                ((0.1, 1.0), (1.0, 2.0)), ((0.0, 0.0), (1.0, 2.0))):
        with pytest.raises(ValueError):
            BrainProfile.model_validate({**base.model_dump(), "latency_quantiles_s": bad})


def test_idle_replies_are_faster_and_stragglers_slower() -> None:
    calm, slow = SimBrain(PROFILES["gpt-5.2"], seed=3), SimBrain(PROFILES["gpt-5.2"], seed=3,
                                                                  slowdown=4.0)
    acting = statistics.median(calm.latency_s(True) for _ in range(5_000))
    idle = statistics.median(calm.latency_s(False) for _ in range(5_000))
    assert idle < acting
    assert idle / acting == pytest.approx(0.6 / 1.15, rel=0.1)
    ratio = statistics.median(slow.latency_s(True) for _ in range(5_000)) / acting
    assert math.isclose(ratio, 4.0, rel_tol=0.1)


def _view(agent: str = "a0", **kw: object) -> View:
    tasks = (TaskView(id="t1", files=("t1.py",)), TaskView(id="t2", dependencies=("t1",),
                                                           files=("t2.py",)))
    fields: dict[str, object] = {"agent": agent, "team": ("a0", "a1"), "round": 1,
                                 "time_s": 0.0, "mode": "decentralized", "tasks": tasks}
    fields.update(kw)
    return View(**fields)  # type: ignore[arg-type]


def test_exact_brain_claims_writes_and_completes_the_ready_task() -> None:
    reply = SimBrain(PROFILES["exact"], seed=0).decide(_view())
    assert reply.actions == (ClaimTask(task="t1"),
                             WriteFile(file="t1.py", task="t1", content="# t1 by a0\n"),
                             CompleteTask(task="t1"))
    assert reply.latency_s == 10.0 and reply.tokens_in > 0 and reply.tokens_out > 0


def test_a_worker_waits_for_an_assignment_when_it_may_not_self_claim() -> None:
    reply = SimBrain(PROFILES["exact"], seed=0).decide(_view(mode="preassign",
                                                             self_claiming=False))
    assert reply.actions == (Idle(reason="nothing left for me"),)


def test_sim_brain_is_reproducible_and_its_rates_are_mechanisms() -> None:
    a = [SimBrain(PROFILES["gpt-5.2"], seed=9).decide(_view()) for _ in range(2)]
    assert a[0] == a[1]
    eager = PROFILES["gpt-5.2"].model_copy(update={"blocked_claim_rate": 1.0,
                                                   "idle_rate": 0.0})
    reply = SimBrain(eager, seed=1).decide(_view())
    assert reply.actions[0] == ClaimTask(task="t2")  # misreads the board: t1 is not done


def test_actions_validate() -> None:
    assert parse_action({"kind": "claim", "task": "t1"}) == ClaimTask(task="t1")
    assert "task" in str(parse_action({"kind": "claim"}))
    assert "kind" in str(parse_action({"kind": "fly"}))


def test_grid_shape_and_common_random_numbers() -> None:
    projects = [generate_project(20, 2, 0), generate_project(20, 10, 0)]
    cfg = SweepConfig(modes=("preassign", "decentralized", "hybrid"), agents=parse_range("1-5"),
                      reps=5, experiments=("sweep", "stall"))
    grid = expand(cfg, projects)
    sweep = [s for s, _ in grid if s.experiment == "sweep"]
    stall = [s for s, _ in grid if s.experiment == "stall"]
    assert len(sweep) == 2 * 3 * 5 * 5
    assert len(stall) == 2 * 3 * 4 * 2 * 5  # n >= 2, clean + stalled
    assert len({s.run_id for s, _ in grid}) == len(grid)
    seeds = {(s.level, s.agents, s.rep, s.mode): s.seed for s in sweep}
    assert seeds[("cp2", 3, 1, "preassign")] == seeds[("cp2", 3, 1, "hybrid")]
    assert seeds[("cp2", 3, 1, "preassign")] != seeds[("cp2", 3, 2, "preassign")]


def test_ranges_and_generated_specs() -> None:
    assert parse_range("1-3,5") == (1, 2, 3, 5)
    with pytest.raises(ValueError, match="not a number"):
        parse_range("a-b")
    assert [p.critical_path for p in parse_generated("10:3:2,12:12:0:4")] == [3, 12]
    with pytest.raises(ValueError, match="subtasks:critical-path"):
        parse_generated("10:3")
