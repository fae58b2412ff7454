"""The study harness (``--harness study``) on a real 3-replica cluster: hand-checkable runs with
scripted brains (the study's rules one by one), the board-call count, determinism, the board and
the in-memory store agreeing event for event, and the study's pre-assignment deal."""

from __future__ import annotations

import hashlib
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quorumboard.agents.brains.calibrate import study_shape
from quorumboard.agents.study.experiment import SweepConfig, expand
from quorumboard.agents.study.metrics import RunRecord
from quorumboard.agents.team.actions import Action, ClaimTask, CompleteTask, Reply, View, WriteFile
from quorumboard.agents.team.events import EventLog, RunEvent, read_events
from quorumboard.agents.team.runner import TeamEnv, run_team, study_brain
from quorumboard.agents.team.spec import RunSpec
from quorumboard.agents.team.study_harness import MemoryStore, StudyEngine, study_deal
from quorumboard.agents.team.tasks import Project, generate_project
from tests.agent_helpers import cluster_env, spec_of

P02 = study_shape("p02")          # 5 roots + a 15-task chain: critical path 16
PARALLEL3 = generate_project(3, 1, 0)
CHAIN2 = generate_project(2, 2, 0)  # task-1 -> task-2

Script = Callable[[View], list[Action]]


@pytest.fixture(scope="module")
def env() -> Iterator[TeamEnv]:
    yield from cluster_env("st")


class Scripted:
    """A brain that replies what its script says, after a fixed latency."""

    def __init__(self, script: Script, latency_s: float, tests: bool = False) -> None:
        self.script, self.latency_s, self.tests = script, latency_s, tests

    def decide(self, view: View) -> Reply:
        return Reply(actions=tuple(self.script(view)), latency_s=self.latency_s,
                     run_tests=self.tests)


def _events_of(env: TeamEnv, project: Project, scripts: list[Script], **kw: object
               ) -> tuple[RunRecord, list[RunEvent]]:
    """Run on the board, keeping the event log (the runner writes it to disk only)."""
    with tempfile.TemporaryDirectory() as tmp:
        lat = kw.pop("latencies", None) or [1.0] * len(scripts)
        tests = bool(kw.pop("tests", False))
        team = TeamEnv(endpoints=env.endpoints, root=env.root, cluster=env.cluster,
                       brains=lambda spec, i, name: Scripted(scripts[i], lat[i], tests))
        spec = spec_of(project, harness="study", agents=len(scripts), **kw)
        try:
            rec = run_team(spec, project, team, Path(tmp) / "run")
        finally:
            team.close()
        return rec, read_events(Path(tmp) / "run" / "events.jsonl")


def mine(view: View) -> list[Action]:
    """Complete every task the agent owns (a pre-assigned agent sweeping its dealt list)."""
    return [CompleteTask(task=t.id) for t in view.tasks if t.owner == view.agent
            and t.status != "done"]


def grab_all(view: View) -> list[Action]:
    """Claim every task not done and complete every one: the study's rules decide what holds."""
    open_ = [t.id for t in view.tasks if t.status != "done"]
    return [*(ClaimTask(task=t) for t in open_), *(CompleteTask(task=t) for t in open_)]


# ------------------------------------------------------------------------- the rules


def test_lone_preassigned_agent_sweeps_a_p02_project_in_one_round(env: TeamEnv) -> None:
    # Completion checks ownership only: a chain of 15 completes in one reply.
    rec, events = _events_of(env, P02, [mine], mode="preassign")
    m = rec.metrics
    assert m.success and m.rounds == 1 and m.messages == 1 and m.first_completions == 20
    assert m.harness == "study" and rec.spec.harness == "study"
    assert Counter(e.kind for e in events)["complete"] == 20
    # One board call per action: 2 setup calls + 20 task records + 1 round-start list + 20.
    end = next(e for e in events if e.kind == "run_end")
    assert end.data is not None and end.data["actions"] == 20
    assert m.board_ops == 2 + 20 + m.rounds + 20


