"""Per-run metrics recounted from hand-built event logs, and the Amdahl / Karp-Flatt / fit
arithmetic, against values computed by hand."""

from __future__ import annotations

from typing import Any

import pytest

from quorumboard.agents.study.metrics import (
    RunMetrics,
    RunRecord,
    amdahl,
    cell_rows,
    fit_serial_fraction,
    karp_flatt,
    mean_or_none,
    per_run_speedups,
    run_metrics,
    sd_or_none,
)
from quorumboard.agents.team.events import RunEvent
from quorumboard.agents.team.spec import RunSpec


def ev(t_s: float, kind: str, **fields: Any) -> RunEvent:
    return RunEvent(t_s=t_s, kind=kind, **fields)


def start(sync: str = "rounds", agents: int = 1) -> RunEvent:
    spec = RunSpec(suite="gen", level="cp1", p=0.5, mode="decentralized", agents=agents,
                   sync=sync)
    return ev(0.0, "run_start", data={"spec": spec.model_dump(mode="json")})


def end(t_s: float, success: bool = True, tasks_done: int = 3, **data: Any) -> RunEvent:
    return ev(t_s, "run_end", data={"success": success, "tasks_done": tasks_done,
                                    "board_ops": 7, "wall_s": 0.25, **data})


def work(t_s: float, rnd: int, agent: str, task: str, file: str, latency: float,
         tokens: tuple[int, int] = (100, 10), version: int = 1, base: int = 0
         ) -> list[RunEvent]:
    """One reply that claims, writes and completes a task."""
    return [
        ev(t_s, "reply", round=rnd, agent=agent, latency_s=latency, tokens_in=tokens[0],
           tokens_out=tokens[1]),
        ev(t_s, "claim", round=rnd, agent=agent, task=task, fence=1),
        ev(t_s, "write", round=rnd, agent=agent, task=task, file=file, version=version,
           base_version=base, passes=True),
        ev(t_s, "complete", round=rnd, agent=agent, task=task),
    ]


def chain_one_agent() -> list[RunEvent]:
    """t1 -> t2 -> t3 with one agent; round 3 is an idle reply (nothing completed)."""
    return [
        start(),
        ev(0.0, "round_start", round=1), *work(2.0, 1, "a0", "t1", "f1.py", 2.0),
        ev(2.0, "round_start", round=2), *work(5.0, 2, "a0", "t2", "f2.py", 3.0, (120, 20)),
        ev(5.0, "round_start", round=3),
        ev(6.0, "reply", round=3, agent="a0", latency_s=1.0, tokens_in=90, tokens_out=5),
        ev(6.0, "idle", round=3, agent="a0", reason="waiting"),
        ev(6.0, "round_start", round=4), *work(10.0, 4, "a0", "t3", "f3.py", 4.0),
        end(10.0),
    ]


def test_chain_with_one_agent_counts_by_hand() -> None:
    m = run_metrics(chain_one_agent())
    assert m.ended and m.success and m.sync == "rounds"
    assert m.tasks_done == 3 and m.board_ops == 7 and m.wall_s == 0.25
    assert m.makespan_s == 10.0
    assert m.rounds == 4
    assert m.idle_rounds == 1
    # the round-3 reply has no data.effective (an older log): its idle event makes it idle
    assert m.messages == 4 and m.idle_replies == 1 and m.chat_messages == 0
    assert (m.tokens_in, m.tokens_out, m.tokens) == (410, 45, 455)
    assert m.concurrent_writes == 0 and m.rewrites == 0 and m.conflicts_total == 0
    assert m.straggler_gap_s is None  # one reply per round
    assert m.recovery_s is None and m.agent_faults == 0 and m.recovered_by_other is None
    assert m.recovered_by_self is None
    assert m.lost_work == 0


