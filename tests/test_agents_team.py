"""Agent teams on a real 3-replica cluster: hand-computed runs, conflict mechanisms, faults,
determinism, an LLM team against the fake chat-completions server, and a resumable sweep."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumboard.agents.brains.llm import LLMConfig, OpenAIBrain
from quorumboard.agents.study.experiment import SweepConfig, read_results, run_sweep
from quorumboard.agents.study.metrics import RunRecord, amdahl
from quorumboard.agents.team.modes import MODES
from quorumboard.agents.team.runner import TeamEnv, run_team
from quorumboard.agents.team.spec import AgentFault, BoardFault, RunSpec
from quorumboard.agents.team.tasks import Project, generate_project, load_project
from tests.agent_helpers import cluster_env, spec_of
from tests.fake_llm import FakeLLM

CHAIN3 = generate_project(3, 3, 0)      # t1 -> t2 -> t3: p = 0
PARALLEL3 = generate_project(3, 1, 0)   # three independent tasks: p = 2/3
PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper-tasks"


@pytest.fixture(scope="module")
def env() -> Iterator[TeamEnv]:
    yield from cluster_env("t")


def _spec(project: Project, **kw: object) -> RunSpec:
    return spec_of(project, **kw)


def _run(env: TeamEnv, project: Project, tmp: Path | None = None, **kw: object) -> RunRecord:
    spec = _spec(project, **kw)
    return run_team(spec, project, env, tmp / spec.run_id if tmp else None)


def _events(tmp: Path, rec: RunRecord) -> list[dict[str, object]]:
    lines = (tmp / rec.spec.run_id / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


# ------------------------------------------------------------------- hand-computed cases


@pytest.mark.parametrize("mode", ["preassign", "lead", "decentralized", "hybrid"])
def test_three_task_chain_takes_three_rounds_whatever_the_team(env: TeamEnv, mode: str,
                                                               tmp_path: Path) -> None:
    # The "exact" profile replies in 10 s and always claims, writes and completes in one reply.
    one = _run(env, CHAIN3, tmp_path, mode=mode, model="exact", agents=1)
    assert one.metrics.success and one.metrics.tasks_done == 3
    assert one.metrics.rounds == 3 and one.metrics.makespan_s == pytest.approx(30.0)
    assert one.metrics.messages == 3 and one.metrics.idle_rounds == 0
    if mode == "lead":
        return  # a lead needs a round to assign before each task: checked below
    three = _run(env, CHAIN3, tmp_path, mode=mode, model="exact", agents=3)
    m = three.metrics
    assert m.success
    assert m.makespan_s == pytest.approx(30.0)  # speedup 1 = Amdahl at p = 0
    assert m.messages == 9  # every agent replies every round
    if mode == "preassign":  # the chain is a0's: the others have nothing to do
        assert m.conflicts_total == 0 and m.idle_replies == 6
        return
    # Self-claiming: each round all three go for the one ready task and plan claim + write +
    # complete. a0 (first on ties) wins; a1 and a2 find it done, but their planned writes go
    # through under last-writer-wins, on base version 0: v2 loses 1 update, v3 loses 2.
    assert (m.concurrent_writes, m.lost_updates, m.rewrites) == (3, 9, 0)
    assert m.conflicts_total == 12


def test_lead_assigns_then_workers_work(env: TeamEnv, tmp_path: Path) -> None:
    rec = _run(env, CHAIN3, tmp_path, mode="lead", model="exact", agents=2)
    kinds = Counter(str(e["kind"]) for e in _events(tmp_path, rec))
    assert rec.metrics.success and kinds["assign"] == 3
    # assign (round r), worker claims+writes+completes (round r+1), per task: 6 rounds.
    assert rec.metrics.rounds == 6 and rec.metrics.makespan_s == pytest.approx(60.0)


def test_fully_parallel_set_reaches_linear_speedup(env: TeamEnv, tmp_path: Path) -> None:
    one = _run(env, PARALLEL3, tmp_path, model="exact", agents=1)
    three = _run(env, PARALLEL3, tmp_path, model="exact", agents=3)
    assert one.metrics.makespan_s == pytest.approx(30.0)
    assert three.metrics.makespan_s == pytest.approx(10.0) and three.metrics.rounds == 1
    speedup = one.metrics.makespan_s / three.metrics.makespan_s
    assert speedup == pytest.approx(3.0)
    # The study's p counts the one task of the critical path as serial: Amdahl says 1.8.
    assert amdahl(PARALLEL3.parallel_fraction, 3) == pytest.approx(1.8)


def test_preassign_keeps_a_chain_on_one_agent(env: TeamEnv, tmp_path: Path) -> None:
    rec = _run(env, CHAIN3, tmp_path, mode="preassign", model="exact", agents=3)
    completers = {e["agent"] for e in _events(tmp_path, rec) if e["kind"] == "complete"}
    assert rec.metrics.success and completers == {"a0"}


# ------------------------------------------------------- conflicts come from mechanisms


def test_reject_stale_never_loses_an_update_where_lww_does(env: TeamEnv) -> None:
    p09 = generate_project(20, 2, 0, seed=3)
    lww = [_run(env, p09, agents=5, policy="last-writer-wins", seed=s) for s in range(4)]
    cas = [_run(env, p09, agents=5, policy="reject-stale", seed=s) for s in range(4)]
    assert sum(r.metrics.lost_updates for r in lww) > 0
    assert sum(r.metrics.lost_updates for r in cas) == 0
    assert sum(r.metrics.stale_rejected for r in cas) > 0
    assert all(r.metrics.lost_work == 0 for r in lww + cas)
    # Self-claiming agents collide on claims; preassigned ones never do.
    assert sum(r.metrics.claims_contended for r in lww) > 0
    pre = _run(env, p09, agents=5, mode="preassign", seed=0)
    assert pre.metrics.claims_contended == 0


def test_same_spec_same_run(env: TeamEnv, tmp_path: Path) -> None:
    project = load_project(PAPER / "amdahl_svgutils" / "p05.json")
    a = _run(env, project, tmp_path / "a", agents=4, seed=11)
    b = _run(env, project, tmp_path / "b", agents=4, seed=11)

    def strip(events: list[dict[str, object]]) -> list[dict[str, object]]:
        # Fences are board-wide counters (other runs took some): compare everything else.
        return [{k: v for k, v in e.items() if k not in ("data", "fence")} for e in events]

    assert strip(_events(tmp_path / "a", a)) == strip(_events(tmp_path / "b", b))
    wall = {"wall_s", "board_s", "board_wait_max_s"}  # measured, not simulated
    assert a.metrics.model_dump(exclude=wall) == b.metrics.model_dump(exclude=wall)


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize("sync", ["rounds", "async"])
def test_stalled_agent_task_is_taken_over_by_self_claiming_modes(env: TeamEnv, sync: str,
                                                                 tmp_path: Path) -> None:
    # a0 stalls for 2,000 s at its first turn after 5 s in which it is working on a task.
    stall = (AgentFault(agent=0, stall_at_s=5.0, stall_s=2_000.0),)
    project = generate_project(8, 8, 0)  # a chain: whoever holds a task holds up everyone
    stalled = {"hybrid": 0, "preassign": 0}
    for seed in range(4):
        kw = {"agents": 3, "sync": sync, "claim_ttl_s": 60.0, "faults": stall, "seed": seed,
              "round_cap": 300}
        hybrid = _run(env, project, tmp_path, mode="hybrid", **kw)
        pre = _run(env, project, tmp_path, mode="preassign", **kw)
        assert hybrid.metrics.success
        if hybrid.metrics.agent_faults:
            stalled["hybrid"] += 1
            assert hybrid.metrics.recovered_by_other
            assert hybrid.metrics.recovery_s is not None and hybrid.metrics.recovery_s < 2_000
            kinds = Counter(str(e["kind"]) for e in _events(tmp_path, hybrid))
            assert kinds["stall"] == 1 and kinds["expired"] == 1 and kinds["takeover"] >= 1
        if pre.metrics.agent_faults:
            stalled["preassign"] += 1
            # Nobody reassigns under preassign: a0's chain waits out the stall.
            assert not pre.metrics.recovered_by_other
            assert pre.metrics.recovery_s is None or pre.metrics.recovery_s >= 2_000 - 5
    assert stalled["hybrid"] >= 1 and stalled["preassign"] >= 1


def test_zombie_writes_after_a_takeover_are_fenced(env: TeamEnv, tmp_path: Path) -> None:
    # async: a0 freezes mid-reply; its late reply (planned before the stall) writes with the
    # fence of a claim that was taken over meanwhile, and the board refuses it.
    fault = (AgentFault(agent=0, stall_at_s=4.0, stall_s=120.0),)
    refused = 0
    for seed in range(6):
        rec = _run(env, generate_project(16, 16, 0), tmp_path, agents=2, mode="hybrid",
                   sync="async", claim_ttl_s=20.0, faults=fault, seed=seed, round_cap=100)
        assert rec.metrics.lost_work == 0
        refused += rec.metrics.fenced_rejected
    assert refused > 0


def test_team_finishes_through_leader_kill_and_partition(env: TeamEnv, tmp_path: Path) -> None:
    project = load_project(PAPER / "amdahl_mathutilities20" / "p09.json")
    # Board latency counts as run time here: the faults must cost some.
    clean = _run(env, project, tmp_path / "clean", agents=3, board_time=True)
    rec = _run(env, project, tmp_path, agents=3, board_time=True,
               board_fault=BoardFault(at_round=2, heal_after=2))
    events = _events(tmp_path, rec)
    kinds = Counter(str(e["kind"]) for e in events)
    assert kinds["board_fault"] == 2 and kinds["board_heal"] == 2  # kill, partition; restart, heal
    assert rec.metrics.board_faults == 2
    # The kill fires from a timer while the round's board calls are in flight.
    assert any("in flight" in str(e.get("reason")) for e in events if e["kind"] == "board_fault")
    assert rec.metrics.success and rec.metrics.lost_work == 0
    final = json.loads((tmp_path / rec.spec.run_id / "final.json").read_text())
    assert all(t["status"] == "done" for t in final["tasks"].values())
    assert final["lost"] == []
    # An election stalls some agent's board calls far longer than a healthy board takes, and
    # the stall is run time: some round outlasts its slowest reply by that much. (Whole
    # makespans are not compared: board time reorders replies, and the runs diverge.)
    assert rec.metrics.board_wait_max_s > 3 * clean.metrics.board_wait_max_s
    assert rec.metrics.board_wait_max_s > 0.3  # an election takes >= 0.4 s here

    def board_share_of_rounds(events: list[dict[str, object]]) -> float:
        """The most any round lasted beyond its slowest reply (its board waits)."""
        starts = {e["round"]: float(e["t_s"]) for e in events  # type: ignore[arg-type]
                  if e["kind"] == "round_start"}
        slowest: dict[object, float] = {}
        for e in events:
            if e["kind"] == "reply":
                slowest[e["round"]] = max(slowest.get(e["round"], 0.0),
                                          float(e["latency_s"]))  # type: ignore[arg-type]
        rounds = sorted(starts)  # type: ignore[type-var]
        return max(starts[b] - starts[a] - slowest[a]
                   for a, b in itertools.pairwise(rounds) if a in slowest)

    clean_extra = board_share_of_rounds(_events(tmp_path / "clean", clean))
    assert board_share_of_rounds(events) > max(0.3, 3 * clean_extra)
    assert env.cluster is not None
    env.cluster.wait_converged()
    assert len(env.cluster.alive()) == 3  # the killed replica was restarted


def test_study_harness_steps_the_same_board_faults_by_round(env: TeamEnv, tmp_path: Path) -> None:
    project = load_project(PAPER / "amdahl_mathutilities20" / "p09.json")
    rec = _run(env, project, tmp_path, agents=3, harness="study", model="gpt-5.2",
               board_fault=BoardFault(at_round=2, heal_after=1))
    round_, steps = 0, []
    for e in _events(tmp_path, rec):
        round_ = int(str(e["round"])) if e["kind"] == "round_start" else round_
        if str(e["kind"]).startswith("board_"):
            steps.append((round_, e["kind"], str(e["reason"]).split()[-1]))
    # kill at round 2; restart and partition the new leader at 3; heal at 4
    assert steps == [(2, "board_fault", "flight"), (3, "board_heal", "restarted"),
                     (3, "board_fault", "away"), (4, "board_heal", "healed")]
    assert rec.metrics.success and rec.metrics.lost_work == 0
    assert env.cluster is not None
    assert len(env.cluster.wait_converged()) > 0 and len(env.cluster.alive()) == 3


# ------------------------------------------------------------------------ LLM brains


@pytest.mark.parametrize("mode", ["decentralized", "preassign", "lead"])
def test_llm_team_against_fake_server(env: TeamEnv, tmp_path: Path, mode: str) -> None:
    with FakeLLM("worker") as llm:
        config = LLMConfig(base_url=llm.base_url, model="fake-model", timeout_s=10)
        team_env = TeamEnv(endpoints=env.endpoints, root=f"llm-{mode}",
                           brains=lambda spec, i, name: OpenAIBrain(config, name))
        try:
            rec = run_team(_spec(PARALLEL3, agents=3 if mode == "lead" else 2, mode=mode,
                                 brain="openai", model="fake-model"),
                           PARALLEL3, team_env, tmp_path / "llm")
        finally:
            team_env.close()
        assert rec.metrics.success and rec.metrics.tasks_done == 3
        assert rec.metrics.tokens > 0 and llm.chat_requests == rec.metrics.messages


def test_llm_invalid_actions_cost_rounds_not_the_run(env: TeamEnv, tmp_path: Path) -> None:
    with FakeLLM("invalid") as llm:
        config = LLMConfig(base_url=llm.base_url, model="fake-model", timeout_s=10)
        team_env = TeamEnv(endpoints=env.endpoints, root="llm-bad",
                           brains=lambda spec, i, name: OpenAIBrain(config, name))
        try:
            rec = run_team(_spec(PARALLEL3, agents=2, brain="openai", round_cap=3),
                           PARALLEL3, team_env, tmp_path / "bad")
        finally:
            team_env.close()
    kinds = Counter(str(e["kind"]) for e in
                    (json.loads(x) for x in (tmp_path / "bad" / "events.jsonl").read_text()
                     .splitlines()))
    assert not rec.metrics.success and rec.metrics.rounds == 3
    assert kinds["invalid"] >= 6 and kinds["run_end"] == 1


# ---------------------------------------------------------------------------- sweeps


def test_sweep_resumes_without_rerunning(tmp_path: Path) -> None:
    cfg = SweepConfig(modes=("preassign", "decentralized"), agents=(1, 2), reps=1,
                      experiments=("sweep", "stall"))
    projects = [generate_project(4, 2, 1, seed=1)]
    first = run_sweep(cfg, projects, tmp_path, jobs=2)
    assert len(first) == 2 * 2 + 2 * 2  # sweep: 2 modes x 2 sizes; stall: 2 modes x (clean, stall)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join(lines) + "\n" + lines[0][:40])  # torn
    again = run_sweep(cfg, projects, tmp_path, jobs=2)
    assert len(again) == len(first)
    assert len(read_results(tmp_path / "results.jsonl")) == len(first)
    for rec in first:
        assert (tmp_path / "runs" / rec.spec.run_id / "events.jsonl").exists()


def test_a_crashed_agent_is_replaced_by_the_hybrid_monitor(env: TeamEnv, tmp_path: Path) -> None:
    crash = (AgentFault(agent=0, crash_at_s=5.0),)
    rec = _run(env, generate_project(6, 6, 0), tmp_path, mode="hybrid", agents=3, faults=crash,
               claim_ttl_s=30.0, seed=4, round_cap=200)
    kinds = Counter(str(e["kind"]) for e in _events(tmp_path, rec))
    assert kinds["crash"] == 1 and rec.metrics.success
    replies_after = [e for e in _events(tmp_path, rec)
                     if e["kind"] == "reply" and e["agent"] == "a0" and float(e["t_s"]) > 5.0]
    # Its only reply after the crash time is one that was already on its way (if any).
    assert len(replies_after) <= 1


def test_a_user_mode_plugs_in(env: TeamEnv, tmp_path: Path) -> None:
    """The user's mode of tests/plugins/first_mode.py (also loaded by the CLI test through
    --mode-module) registers itself on import: every task dealt to the first agent."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "first_mode", Path(__file__).parent / "plugins" / "first_mode.py")
    assert spec is not None and spec.loader is not None
    try:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        assert "all-to-first-cli" in MODES
        rec = _run(env, PARALLEL3, tmp_path, mode="all-to-first-cli", model="exact", agents=2)
    finally:
        MODES.pop("all-to-first-cli", None)
    completers = Counter(str(e["agent"]) for e in _events(tmp_path, rec) if e["kind"] == "complete")
    assert rec.metrics.success and completers == {"a0": 3} and rec.metrics.rounds == 3


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # A child process: the command configures logging for its own stderr.
    return subprocess.run([sys.executable, "-m", "quorumboard.consensus.cli", "experiment", *args],
                          capture_output=True, text=True, timeout=600, check=False,
                          cwd=Path(__file__).resolve().parents[1])