def test_decentralized_advances_one_dependency_level_per_reply(env: TeamEnv) -> None:
    # Claims run before completions, so a task whose dependency completes in this reply is
    # refused (claim_blocked) in it: the lone agent needs the critical path's 16 replies.
    rec, events = _events_of(env, P02, [grab_all], mode="decentralized")
    m = rec.metrics
    assert m.success and m.rounds == 16 and P02.critical_path == 16
    assert m.makespan_s == pytest.approx(16.0)  # 1 s replies, no test runs, no board time
    assert (m.claims_done_same_reply, m.claims_done_later, m.claims_never_done) == (20, 0, 0)
    per_round = Counter(e.round for e in events if e.kind == "complete")
    assert per_round[1] == 5 and all(per_round[r] == 1 for r in range(2, 17))
    assert m.claims_blocked == sum(15 - r for r in range(0, 15))  # the chain behind each level
    assert m.board_ops == 2 + 20 + m.rounds + next(
        e.data["actions"] for e in events if e.kind == "run_end" and e.data)


@pytest.mark.parametrize(("level", "roots", "cp"), [("p05", 11, 10), ("p09", 19, 2)])
def test_a_lone_agents_largest_reply_is_the_root_count(env: TeamEnv, level: str, roots: int,
                                                       cp: int) -> None:
    # The note's §1: a lone decentralized agent's largest single-reply completion is the
    # root count (19 / 11 / 5 at p09 / p05 / p02: observed maxima exactly these).
    rec, events = _events_of(env, study_shape(level), [grab_all], mode="decentralized")
    per_round = Counter(e.round for e in events if e.kind == "complete")
    assert rec.metrics.rounds == cp and max(per_round.values()) == per_round[1] == roots


def test_a_claim_on_a_held_task_leaves_no_event(env: TeamEnv) -> None:
    both = [lambda v: [ClaimTask(task="task-1"), CompleteTask(task="task-1")]] * 2
    rec, events = _events_of(env, PARALLEL3, both, mode="decentralized", round_cap=1,
                             latencies=[1.0, 2.0])
    mine_ = [e for e in events if e.task == "task-1" and e.kind != "reply"]
    # a0 replies first: its claim and completion; a1's claim and completion: nothing at all.
    assert [(e.kind, e.agent) for e in mine_] == [("claim", "a0"), ("complete", "a0")]
    assert rec.metrics.claims_contended == 0 and rec.metrics.claims_blocked == 0
    end = next(e for e in events if e.kind == "run_end")
    assert end.data is not None and end.data["ignored"] == 2


def test_a_reply_runs_edits_then_claims_then_completions_then_tests(env: TeamEnv) -> None:
    # Text order: complete the child, claim it, complete the parent, claim the parent, edit.
    def script(view: View) -> list[Action]:
        return [CompleteTask(task="task-2"), ClaimTask(task="task-2"),
                CompleteTask(task="task-1"), ClaimTask(task="task-1"),
                WriteFile(file="repo/notes.py", content="x")]

    rec, events = _events_of(env, CHAIN2, [script], mode="decentralized", round_cap=3,
                             tests=True)
    r1 = [(e.kind, e.task or e.file) for e in events if e.round == 1 and e.kind != "round_start"]
    # Claims in text order (task-2 refused: task-1 not done yet), then completions (task-2
    # is not the agent's: ignored, no event), then the test run, then the reply.
    assert r1 == [("write", "notes.py"), ("claim_blocked", "task-2"), ("claim", "task-1"),
                  ("complete", "task-1"), ("tests", None), ("reply", None)]
    assert rec.metrics.success and rec.metrics.rounds == 2 and rec.metrics.test_runs == 2
    assert rec.metrics.no_task_edits == 2 and rec.metrics.rewrites == 1  # notes.py, twice
    assert rec.metrics.one_edit_replies == 2 and rec.metrics.no_edit_replies == 0
    # task-1 claimed and completed in round 1; task-2 claimed in round 2 and completed there.
    assert rec.metrics.claims_done_same_reply == 2


@pytest.mark.parametrize(("mode", "foreign"), [("preassign", 1), ("decentralized", 0)])
def test_a_write_of_a_file_dealt_to_another_agent_is_foreign(env: TeamEnv, mode: str,
                                                              foreign: int) -> None:
    # The deal of three parallel tasks to two agents: task-1 and task-3 to a0, task-2 to a1.
    # a0 writes its own file, a1's file and a helper: one edit of each §6 class.
    assert study_deal(PARALLEL3, ("a0", "a1")) == {"task-1": "a0", "task-2": "a1",
                                                   "task-3": "a0"}
    files = {t.id: t.files[0] for t in PARALLEL3.tasks}

    def script(view: View) -> list[Action]:
        return [WriteFile(file=files["task-1"], content="x"),
                WriteFile(file=files["task-2"], content="x"),
                WriteFile(file="repo/notes.py", content="x")]

    rec, events = _events_of(env, PARALLEL3, [script, lambda v: []], mode=mode, round_cap=1,
                             model="gpt-5.2")
    m = rec.metrics
    assert (m.edits, m.no_task_edits, m.foreign_edits) == (3, 1, foreign)
    assert [e.reason for e in events if e.kind == "write"] == [
        None, "foreign" if foreign else None, "no-task"]
    if mode == "preassign":
        from quorumboard.agents.study.studyreport import foreign_section

        # 1 of 3 edits, beside §6's 12 % for gpt-5.2 at n = 2 (the input of the fit).
        assert "| gpt-5.2 | 2 | fit | 33.3% | 12.0% |" in foreign_section([rec])