def test_idle_replies_are_replies_without_an_effective_action() -> None:
    def reply(t_s: float, agent: str, **data: Any) -> RunEvent:
        return ev(t_s, "reply", round=1, agent=agent, latency_s=1.0,
                  data={"actions": [], **data})

    events = [
        start(agents=2), ev(0.0, "round_start", round=1),
        reply(1.0, "a0", effective=False),                # idle: nothing took effect
        reply(1.0, "a1", effective=True),                 # the key decides, not the idle event
        ev(1.0, "idle", round=1, agent="a1", reason="one of its actions was an idle"),
        reply(2.0, "a0"), ev(2.0, "idle", round=1, agent="a0"),  # older log: idle event
        reply(2.0, "a1"),                                 # no idle event of a1 at 2.0
        reply(3.0, "a0"), reply(3.0, "a0"),               # one idle event vouches for one
        ev(3.0, "idle", round=1, agent="a0"),
        reply(4.0, "a0"), ev(4.5, "idle", round=1, agent="a0"),  # not the same time
        reply(5.0, "a1", effective=False, late=True),     # missed its round
        reply(6.0, "a1", effective="yes"),                # not a boolean: fallback, no idle
        reply(7.0, "a0", effective=False),                # idle without an idle event
        end(7.0),
    ]
    m = run_metrics(events)
    assert m.messages == 10
    assert m.idle_replies == 1 + 0 + 1 + 0 + 1 + 0 + 1 + 0 + 1
    assert m.conflicts_total == 0


def parallel_run(agents: int) -> list[RunEvent]:
    """Three independent tasks. n=3: one round, latencies 2, 3, 4 s. n=1: three rounds of 4 s."""
    if agents == 3:
        return [start(agents=3), ev(0.0, "round_start", round=1),
                *work(2.0, 1, "a0", "t1", "f1.py", 2.0, (200, 20)),
                *work(3.0, 1, "a1", "t2", "f2.py", 3.0, (200, 20)),
                *work(4.0, 1, "a2", "t3", "f3.py", 4.0, (200, 20)), end(4.0)]
    out = [start()]
    for r, (task, file) in enumerate((("t1", "f1.py"), ("t2", "f2.py"), ("t3", "f3.py")), 1):
        out += [ev(4.0 * (r - 1), "round_start", round=r),
                *work(4.0 * r, r, "a0", task, file, 4.0)]
    return [*out, end(12.0)]


def record(agents: int, metrics: RunMetrics, p: float = 2 / 3, rep: int = 0) -> RunRecord:
    spec = RunSpec(suite="gen", level="cp1", p=p, mode="decentralized", agents=agents, rep=rep)
    return RunRecord(spec=spec, metrics=metrics, out=spec.run_id)


def test_fully_parallel_three_agents_speedup_three_karp_flatt_zero() -> None:
    one, three = run_metrics(parallel_run(1)), run_metrics(parallel_run(3))
    assert (one.makespan_s, one.rounds, one.messages, one.idle_rounds) == (12.0, 3, 3, 0)
    assert (three.makespan_s, three.rounds, three.messages, three.idle_rounds) == (4.0, 1, 3, 0)
    assert three.straggler_gap_s == 1.0  # max 4 - mean 3
    rows = cell_rows([record(3, three), record(1, one)])
    assert [r.agents for r in rows] == [1, 3]
    r1, r3 = rows
    # A lone n=1 run has no *other* n=1 run to be measured against (leave-one-out).
    assert r1.speedup is None and r1.karp_flatt is None and r1.token_multiplier == 1.0
    assert r3.baseline_makespan_s == 12.0
    assert r3.speedup == 3.0
    assert r3.amdahl == pytest.approx(1.8, abs=1e-12)  # 1 / (1/3 + (2/3)/3) = 9/5
    assert r3.gap == pytest.approx(3.0 / 1.8, abs=1e-12)
    assert r3.karp_flatt == pytest.approx(0.0, abs=1e-12)
    assert r3.tokens == 660.0 and r3.baseline_tokens == 330.0
    assert r3.token_multiplier == 2.0 and r3.efficiency == 1.5
    assert r3.note == ""


def test_concurrent_write_and_rewrite() -> None:
    events = [
        start(agents=2), ev(0.0, "round_start", round=1),
        ev(1.0, "write", round=1, agent="a0", file="f.py", version=1, base_version=0),
        ev(2.0, "write", round=1, agent="a1", file="f.py", version=2, base_version=1),
        # same agent twice on one file in one round: not concurrent
        ev(2.0, "write", round=1, agent="a0", file="g.py", version=1, base_version=0),
        ev(2.5, "write", round=1, agent="a0", file="g.py", version=2, base_version=1),
        ev(3.0, "round_start", round=2),
        ev(4.0, "write", round=2, agent="a0", file="f.py", version=3, base_version=2),
        ev(5.0, "write", round=2, agent="a1", file="h.py", version=1, base_version=0),
        end(5.0),
    ]
    m = run_metrics(events)
    assert m.concurrent_writes == 1  # (1, f.py)
    assert m.rewrites == 1  # f.py in round 2; h.py's first write is no rewrite
    assert m.lost_updates == 0
    assert m.conflicts_total == 2
    assert m.idle_rounds == 2  # no completion in either round


