"""The sweep report from a hand-built ``results.jsonl``: files, valid PNGs, computed figures,
determinism, and partial or degenerate sweeps (which must report, not crash)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from scipy import stats as sps

from quorumboard.agents.study.metrics import RunMetrics, RunRecord, amdahl
from quorumboard.agents.study.report import PLOTS, read_records, write_report
from quorumboard.agents.study.stats import kruskal_across_p, spearman_vs_n, wilcoxon_vs_amdahl
from quorumboard.agents.team.spec import AgentFault, BoardFault, RunSpec
from quorumboard.consensus import CorruptData

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# (mode, p) -> makespan for n = 1, 2, 3
MAKESPANS = {
    ("preassign", 0.5): (120.0, 80.0, 60.0),      # speedups 1.5, 2.0
    ("preassign", 0.9): (100.0, 50.0, 42.0),      # 2.0, 2.381
    ("decentralized", 0.5): (120.0, 100.0, 90.0),  # 1.2, 1.333
    ("decentralized", 0.9): (100.0, 60.0, 50.0),  # 1.667, 2.0
}


def rec(mode: str, p: float, n: int, makespan: float, *, experiment: str = "sweep",
        success: bool = True, tokens: int | None = None, rep: int = 0,
        faults: tuple[AgentFault, ...] = (), board: BoardFault | None = None,
        **metrics: object) -> RunRecord:
    spec = RunSpec(experiment=experiment, suite="math", level=f"p0{int(p * 10)}", p=p,
                   mode=mode, agents=n, rep=rep, faults=faults, board_fault=board)
    rounds = int(makespan // 10)
    m = RunMetrics(success=success, tasks_done=20, makespan_s=makespan, rounds=rounds,
                   messages=n * rounds, idle_rounds=rounds // 4,
                   conflicts_total=3 * (n - 1), claims_blocked=2 * (n - 1), rewrites=n - 1,
                   concurrent_writes=0,
                   tokens=tokens if tokens is not None else 1000 * n + 200 * (n - 1),
                   **metrics)
    return RunRecord(spec=spec, metrics=m, out=spec.run_id)


def sweep_records() -> list[RunRecord]:
    out = [rec(mode, p, n, spans[n - 1])
           for (mode, p), spans in MAKESPANS.items() for n in (1, 2, 3)]
    stall = (AgentFault(agent=0, stall_at_s=10.0, stall_s=30.0),)
    out.append(rec("decentralized", 0.5, 3, 95.0, experiment="stall"))
    out.append(rec("decentralized", 0.5, 3, 100.0, experiment="stall", faults=stall,
                   agent_faults=1, recovery_s=25.0, recovered_by_other=True,
                   recovered_by_self=False))
    out.append(rec("preassign", 0.5, 3, 130.0, experiment="stall", faults=stall,
                   agent_faults=1, recovery_s=70.0, recovered_by_other=False,
                   recovered_by_self=True))
    out.append(rec("preassign", 0.5, 3, 200.0, experiment="board-fault", board=BoardFault(),
                   success=False, board_faults=2, board_heals=2, board_errors=3, lost_work=2,
                   board_s=6.0, board_wait_max_s=4.5))
    return out


def write_results(folder: Path, records: list[RunRecord], tail: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(r.model_dump_json() + "\n" for r in records) + tail
    (folder / "results.jsonl").write_text(text, encoding="utf-8")
    return folder


def test_full_report_files_and_figures(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "sw", sweep_records(), tail='{"spec": {"suite"')
    report = write_report(folder)
    assert report == folder / "report.md"
    for name in ("summary.csv", "summary.md", "report.md", *(n for n, _ in PLOTS)):
        assert (folder / name).is_file(), name
    for name, _ in PLOTS:
        data = (folder / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name
        assert b"Software" not in data and b"matplotlib" not in data.lower(), name
    text = report.read_text(encoding="utf-8")
    assert ("At p=0.50 (preassign), teams of 3 reach speedup 2.00 (mean of per-run "
            "speedups; ratio of mean makespans 2.00) vs Amdahl 1.50 (133% of it) and the "
            "DAG bound 2.00 (1 run).") in text
    assert ("At p=0.90 (decentralized), teams of 3 reach speedup 2.00 (mean of per-run "
            "speedups; ratio of mean makespans 2.00) vs Amdahl 2.50 (80% of it) and the "
            "DAG bound 3.00 (1 run).") in text
    assert ("At p=0.50 (decentralized), teams of 3 reach speedup 1.33 (mean of per-run "
            "speedups; ratio of mean makespans 1.33) vs Amdahl 1.50 (89% of it)") in text
    assert "16 of 16 runs succeeded" not in text and "12 of 12 runs succeeded (100%)." in text
    # recovery by mode, from the stall experiment
    assert ("decentralized: 25.0 s (1 run with a fault, 0 unrecovered; finished by another "
            "agent in 1, by the faulty agent itself in 0)") in text
    assert ("preassign: 70.0 s (1 run with a fault, 0 unrecovered; finished by another agent "
            "in 0, by the faulty agent itself in 1)") in text
    # the recovery table: over claimed tasks, by another agent vs by the faulty agent itself
    assert "measured over the tasks each agent was working on (had claimed)" in text
    assert "| recovery s | unrecovered | by another agent | by itself |" in text
    assert "| 1 | 25.0 | 0 | 100% | 0% |" in text
    assert "| 1 | 70.0 | 0 | 0% | 100% |" in text
    # board faults and heals are separate columns
    # ... and the board's cost: wall time and the longest board wait of the runs
    assert ("| board faults | board heals | board errors | lost work | makespan s | wall_s "
            "| longest board wait s | board time s |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
            "| 0.50 | preassign | last-writer-wins | rounds | board@3+3 | 3 | 1 | 0% | 2.0 | 2.0 "
            "| 3.0 | 2.0 | — | — | 4.500 | 6.00 |") in text
    # inflation vs the fault-free run of the same cell: the stall experiment's own clean arm
    # (100 / 95) before the sweep's (100 / 90); the sweep's where the arm is missing (130 / 60)
    assert "| `stall` | 95.0 | 1.05x |" in text
    assert "| `sweep` | 60.0 | 2.17x |" in text
    assert "Under blackboard faults 0 of 1 runs succeeded; mean lost work 2.00 per run." in text
    for label in ("sweep", "stall", "board-fault"):
        assert f"### Experiment `{label}`" in text
    assert text.index("### Experiment `sweep`") < text.index("### Experiment `board-fault`")
    for name, title in PLOTS:
        assert f"![{title}]({name})" in text
    assert "## What each metric means" in text and "**karp_flatt**" in text
    assert "- **idle_replies**: replies with no effective action" in text
    assert "- **concurrent_writes**: (round, file) pairs that >= 2 distinct agents tried to " \
        "write in one round, committed or refused alike" in text
    for name in ("claims_lost", "claims_expired", "board_heals", "recovered_by_self"):
        assert f"- **{name}**: " in text
    # the Wilcoxon over all 8 sweep runs with n > 1, as SciPy computes it
    pairs = [(MAKESPANS[(m, p)][0] / MAKESPANS[(m, p)][n - 1], amdahl(p, n))
             for (m, p) in MAKESPANS for n in (2, 3)]
    expected = sps.wilcoxon([s - a for s, a in pairs])
    assert (f"| wilcoxon | speedup - amdahl | all | 8 | {expected.statistic:.3f} | "
            f"{expected.pvalue:.3g} |") in text


def test_summary_csv_holds_the_cell_aggregates(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "sw", sweep_records())
    write_report(folder)
    with (folder / "summary.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 + 3 + 1  # 2 modes x 2 p x 3 n; stall: clean + 2 faulted; board
    row = next(r for r in rows if r["experiment"] == "sweep" and r["mode"] == "preassign"
               and r["p"] == "0.5" and r["agents"] == "3")
    assert float(row["speedup"]) == 2.0
    assert float(row["amdahl"]) == pytest.approx(1.5, abs=1e-12)
    assert float(row["token_multiplier"]) == pytest.approx(3400 / 1000, abs=1e-12)
    assert row["karp_flatt"] == str((1 / 2.0 - 1 / 3) / (1 - 1 / 3))
    stall = next(r for r in rows if r["experiment"] == "stall" and r["mode"] == "preassign")
    assert stall["speedup"] == "" and "no successful n=1 run" in stall["note"]
    assert (stall["recovered_by_other"], stall["recovered_by_self"]) == ("0.0", "1.0")
    board = next(r for r in rows if r["experiment"] == "board-fault")
    assert (board["board_faults"], board["board_heals"]) == ("2.0", "2.0")
    clean = next(r for r in rows if r["experiment"] == "sweep")
    assert (clean["recovered_by_other"], clean["recovered_by_self"]) == ("", "")
    md = (folder / "summary.md").read_text(encoding="utf-8")
    assert md.startswith("# Cell summary") and md.count("\n| math/p05 |") == 6 + 3 + 1


def test_report_is_deterministic(tmp_path: Path) -> None:
    a = write_results(tmp_path / "a" / "sweep", sweep_records())
    b = write_results(tmp_path / "b" / "sweep", sweep_records())
    write_report(a)
    write_report(b)
    for name in ("summary.csv", "summary.md", "report.md", *(n for n, _ in PLOTS)):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_one_record_only(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "one", [rec("preassign", 0.5, 1, 100.0)])
    text = write_report(folder).read_text(encoding="utf-8")
    assert "1 of 1 runs succeeded (100%)." in text
    # One n=1 run has no other n=1 run to be measured against (leave-one-out).
    assert "No speedup figures" in text
    assert "too few runs" in text
    assert "No runs with n > 1" in text
    assert "No data: no run had a stalled or crashed agent" in text
    for name, _ in PLOTS:
        assert (folder / name).read_bytes().startswith(PNG_SIGNATURE)


def test_no_single_agent_runs(tmp_path: Path) -> None:
    records = [rec("decentralized", 0.2, n, 100.0 / n, rep=0) for n in (2, 3)]
    folder = write_results(tmp_path / "nobase", records)
    text = write_report(folder).read_text(encoding="utf-8")
    assert "No speedup figures: no cell has a successful n=1 run" in text
    assert "No speedup data: no cell has a successful n=1 run." in text
    assert "no successful n=1 run in this cell: speedup undefined" in text
    assert (folder / "speedup_vs_n.png").read_bytes().startswith(PNG_SIGNATURE)


def test_empty_and_torn_results(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "empty", [], tail='{"spec": ')
    assert read_records(folder / "results.jsonl") == ([], 0)
    text = write_report(folder).read_text(encoding="utf-8")
    assert "No runs recorded" in text
    assert (folder / "summary.csv").read_text(encoding="utf-8").startswith("experiment,")


def test_corrupt_middle_line_and_duplicates(tmp_path: Path) -> None:
    r = rec("preassign", 0.5, 1, 100.0)
    bad = write_results(tmp_path / "bad", [], tail="garbage\n" + r.model_dump_json() + "\n")
    with pytest.raises(CorruptData, match=r"results\.jsonl: line 1"):
        read_records(bad / "results.jsonl")
    later = rec("preassign", 0.5, 1, 90.0)
    dup = write_results(tmp_path / "dup", [r, later])
    records, dropped = read_records(dup / "results.jsonl")
    assert dropped == 1 and [x.metrics.makespan_s for x in records] == [90.0]
    assert "1 duplicate records ignored" in write_report(dup).read_text(encoding="utf-8")


def test_stats_on_degenerate_input_give_notes_not_exceptions() -> None:
    for results in (wilcoxon_vs_amdahl([]), kruskal_across_p([]),
                    spearman_vs_n([], "speedup"), spearman_vs_n([], "tokens")):
        assert [s.group for s in results] == ["all"]
        assert results[0].statistic is None and results[0].p_value is None
        assert "too few runs" in results[0].note or "p levels" in results[0].note
    # speedup exactly equal to Amdahl's (p = 1, n = 2): every difference is zero
    exact = [rec("preassign", 1.0, 1, 100.0)]
    exact += [rec("preassign", 1.0, 2, 50.0, rep=i) for i in range(3)]
    w = wilcoxon_vs_amdahl(exact)
    assert w[0].n == 3 and w[0].statistic is None and w[0].note == "every difference is zero"
    assert w[0].effect == 0.0
    # equal speedups at two p levels
    equal = [rec("preassign", p, n, 100.0 / n, rep=i)
             for p in (0.5, 0.9) for n in (1, 2) for i in range(2)]
    k = kruskal_across_p(equal, "speedup", by="none")
    assert len(k) == 1 and k[0].note == "all values are equal" and k[0].n == 4
    k1 = kruskal_across_p([r for r in equal if r.spec.p == 0.5], "gap")
    assert k1[0].note == "needs >= 2 p levels (1)"
    # one team size only: Spearman against n is undefined
    one_n = [rec("preassign", 0.5, 2, 50.0 + i, rep=i) for i in range(4)]
    s = spearman_vs_n(one_n, "tokens")
    assert s[0].note == "team size is constant" and s[0].statistic is None
    const = [rec("preassign", 0.5, n, 50.0, tokens=500) for n in (1, 2, 3)]
    assert spearman_vs_n(const, "tokens", by="none")[0].note == "tokens is constant"


def test_stats_on_the_sweep_match_scipy() -> None:
    records = sweep_records()
    sweep = [r for r in records if r.spec.experiment == "sweep"]
    s = spearman_vs_n(sweep, "tokens", by="mode")
    assert [x.group for x in s] == ["all", "mode=decentralized", "mode=preassign"]
    expected = sps.spearmanr([r.spec.agents for r in sweep], [r.metrics.tokens for r in sweep])
    assert s[0].statistic == pytest.approx(float(expected.statistic), abs=1e-12)
    assert s[0].effect == s[0].statistic and s[0].n == 12
    w = wilcoxon_vs_amdahl(sweep, by="p")
    assert [x.group for x in w] == ["all", "p=0.50", "p=0.90"]
    assert [x.n for x in w] == [8, 4, 4]
    k = kruskal_across_p(sweep, "gap", by="mode")
    assert k[0].n == 8 and k[0].p_value is not None and 0.0 <= k[0].p_value <= 1.0