def test_the_round_cap_ends_a_run_that_never_finishes(env: TeamEnv) -> None:
    rec, _ = _events_of(env, PARALLEL3, [lambda v: [], lambda v: []],
                             mode="decentralized", round_cap=4)
    assert not rec.metrics.success and rec.metrics.rounds == 4 and rec.metrics.messages == 8
    assert rec.metrics.idle_rounds == 4 and rec.metrics.study_idle_replies == 8
    assert rec.metrics.no_edit_replies == 8 and rec.metrics.one_edit_replies == 0


def test_a_repeat_completion_is_logged_but_not_a_first_completion(env: TeamEnv) -> None:
    # Pre-assigned, one agent: task-1 completed in round 1, then again in round 2.
    def script(view: View) -> list[Action]:
        return [CompleteTask(task="task-1")] if view.round <= 2 else mine(view)

    rec, events = _events_of(env, CHAIN2, [script], mode="preassign")
    completes = [(e.round, e.reason) for e in events if e.kind == "complete"]
    assert completes == [(1, None), (2, "repeat"), (3, None)]
    assert rec.metrics.idle_rounds == 1 and rec.metrics.first_completions == 2


def test_study_harness_refuses_async() -> None:
    with pytest.raises(ValueError, match="synchronous rounds only"):
        RunSpec(suite="s", level="l", p=0.5, mode="decentralized", agents=2, harness="study",
                sync="async")
    with pytest.raises(ValueError, match="synchronous rounds only"):
        SweepConfig(harness="study", sync="async")


def test_models_are_a_grid_dimension_and_the_harness_is_recorded() -> None:
    cfg = SweepConfig(modes=("decentralized",), agents=(2,), reps=1, harness="study",
                      model="gpt-5.2,claude-sonnet-4-6")
    specs = [s for s, _ in expand(cfg, [PARALLEL3])]
    assert sorted(s.model for s in specs) == ["claude-sonnet-4-6", "gpt-5.2"]
    assert {s.harness for s in specs} == {"study"} and len({s.run_id for s in specs}) == 2
    # The same grid of the board harness keeps the run ids it had before the harness existed.
    # (the hash of the spec as dumped before the fields were added, which came last).
    board = RunSpec(suite="s", level="l", p=0.5, mode="decentralized", agents=2)
    before = board.model_dump_json(exclude={"harness", "assume", "fix", "prompt"})
    assert "harness" not in before and board.model_dump_json().startswith(before[:-1])
    assert board.run_id.endswith(hashlib.sha256(before.encode()).hexdigest()[:10])
    assert board.run_id != board.model_copy(update={"harness": "study"}).run_id
    study = board.model_copy(update={"harness": "study"})
    assert study.run_id != study.model_copy(update={"fix": "completion-deps"}).run_id


@pytest.mark.parametrize(("level", "loads"), [
    ("p09", ["11/9", "8/6/6", "6/5/5/4", "5/4/4/4/3"]),
    ("p05", ["15/5", "13/4/3", "12/3/3/2", "12/2/2/2/2"]),
    ("p02", ["18/2", "17/2/1", "17/1/1/1", "16/1/1/1/1"]),
])
def test_the_study_deal_gives_the_studys_loads(level: str, loads: list[str]) -> None:
    project = study_shape(level)
    got = []
    for n in range(2, 6):
        team = [f"a{i}" for i in range(n)]
        c = Counter(study_deal(project, team).values())
        got.append("/".join(str(c[a]) for a in team))
    assert got == loads  # notes/paper-calibration.md §1, "preassign deal"


# ------------------------------------------------------------------ calibrated brains


def _strip(events: list[RunEvent]) -> list[tuple[object, ...]]:
    """Events without wall-clock figures (run_end's wall and board times)."""
    return [(e.kind, e.round, e.agent, e.task, e.file, e.t_s, e.version, e.reason)
            for e in events]