def test_concurrent_writes_count_attempts_refused_or_committed() -> None:
    events = [
        start(agents=3), ev(0.0, "round_start", round=1),
        ev(1.0, "write", round=1, agent="a0", file="f.py", version=1, base_version=0),
        ev(1.5, "write_rejected", round=1, agent="a1", file="f.py", reason="stale"),
        # two refused writers of g.py: still two agents trying to write it in one round
        ev(2.0, "write_rejected", round=1, agent="a0", file="g.py", reason="fenced"),
        ev(2.0, "write_rejected", round=1, agent="a2", file="g.py", reason="stale"),
        # one agent refused twice: no second agent
        ev(2.0, "write_rejected", round=1, agent="a1", file="h.py", reason="stale"),
        ev(2.5, "write_rejected", round=1, agent="a1", file="h.py", reason="stale"),
        ev(3.0, "round_start", round=2),
        ev(4.0, "write_rejected", round=2, agent="a2", file="f.py", reason="stale"),
        ev(4.0, "write", round=2, agent="a1", file="k.py", version=1, base_version=0),
        end(4.0),
    ]
    m = run_metrics(events)
    assert m.concurrent_writes == 2  # (1, f.py) and (1, g.py)
    assert m.rewrites == 0  # a refused write in a later round rewrites nothing
    assert (m.stale_rejected, m.fenced_rejected) == (5, 1)
    assert m.conflicts_total == 2 + 5 + 1


def test_async_run_counts_rewrites_per_file_and_leaves_round_metrics_undefined() -> None:
    events = [
        start(sync="async", agents=2),
        ev(1.0, "reply", agent="a0", latency_s=1.0), ev(1.5, "reply", agent="a1", latency_s=9.0),
        ev(1.0, "write", agent="a0", file="f.py", version=1, base_version=0),
        ev(1.5, "write", agent="a1", file="f.py", version=2, base_version=1),
        ev(2.0, "write", agent="a0", file="f.py", version=3, base_version=2),
        ev(2.0, "write", agent="a0", file="g.py", version=1, base_version=0),
        end(2.0),
    ]
    m = run_metrics(events)
    assert m.sync == "async"
    assert m.rounds == 0 and m.idle_rounds is None and m.concurrent_writes is None
    assert m.straggler_gap_s is None
    assert m.rewrites == 2
    assert m.conflicts_total == 2
    assert m.messages == 2


def test_lost_update_counts_unseen_versions() -> None:
    events = [start(), ev(0.0, "round_start", round=1),
              ev(1.0, "write", round=1, agent="a0", file="f.py", version=3, base_version=1),
              ev(1.0, "write", round=1, agent="a0", file="g.py", version=6, base_version=2),
              ev(1.0, "write", round=1, agent="a0", file="h.py", version=2, base_version=4),
              end(1.0)]
    m = run_metrics(events)
    assert m.lost_updates == 1 + 3 + 0  # 3 over 1 loses v2; 6 over 2 loses v3..v5; never < 0
    assert m.conflicts_total == 4


def test_conflict_kinds_and_total() -> None:
    events = [
        start(), ev(0.0, "round_start", round=1),
        ev(1.0, "claim_blocked", round=1, agent="a0", task="t2", target="t1"),
        ev(1.0, "claim_blocked", round=1, agent="a0", task="t3", target="t2"),
        ev(1.0, "claim_held", round=1, agent="a0", task="t1", target="a1"),
        ev(1.0, "write_rejected", round=1, agent="a0", file="f.py", reason="stale"),
        ev(1.0, "write_rejected", round=1, agent="a0", file="f.py", reason="fenced"),
        ev(1.0, "write_rejected", round=1, agent="a0", file="f.py", reason="policy"),
        ev(1.0, "complete_refused", round=1, agent="a0", task="t1", reason="fenced"),
        ev(1.0, "complete_refused", round=1, agent="a0", task="t1", reason="not-owner"),
        ev(1.0, "message", round=1, agent="a0", target=None),
        ev(1.0, "board_fault", reason="leader r0 SIGKILLed"),
        ev(1.0, "board_error", agent="a0", reason="Unavailable"),
        ev(1.0, "board_error", agent="a0", reason="Unavailable"),
        # claims gone and leases expired are counted, but are no conflicts
        ev(1.0, "claim_lost", round=1, agent="a1", task="t4"),
        ev(1.0, "claim_lost", round=1, agent="a1", task="t5"),
        ev(1.0, "expired", agent="a2", data={"tasks": ["t6", "t7"]}),
        ev(1.0, "board_heal", reason="r0 restarted"),
        ev(1.0, "board_fault", reason="leader r1 partitioned away"),
        ev(1.0, "board_heal", reason="r1 healed"),
        ev(1.0, "board_fault", reason="leader r2 SIGKILLed"),  # not healed before the end
        end(1.0, success=False, tasks_done=0, lost=2),
    ]
    m = run_metrics(events)
    assert (m.claims_blocked, m.claims_contended) == (2, 1)
    assert (m.claims_lost, m.claims_expired) == (2, 1)
    assert (m.stale_rejected, m.fenced_rejected) == (1, 2)
    assert m.conflicts_total == 2 + 1 + 1 + 2
    assert m.chat_messages == 1 and m.messages == 0
    assert (m.board_faults, m.board_heals, m.board_errors, m.lost_work) == (3, 2, 2, 2)
    assert m.success is False and m.tasks_done == 0