def test_cli_runs_a_sweep_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "exp"
    done = _cli("run", "--generate", "6:2:1,6:6:0", "--modes", "preassign,decentralized",
                "--agents", "1-2", "--reps", "1", "--out", str(out), "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "8/8 runs" in done.stderr  # the progress line
    records = read_results(out / "results.jsonl")
    assert len(records) == 2 * 2 * 2 and all(r.metrics.success for r in records)
    for name in ("report.md", "summary.csv", "speedup_vs_n.png", "messages_vs_n.png",
                 "conflicts.png", "recovery.png"):
        assert (out / name).stat().st_size > 0, name
    assert _cli("report", str(out)).returncode == 0
    # Without the plotting extra the report is refused with the fix, not a traceback.
    no_plots = subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['matplotlib'] = None; "
         "from quorumboard.consensus.cli import main; sys.exit(main(sys.argv[1:]))",
         "experiment", "report", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).resolve().parents[1])
    assert no_plots.returncode == 2 and "quorumboard[experiment]" in no_plots.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"tasks": [{"id": "a", "dependencies": ["zz"]}]}')
    refused = _cli("run", "--tasks", str(bad), "--out", str(tmp_path / "x"))
    assert refused.returncode == 2 and "unknown task zz" in refused.stderr
    refused = _cli("run", "--generate", "4:2:0", "--modes", "anarchy", "--out", str(tmp_path))
    assert refused.returncode == 2 and "unknown mode(s) anarchy" in refused.stderr