@pytest.mark.parametrize("mode", ["preassign", "decentralized"])
def test_no_board_time_runs_repeat_and_match_the_in_memory_rules(env: TeamEnv,
                                                                 mode: str) -> None:
    project = study_shape("p05")
    spec = spec_of(project, harness="study", mode=mode, agents=3, model="claude-sonnet-4-6",
                   seed=11)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            run_team(spec, project, env, Path(tmp) / str(i))
            runs.append(read_events(Path(tmp) / str(i) / "events.jsonl"))
    assert _strip(runs[0]) == _strip(runs[1])
    # The same seed on the in-memory store: the same replies, actions and times.
    team = tuple(f"a{i}" for i in range(3))
    log = EventLog(None)
    engine = StudyEngine(project=project, team=team, mode=mode, store=MemoryStore(),
                         brains={a: study_brain(spec, i) for i, a in enumerate(team)}, log=log,
                         round_cap=spec.round_cap, seed=spec.seed)
    engine.setup()
    engine.run()
    board = [e for e in _strip(runs[0]) if e[0] not in ("run_start", "run_end")]
    assert board == _strip(log.events)


def test_report_prints_per_reply_rates_beside_the_studys(env: TeamEnv, tmp_path: Path) -> None:
    from quorumboard.agents.study.report import write_report

    project = study_shape("p09")
    records = []
    with (tmp_path / "results.jsonl").open("w") as sink:
        for mode in ("decentralized", "hybrid"):
            for n in (1, 2):
                spec = spec_of(project, harness="study", mode=mode, agents=n, model="gpt-5.2")
                records.append(run_team(spec, project, env, None))
                sink.write(records[-1].model_dump_json() + "\n")
    text = write_report(tmp_path).read_text()
    assert "harness: study" in text and "## Per-reply rates vs the study" in text
    row = next(line for line in text.splitlines()
               if line.startswith("| gpt-5.2 | decentralized | p09 | 1 | fit |"))
    assert "/ 18%" in row  # the study's idle share of this row (§3) beside ours
    assert "| gpt-5.2 | hybrid | p09 | 2 | no study data |" in text
    # §2's edit histogram: 71.1 % of gpt-5.2's decentralized replies write no file.
    assert "| gpt-5.2 | decentralized | replies writing no file (§2) |" in text
    assert "| 71.1% |" in next(line for line in text.splitlines()
                               if "| gpt-5.2 | decentralized | replies writing no file" in line)
    # The study's §3 row (0.51 first-time completions per reply) implies 20 / 0.51 messages.
    implied = next(line for line in text.splitlines()
                   if line.startswith("| gpt-5.2 | decentralized | p09 | 1 | 39.2 |"))
    ours = statistics.fmean(r.metrics.messages for r in records
                            if r.spec.mode == "decentralized" and r.spec.agents == 1)
    assert f"| {ours:.1f} |" in implied
    assert (tmp_path / "speedup_gpt-5.2.png").stat().st_size > 0


def test_implied_messages_are_the_tasks_over_completions_per_reply_capped() -> None:
    from quorumboard.agents.study.studyreport import implied_messages

    assert implied_messages(0.5, 2) == 40.0      # 20 tasks at half a task per reply
    assert implied_messages(0.05, 3) == 180.0    # 400 replies would outrun 60 rounds x 3
    assert implied_messages(0.0, 1) == 60.0


def test_the_cli_refuses_async_and_stray_knobs_before_any_run(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    from quorumboard.agents.cli import main

    tasks = tmp_path / "p.json"
    tasks.write_text('{"project": "x", "tasks": [{"id": "t1", "files": ["a.py"]}]}')
    base = ["run", "--tasks", str(tasks), "--out", str(tmp_path / "out")]
    assert main([*base, "--harness", "study", "--sync", "async"]) == 2
    assert "synchronous rounds only" in capsys.readouterr().err
    assert main([*base, "--assume", "persist=0.5"]) == 2  # the board harness has no knobs
    assert "--harness study" in capsys.readouterr().err
    assert main([*base, "--fix", "completion-deps"]) == 2  # nor study rules to replace
    assert "--harness study" in capsys.readouterr().err
    assert main([*base, "--harness", "study", "--fix", "nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert main([*base, "--harness", "study", "--model", "gpt-5.2,nobody"]) == 2
    assert "nobody" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