def test_straggler_gap_by_hand() -> None:
    events = [start(agents=3), ev(0.0, "round_start", round=1)]
    events += [ev(x, "reply", round=1, agent=f"a{i}", latency_s=x)
               for i, x in enumerate((1.0, 2.0, 6.0))]  # 6 - 3 = 3
    events += [ev(10.0, "round_start", round=2)]
    events += [ev(10.0 + x, "reply", round=2, agent=f"a{i}", latency_s=x)
               for i, x in enumerate((2.0, 4.0, 200.0))]  # 200 s left out: 4 - 3 = 1
    events += [ev(300.0, "round_start", round=3),
               ev(305.0, "reply", round=3, agent="a0", latency_s=5.0),
               ev(305.0, "reply", round=3, agent="a1", latency_s=-1.0),  # out of range
               end(305.0)]
    m = run_metrics(events)
    assert m.straggler_gap_s == 2.0  # mean of 3 and 1; round 3 has one usable reply


def test_recovery_time_by_hand() -> None:
    events = [
        start(agents=3), ev(0.0, "round_start", round=1),
        ev(10.0, "stall", agent="a1", data={"tasks": ["t2", "t3"], "stall_s": 20.0}),
        ev(12.0, "stall", agent="a0", data={"tasks": []}),  # held nothing: not a fault
        ev(25.0, "complete", agent="a0", task="t2"),
        ev(30.0, "resume", agent="a1"),
        ev(40.0, "complete", agent="a1", task="t3"),
        ev(50.0, "crash", agent="a2", data={"tasks": ["t4"]}),
        ev(56.0, "complete", agent="a0", task="t4"),
        ev(60.0, "complete", agent="a1", task="t3"),  # a later duplicate: the first one counts
        end(60.0),
    ]
    m = run_metrics(events)
    assert m.agent_faults == 2 and m.unrecovered == 0
    assert m.recovery_s == 18.0  # (25..40 -> 30 s, 56 - 50 = 6 s) / 2
    assert m.recovered_by_other is True
    assert m.recovered_by_self is False  # t3 was a1's own, but t2 and t4 were not


def test_recovery_counts_only_the_tasks_the_agent_had_claimed() -> None:
    events = [
        start(agents=2),
        # a1 worked on t1; t2 and t3 were only assigned to it
        ev(10.0, "stall", agent="a1", data={"tasks": ["t1"], "assigned": ["t2", "t3"]}),
        ev(12.0, "stall", agent="a0", data={"tasks": [], "assigned": ["t4"]}),  # no fault
        ev(15.0, "resume", agent="a1"),
        ev(16.0, "complete", agent="a1", task="t1"),
        end(20.0),  # t2, t3, t4 never done: they do not make the fault unrecovered
    ]
    m = run_metrics(events)
    assert m.agent_faults == 1 and m.unrecovered == 0
    assert m.recovery_s == 6.0
    assert m.recovered_by_other is False and m.recovered_by_self is True


