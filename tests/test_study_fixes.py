"""The ablation's fixes to the study's rules (``--harness study --fix ...``), one at a time, on
a real 3-replica cluster with scripted brains: what each fix changes against the study's rule
it replaces (hand-checkable), what it leaves alone, the feedback agents get, the brains'
reactions to it, and ``experiment ablate`` end to end on a tiny grid."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumboard.agents.brains.study import StudyBrain, load_calibration, parse_assumptions
from quorumboard.agents.study.experiment import read_records
from quorumboard.agents.team.actions import (
    Action,
    ClaimTask,
    CompleteTask,
    Feedback,
    TaskView,
    View,
    WriteFile,
)
from quorumboard.agents.team.runner import TeamEnv
from quorumboard.agents.team.spec import AgentFault
from quorumboard.agents.team.study_harness import FIXES, parse_fixes
from tests.agent_helpers import cluster_env
from tests.test_study_harness import CHAIN2, P02, PARALLEL3, _events_of, grab_all, mine


@pytest.fixture(scope="module")
def env() -> Iterator[TeamEnv]:
    yield from cluster_env("sf")


def test_completion_deps_makes_a_lone_preassigned_agent_walk_the_chain(env: TeamEnv) -> None:
    # Study rules: the whole dealt list in one reply (test_study_harness). With the fix a
    # completion needs its dependencies done before the reply's completions run: one level a
    # reply, so the lone agent needs the critical path's 16 replies, like a decentralized one.
    rec, events = _events_of(env, P02, [mine], mode="preassign", fix="completion-deps")
    m = rec.metrics
    assert m.success and m.rounds == P02.critical_path == 16 and m.first_completions == 20
    refused = [e for e in events if e.kind == "complete_refused"]
    assert refused and all(e.reason == "deps" for e in refused)
    assert sum(1 for e in refused if e.round == 1) == 15  # the chain behind the first level
    assert rec.spec.fix == "completion-deps"


def test_completion_deps_leaves_decentralized_runs_as_they_were(env: TeamEnv) -> None:
    # Claims already need the dependencies done, so decentralized events are the same.
    def kinds(fix: str) -> list[tuple[object, ...]]:
        _, events = _events_of(env, P02, [grab_all], mode="decentralized", fix=fix)
        return [(e.kind, e.agent, e.task, e.round) for e in events
                if e.kind not in ("run_start", "run_end")]
    assert kinds("") == kinds("completion-deps")


def _write_twice(view: View) -> list[Action]:
    """Round 1: write a.py twice in one reply; later rounds: nothing."""
    if view.round > 1:
        return []
    return [WriteFile(file="shared.py", content="x"), WriteFile(file="shared.py", content="y")]


SEEN: dict[str, list[tuple[Feedback, ...]]] = {}


def _recording(script: object) -> object:
    def run(view: View) -> list[Action]:
        SEEN.setdefault(view.agent, []).append(view.feedback)
        return script(view)  # type: ignore[operator, no-any-return]
    return run


@pytest.mark.parametrize("fix", ["", "reject-stale-files"])
def test_reject_stale_files_refuses_the_slower_writer_and_tells_it(env: TeamEnv,
                                                                   fix: str) -> None:
    SEEN.clear()
    rec, events = _events_of(env, PARALLEL3, [_recording(_write_twice)] * 2,
                             mode="decentralized", round_cap=2, latencies=[1.0, 2.0], fix=fix)
    writes = [(e.kind, e.agent, e.version, e.base_version) for e in events
              if e.kind in ("write", "write_rejected")]
    if not fix:  # last writer wins: a1's writes overwrite a0's, which it never saw
        assert writes == [("write", "a0", 1, 0), ("write", "a0", 2, 1),
                          ("write", "a1", 3, 0), ("write", "a1", 4, 3)]
        assert rec.metrics.lost_updates == 2 and rec.metrics.stale_rejected == 0
        assert SEEN["a1"][1] == ()
        return
    # a0's second write is its own first one's successor, not stale; a1 saw version 0.
    assert writes[:3] == [("write", "a0", 1, 0), ("write", "a0", 2, 1),
                          ("write_rejected", "a1", None, 0)]
    assert rec.metrics.lost_updates == 0 and rec.metrics.stale_rejected >= 1
    told = SEEN["a1"][1]
    assert told and told[0].kind == "write_stale" and told[0].file == "shared.py"
    assert SEEN["a0"][1] == ()


def _hold_first(view: View) -> list[Action]:
    """Claim task-1 and never complete it."""
    return [ClaimTask(task="task-1")] if view.round == 1 else []


def _finisher(view: View) -> list[Action]:
    """Claim and complete every ready unowned task, and complete what it holds."""
    ready = [t.id for t in view.ready if t.owner is None]
    held = [t.id for t in view.tasks if t.owner == view.agent and t.status != "done"]
    return [*(ClaimTask(task=t) for t in ready), *(CompleteTask(task=t) for t in ready + held)]


@pytest.mark.parametrize("fix", ["", "fenced-claims"])
def test_fenced_claims_hand_a_stalled_holders_task_to_another_agent(env: TeamEnv,
                                                                    fix: str) -> None:
    stall = AgentFault(agent=0, stall_at_s=0.5, stall_s=1000.0)
    rec, events = _events_of(env, PARALLEL3, [_hold_first, _finisher], mode="decentralized",
                             round_cap=20, faults=(stall,), claim_ttl_s=5.0, fix=fix)
    m = rec.metrics
    if not fix:  # a claim never expires: task-1 waits for its silent holder past the cap
        assert not m.success and m.rounds == 20 and m.unrecovered == 1
        assert not any(e.kind == "expired" for e in events)
        return
    expired = [e for e in events if e.kind == "expired"]
    assert len(expired) == 1 and expired[0].agent == "a0"
    assert expired[0].data == {"tasks": ["task-1"]} and expired[0].t_s >= 5.0
    assert m.success and m.unrecovered == 0 and m.recovered_by_other
    done_by = {e.task: e.agent for e in events if e.kind == "complete"}
    assert done_by["task-1"] == "a1"


def test_fenced_claims_refuse_a_lapsed_holders_completion_out_loud(env: TeamEnv) -> None:
    # a0 claims task-1 (of a 2-chain, so the run cannot end early) and stalls for 8 s; its
    # lease lapses at 5 s and a1 takes the task; back, a0 completes it: refused, fenced.
    def back(view: View) -> list[Action]:
        if view.round == 1:
            return [ClaimTask(task="task-1")]
        return [CompleteTask(task="task-1")]

    def late(view: View) -> list[Action]:
        return [ClaimTask(task=t.id) for t in view.ready if t.owner is None][:1]

    stall = AgentFault(agent=0, stall_at_s=0.5, stall_s=8.0)
    rec, events = _events_of(env, CHAIN2, [back, late], mode="decentralized", round_cap=12,
                             faults=(stall,), claim_ttl_s=5.0, fix="fenced-claims")
    refused = [e for e in events if e.kind == "complete_refused"]
    assert refused and refused[0].agent == "a0" and refused[0].reason == "fenced"
    assert rec.metrics.fenced_rejected >= 1
    assert not any(e.kind == "complete" and e.agent == "a0" for e in events)


@pytest.mark.parametrize("fix", ["", "claim-feedback"])
def test_claim_feedback_reports_a_claim_on_a_held_task(env: TeamEnv, fix: str) -> None:
    SEEN.clear()
    both = [_recording(lambda v: [ClaimTask(task="task-1")] if v.round == 1 else [])] * 2
    rec, events = _events_of(env, PARALLEL3, both, mode="decentralized", round_cap=2,
                             latencies=[1.0, 2.0], fix=fix)
    held = [e for e in events if e.kind == "claim_held"]
    if not fix:  # the study: silently ignored
        assert held == [] and SEEN["a1"][1] == ()
        return
    assert [(e.agent, e.task, e.target) for e in held] == [("a1", "task-1", "a0")]
    assert rec.metrics.claims_contended == 1
    assert SEEN["a1"][1] == (Feedback(kind="claim_held", task="task-1", holder="a0"),)


# ------------------------------------------------------------------ the brains' reactions


def _view(agent: str, owner_of_t1: str, feedback: tuple[Feedback, ...] = ()) -> View:
    tasks = (TaskView(id="task-1", status="claimed", owner=owner_of_t1, files=("t1.py",)),
             TaskView(id="task-2", status="done", owner=owner_of_t1, files=("t2.py",)))
    return View(agent=agent, team=("a0", "a1"), round=2, time_s=1.0, mode="decentralized",
                tasks=tasks, feedback=feedback)


def _phantom_edits(knobs: str, feedback: tuple[Feedback, ...]) -> int:
    """Edits of task-1's file by an agent that claimed task-1 and lost it to a0, over 200
    seeds (each: one reply after the lost claim)."""
    cal = load_calibration("gpt-5.2")
    count = 0
    for seed in range(200):
        brain = StudyBrain(cal, "decentralized", seed,
                           parse_assumptions(knobs, cal, "decentralized"))
        brain._claimed = {"task-1"}  # what its previous reply claimed
        reply = brain.decide(_view("a1", "a0", feedback))
        count += any(isinstance(a, WriteFile) and a.task == "task-1" for a in reply.actions)
    return count


def test_phantom_agents_keep_working_on_a_lost_claim_unless_told_and_heeding() -> None:
    told = (Feedback(kind="claim_held", task="task-1", holder="a0"),)
    assert _phantom_edits("", ()) == 0                      # default: it reads the board
    silent = _phantom_edits("phantom=1", ())
    assert silent >= 100                                     # believes it holds task-1
    assert _phantom_edits("phantom=1,heed=1", told) == 0     # told, and heeds it
    ignored = _phantom_edits("phantom=1,heed=0", told)      # told, ignores it: as if silent
    assert ignored >= 100 and abs(ignored - silent) <= 30  # (one more draw: other streams)


def test_a_refused_write_is_written_again_per_the_rewrite_knob() -> None:
    cal = load_calibration("gpt-5.2")
    stale = (Feedback(kind="write_stale", file="t1.py", task="task-1"),)
    for knobs, expect in (("rewrite=1", True), ("rewrite=0", False)):
        brain = StudyBrain(cal, "decentralized", 3, parse_assumptions(knobs, cal, "x"))
        reply = brain.decide(_view("a1", "a0", stale))
        assert any(isinstance(a, WriteFile) and a.file == "t1.py" and a.content == "# again\n"
                   for a in reply.actions) is expect


# ------------------------------------------------------------------------- the CLI


def test_fix_names_are_checked_and_canonical() -> None:
    assert parse_fixes("claim-feedback, completion-deps") == "completion-deps,claim-feedback"
    assert parse_fixes("all") == ",".join(FIXES)
    with pytest.raises(ValueError, match="bogus"):
        parse_fixes("completion-deps,bogus")


def test_ablate_runs_every_rule_set_on_the_same_seeds_and_writes_its_report(
        env: TeamEnv, tmp_path: Path) -> None:
    from quorumboard.agents.cli import main

    out = tmp_path / "ablate"
    code = main(["ablate", "--generate", "6:3:0", "--modes", "decentralized", "--agents", "1,2",
                 "--reps", "1", "--no-sensitivity", "--no-board-time", "--stall-at-s", "1",
                 "--stall-s", "300", "--claim-ttl-s", "20", "--round-cap", "30",
                 "--out", str(out)])
    assert code == 0
    records, _ = read_records(out / "results.jsonl")
    rules = Counter(r.spec.fix for r in records)
    assert set(rules) == {"", *FIXES, ",".join(FIXES)} and len(set(rules.values())) == 1
    # Same seeds under every rule set: twins differ in their rules only.
    seeds = {(r.spec.fix, r.spec.agents, r.spec.experiment): r.spec.seed for r in records}
    assert len({s for (f, n, e), s in seeds.items() if n == 2 and e == "sweep"}) == 1
    lost = {r.spec.fix: r.metrics.lost_updates for r in records
            if r.spec.experiment == "sweep" and r.spec.agents == 2}
    assert lost["reject-stale-files"] == 0 and lost[",".join(FIXES)] == 0
    report = (out / "ablation.md").read_text()
    assert "### gpt-5.2" in report and "| finding | study rules | completion-deps" in report
    assert "**Findings: structure or harness**" in report
    assert json.loads((out / "results.jsonl").read_text().splitlines()[0])["spec"]["harness"] \
        == "study"


def test_llm_agents_are_told_what_the_fixes_refused() -> None:
    from quorumboard.agents.brains.study_prompt import feedback_text

    texts = [feedback_text(Feedback(kind="claim_held", task="task-3", holder="a2")),
             feedback_text(Feedback(kind="write_stale", file="x.py")),
             feedback_text(Feedback(kind="complete_refused", task="task-4", reason="deps")),
             feedback_text(Feedback(kind="complete_refused", task="task-4", reason="fenced")),
             feedback_text(Feedback(kind="claim_lost", reason="task-1,task-2"))]
    assert "task-3" in texts[0] and "a2" in texts[0]
    assert "x.py" in texts[1] and "dependencies" in texts[2] and "no longer" in texts[3]
    assert "task-1,task-2" in texts[4] and len(set(texts)) == 5