def test_recovery_by_the_faulty_agent_itself_and_unrecovered_faults() -> None:
    own = run_metrics([start(), ev(5.0, "stall", agent="a1", data={"tasks": ["t2"]}),
                       ev(9.0, "resume", agent="a1"), ev(12.0, "complete", agent="a1", task="t2"),
                       end(12.0)])
    assert own.recovery_s == 7.0 and own.recovered_by_other is False and own.unrecovered == 0
    assert own.recovered_by_self is True
    lost = run_metrics([start(), ev(5.0, "stall", agent="a1", data={"tasks": ["t2"]}),
                        ev(8.0, "complete", agent="a0", task="t2"),
                        ev(20.0, "crash", agent="a0", data={"tasks": ["t9"]}),
                        ev(3.0, "complete", agent="a0", task="t9"),  # before the crash: no
                        end(30.0, success=False)])
    assert lost.agent_faults == 2 and lost.unrecovered == 1
    assert lost.recovery_s is None  # not all faults recovered
    assert lost.recovered_by_other is True and lost.recovered_by_self is False
    never = run_metrics([start(), ev(5.0, "crash", agent="a1", data={"tasks": ["t2"]}),
                         end(30.0, success=False)])
    assert never.agent_faults == 1 and never.unrecovered == 1
    assert never.recovered_by_other is False  # nobody else finished it...
    assert never.recovered_by_self is None  # ...and nothing was recovered to attribute


def test_killed_run_without_run_end() -> None:
    events = chain_one_agent()[:-1]
    m = run_metrics(events)
    assert m.ended is False and m.success is False
    assert m.tasks_done == 3 and m.makespan_s == 10.0 and m.wall_s == 0.0


def test_sync_inferred_without_spec() -> None:
    events = [ev(0.0, "run_start", data={}), ev(1.0, "reply", agent="a0", latency_s=1.0),
              end(1.0)]
    assert run_metrics(events).sync == "async"


def test_amdahl_and_karp_flatt_numbers() -> None:
    assert amdahl(0.5, 2) == pytest.approx(4 / 3, abs=1e-15)
    assert amdahl(0.0, 5) == 1.0
    assert amdahl(1.0, 4) == 4.0
    assert amdahl(0.9, 1) == 1.0
    assert amdahl(0.9, 5) == pytest.approx(1 / 0.28, abs=1e-12)
    with pytest.raises(ValueError):
        amdahl(1.5, 2)
    with pytest.raises(ValueError):
        amdahl(0.5, 0)
    assert karp_flatt(2.0, 4) == pytest.approx(1 / 3, abs=1e-15)  # (0.5 - 0.25) / 0.75
    assert karp_flatt(4.0, 4) == 0.0
    assert karp_flatt(1.0, 4) == pytest.approx(1.0, abs=1e-15)
    assert karp_flatt(2.0, 1) is None
    assert karp_flatt(0.0, 3) is None
    assert karp_flatt(-1.0, 3) is None
    # Karp-Flatt of Amdahl's own prediction is the serial fraction
    assert karp_flatt(amdahl(0.7, 5), 5) == pytest.approx(0.3, abs=1e-12)


@pytest.mark.parametrize("f", [0.0, 0.05, 0.3, 0.5, 0.81, 1.0])
def test_fit_serial_fraction_recovers_f_from_exact_amdahl_data(f: float) -> None:
    points = [(n, 1.0 / (f + (1.0 - f) / n)) for n in range(1, 6)]
    fitted = fit_serial_fraction(points)
    assert fitted is not None
    assert abs(fitted - f) < 1e-6


def test_fit_serial_fraction_is_the_serial_not_the_parallel_fraction() -> None:
    points = [(n, amdahl(0.7, n)) for n in (2, 3, 4, 5)]  # p = 0.7, so f = 0.3
    fitted = fit_serial_fraction(points)
    assert fitted is not None
    assert abs(fitted - 0.3) < 1e-6
    assert abs(fitted - 0.7) > 0.1


def test_fit_serial_fraction_edges() -> None:
    assert fit_serial_fraction([]) is None
    assert fit_serial_fraction([(1, 1.0), (1, 0.9)]) is None  # n=1 says nothing about f
    assert fit_serial_fraction([(2, 3.0), (4, 9.0)]) == 0.0  # superlinear: clamped at 0
    assert fit_serial_fraction([(2, 0.5), (3, 0.4)]) == 1.0  # slowdown: clamped at 1
    # least squares over noisy points: between the two exact answers
    noisy = fit_serial_fraction([(2, amdahl(0.6, 2)), (2, amdahl(0.8, 2))])
    assert noisy is not None and 0.2 < noisy < 0.4


def test_cells_without_a_successful_single_agent_run_have_no_speedup() -> None:
    three = run_metrics(parallel_run(3))
    failed_one = run_metrics(parallel_run(1)).model_copy(update={"success": False})
    rows = cell_rows([record(3, three), record(1, failed_one)])
    r3 = next(r for r in rows if r.agents == 3)
    assert r3.speedup is None and r3.gap is None and r3.karp_flatt is None
    assert r3.efficiency is None
    assert "no successful n=1 run" in r3.note
    assert r3.amdahl == pytest.approx(1.8, abs=1e-12)
    assert r3.token_multiplier == 2.0  # tokens baseline uses every n=1 run
    only_multi = cell_rows([record(3, three)])
    assert only_multi[0].speedup is None and only_multi[0].token_multiplier is None
    assert cell_rows([]) == []


def test_per_run_speedups_and_cell_means() -> None:
    one = run_metrics(parallel_run(1))
    ok = RunMetrics(success=True, makespan_s=4.0)
    slow = RunMetrics(success=True, makespan_s=6.0)
    failed = RunMetrics(success=False, makespan_s=60.0)
    recs = [record(1, one), record(3, ok, rep=0), record(3, slow, rep=1),
            record(3, failed, rep=2)]
    speedups = [s for _, s in per_run_speedups(recs)]
    assert speedups == [None, 3.0, 2.0, None]  # the n=1 run: no other n=1 run to compare
    r3 = next(r for r in cell_rows(recs) if r.agents == 3)
    assert r3.runs == 3 and r3.successes == 2
    assert r3.success_rate == pytest.approx(2 / 3, abs=1e-15)
    assert r3.speedup == 2.5 and r3.makespan_s == 5.0  # successful runs only
    assert r3.speedup_sd == pytest.approx(0.5 ** 0.5, abs=1e-12)
    assert r3.makespan_sd == pytest.approx(2 ** 0.5, abs=1e-12)


def test_cells_are_separated_by_mode_and_p() -> None:
    one = RunMetrics(success=True, makespan_s=10.0)
    two = RunMetrics(success=True, makespan_s=5.0)
    other_one = RunMetrics(success=True, makespan_s=20.0)
    a = [record(1, one, p=0.5), record(2, two, p=0.5)]
    b = [record(1, other_one, p=0.9), record(2, two, p=0.9)]
    rows = cell_rows([*a, *b])
    assert [(r.p, r.agents, r.speedup) for r in rows] == [
        (0.5, 1, None), (0.5, 2, 2.0), (0.9, 1, None), (0.9, 2, 4.0)]


def test_mean_and_sd_helpers_skip_none_and_need_two_values_for_a_spread() -> None:
    assert mean_or_none([1, None, 2]) == 1.5
    assert mean_or_none([]) is None and mean_or_none([None]) is None
    assert sd_or_none([3.0]) is None  # one value has no spread (not a spread of 0)
    assert sd_or_none([1.0, None, 3.0]) == pytest.approx(2 ** 0.5, abs=1e-15)
    assert sd_or_none([2, 2]) == 0.0
    assert sd_or_none(iter([1.0, 3.0])) == pytest.approx(2 ** 0.5, abs=1e-15)


def test_cell_rows_share_of_recovery_by_other_and_by_self_and_new_counts() -> None:
    runs = [
        RunMetrics(success=True, makespan_s=5.0, agent_faults=1, recovered_by_other=True,
                   recovered_by_self=False, claims_lost=3, claims_expired=1, board_heals=2),
        RunMetrics(success=True, makespan_s=5.0, agent_faults=1, recovered_by_other=False,
                   recovered_by_self=True, claims_lost=1),
        RunMetrics(success=False, makespan_s=9.0, agent_faults=1, unrecovered=1,
                   recovered_by_other=False),  # faulted, nothing recovered
        RunMetrics(success=True, makespan_s=5.0),  # no fault
    ]
    rows = cell_rows([record(2, m, rep=i) for i, m in enumerate(runs)])
    assert len(rows) == 1
    r = rows[0]
    assert r.recovered_by_other == pytest.approx(1 / 3, abs=1e-15)  # of the 3 faulted runs
    assert r.recovered_by_self == 0.5  # of the 2 runs with a recovered fault
    assert (r.agent_faults, r.unrecovered) == (3, 1)
    assert (r.claims_lost, r.claims_expired, r.board_heals) == (1.0, 0.25, 0.5)
    assert r.makespan_sd == 0.0  # three successful runs of 5 s
    none = cell_rows([record(2, RunMetrics(success=True, makespan_s=5.0))])[0]
    assert none.recovered_by_other is None and none.recovered_by_self is None
    assert none.makespan_sd is None  # one run: no spread
