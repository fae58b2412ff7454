"""Smoke tests of the benchmarks: tiny parameters, well-formed output. Never asserts timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import percentile
from bench.throughput import (
    QB,
    RAW_UNBATCHED,
    Config,
    Row,
    _paired_ratios,
    _split,
    _targets,
    processes_for,
    summary,
)

ROOT = Path(__file__).resolve().parent.parent
SYSTEMS = ("quorumboard", "raw-unbatched", "raw-batched")


def test_helpers() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([5], 99) == 5.0
    assert percentile(list(range(1, 101)), 50) == 50.0
    assert percentile(list(range(1, 101)), 99) == 99.0
    assert [processes_for(a, "auto") for a in (1, 8, 64)] == [1, 2, 4]
    assert processes_for(3, "8") == 3
    assert _split(8, 3) == [3, 3, 2]
    assert _split(2, 4) == [1, 1]


def test_repeats_are_paired_and_judged_on_medians(tmp_path: Path) -> None:
    """Ratios pair the two systems' runs of the same repeat; targets use the median."""
    cfg = Config(agents=[64], duration_s=1, warmup_s=0, processes="auto", replicas=3,
                 value_bytes=100, puts_max=10, skip_raw=False, raw_batched=False,
                 out=tmp_path / "x.json", repeats=3)
    rows = [Row(system=QB, agents=64, processes=4, repeat=1, puts_per_s=3000.0),
            Row(system=RAW_UNBATCHED, agents=64, processes=3, repeat=1, puts_per_s=2000.0),
            Row(system=QB, agents=64, processes=4, repeat=2, puts_per_s=1000.0),
            Row(system=RAW_UNBATCHED, agents=64, processes=3, repeat=2, puts_per_s=2000.0),
            Row(system=QB, agents=64, processes=4, repeat=3, puts_per_s=2600.0),
            Row(system=RAW_UNBATCHED, agents=64, processes=3, repeat=3, puts_per_s=0.0,
                failed="boom")]
    assert _paired_ratios(rows, 64, RAW_UNBATCHED) == [1.5, 0.5]  # repeat 3 has no pair
    med = {(m["system"], m["agents"]): m for m in summary(cfg, rows)}
    assert med[(QB, 64)]["puts_per_s_median"] == 2600.0 and med[(QB, 64)]["runs"] == 3
    assert med[(RAW_UNBATCHED, 64)]["runs"] == 2  # the failed run is not a measurement
    status = {t["target"]: t["status"] for t in _targets(cfg, rows)}
    assert status[">= 2,500 committed puts/s with 64 agents"] == "PASS"  # median 2,600
    assert status[">= 0.8x raw pysyncobj unbatched puts/s at 64 agents"] == "PASS"  # median 1.0
    assert status["lone agent commit p50 <= 2 ms"] == "n/a"
    rows[4].puts_per_s = 2400.0
    status = {t["target"]: t["status"] for t in _targets(cfg, rows)}
    assert status[">= 2,500 committed puts/s with 64 agents"] == "MISS"  # median 2,400


@pytest.mark.timeout(120)
def test_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--agents", "1,3", "--processes", "2",
         "--duration-s", "1", "--warmup-s", "0.3", "--repeats", "1", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=110, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    assert "system" in proc.stdout and "puts/s" in proc.stdout and "p99 ms" in proc.stdout
    assert "quorumboard/raw-unbatched puts/s at 3 agents:" in proc.stdout

    data = json.loads(out.read_text())
    rows = {(r["system"], r["agents"]): r for r in data["rows"]}
    assert set(rows) == {(s, a) for s in SYSTEMS for a in (1, 3)}
    for (system, agents), r in rows.items():
        assert r["failed"] == "", (system, agents, r["failed"])
        assert r["committed"] > 0 and r["puts_per_s"] > 0, r
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], r
        assert r["window_s"] > 0
    assert rows[("quorumboard", 3)]["processes"] == 2

    ratios = {(x["baseline"], x["agents"]): x["puts_per_s_ratio"] for x in data["ratios"]}
    assert set(ratios) == {(b, a) for b in SYSTEMS[1:] for a in (1, 3)}
    assert all(v > 0 for v in ratios.values())
    assert {t["status"] for t in data["targets"]} <= {"PASS", "MISS", "n/a"}
    assert any("64 agents" in t["target"] and t["status"] == "n/a" for t in data["targets"])


def test_lone_bench_pairs_each_one_member_run_with_the_three_replica_run() -> None:
    """bench.lone: a ratio divides by the replicas=3 run of the same op and repeat only."""
    from bench.lone import ONE_EMBEDDED, ONE_PROCESS, THREE, paired_ratios

    def row(layout: str, op: str, repeat: int, ops_s: float, failed: str = "") -> Row:
        return Row(system=f"{layout} {op}", agents=1, processes=1, repeat=repeat,
                   puts_per_s=ops_s, failed=failed)

    rows = [row(THREE, "put", 1, 1000.0), row(ONE_EMBEDDED, "put", 1, 3000.0),
            row(THREE, "get", 1, 500.0), row(ONE_EMBEDDED, "get", 1, 4000.0),
            row(THREE, "put", 2, 0.0, failed="boom"), row(ONE_EMBEDDED, "put", 2, 9000.0),
            row(ONE_PROCESS, "put", 1, 2000.0)]
    assert paired_ratios(rows, ONE_EMBEDDED, "put") == [3.0]  # repeat 2 has no valid pair
    assert paired_ratios(rows, ONE_EMBEDDED, "get") == [8.0]
    assert paired_ratios(rows, ONE_PROCESS, "put") == [2.0]
    assert paired_ratios(rows, ONE_PROCESS, "get") == []


@pytest.mark.timeout(60)
def test_lone_bench_embedded_run_reads(tmp_path: Path) -> None:
    """The embedded layout's worker starts its own one-member cluster and does linearizable
    gets through it (one real run with tiny parameters; nothing timed is asserted)."""
    from bench.lone import ONE_EMBEDDED, parse_args, run_one

    cfg = parse_args(["--duration-s", "0.3", "--warmup-s", "0", "--repeats", "1",
                      "--out", str(tmp_path / "lone.json")])
    r = run_one(cfg, ONE_EMBEDDED, "get", tmp_path)
    assert r.failed == "" and r.errors == 0, r
    assert r.committed > 0 and 0 < r.p50_ms <= r.p99_ms, r


def test_peers_plan_interleaves_and_ratios_pair_adjacent_runs() -> None:
    """bench.peers: each etcd run sits between the two quorumboard runs it is compared with,
    and a ratio divides runs of the same repeat, client count and op only."""
    from bench.peers import ETCD, ETCD_GRPC, QB, PeerRow, paired_ratios, parse_args, plan

    cfg = parse_args(["--clients", "1,8", "--ops", "put,get", "--fsync", "off,on",
                      "--repeats", "2"])
    order = list(plan(cfg, [ETCD, ETCD_GRPC]))
    assert order[:4] == [(1, 1, "put", QB, False), (1, 1, "put", ETCD, True),
                         (1, 1, "put", ETCD_GRPC, True), (1, 1, "put", QB, True)]
    assert len(order) == 2 * 2 * 2 * 4 and order[-1] == (2, 8, "get", QB, True)
    assert all(s == QB for *_, s, _f in plan(cfg, []))

    def row(system: str, repeat: int, ops_s: float, fsync: bool = True, op: str = "put",
            failed: str = "") -> PeerRow:
        return PeerRow(system=system, agents=8, processes=3, repeat=repeat, op=op, fsync=fsync,
                       puts_per_s=ops_s, failed=failed)

    rows = [row(QB, 1, 900.0, fsync=False), row(ETCD, 1, 300.0), row(QB, 1, 600.0),
            row(QB, 2, 800.0, fsync=False), row(ETCD, 2, 0.0, failed="boom"),
            row(ETCD_GRPC, 1, 1200.0), row(ETCD, 1, 50.0, op="get")]
    assert paired_ratios(rows, 8, "put", False) == [3.0]  # repeat 2's etcd run failed
    assert paired_ratios(rows, 8, "put", True) == [2.0]
    assert paired_ratios(rows, 8, "put", True, ETCD_GRPC) == [0.5]
    assert paired_ratios(rows, 8, "get", True) == []
    assert paired_ratios(rows, 1, "put", True) == []


@pytest.mark.timeout(150)
def test_peers_bench_runs_and_reports(tmp_path: Path) -> None:
    """One real invocation at tiny scale: quorumboard rows always; etcd rows when etcd is
    installed (never installed by a test), else the skip message. Nothing timed is asserted."""
    import shutil

    from bench.peers import ETCD, ETCD_GRPC, grpc_client_missing

    out = tmp_path / "peers.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.peers", "--clients", "1", "--ops", "cas",
         "--fsync", "off,on", "--duration-s", "1", "--warmup-s", "0", "--no-install",
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=140, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    assert data["benchmark"] == "bench.peers"
    assert data["workload"]["keys"] == 100 and data["workload"]["value_bytes"] == 256

    etcd = shutil.which("etcd") is not None
    grpc = etcd and grpc_client_missing() == ""
    expected = {("quorumboard", False), ("quorumboard", True)}
    if etcd:
        expected.add((ETCD, True))
        assert data["etcd_skipped"] == ""
    else:
        assert "etcd is not installed" in data["etcd_skipped"]
        assert "etcd rows skipped: etcd is not installed" in proc.stdout
    if grpc:
        expected.add((ETCD_GRPC, True))
    elif etcd:
        assert "etcd gRPC rows skipped" in proc.stdout and data["grpc_skipped"]
    rows = {(r["system"], r["fsync"]): r for r in data["rows"]}
    assert set(rows) == expected and len(data["rows"]) == len(expected)
    for r in data["rows"]:
        assert r["failed"] == "" and r["errors"] == 0, r
        assert r["op"] == "cas" and r["clients"] == 1 and r["repeat"] == 1
        assert r["completed"] > 0 and r["window_s"] > 0, r
        assert abs(r["ops_per_s"] - r["completed"] / r["window_s"]) < 1e-6, r
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"], r

    ratios = {(x["baseline"], x["fsync"]): x for x in data["ratios"]}
    bases = [b for b, on in ((ETCD, etcd), (ETCD_GRPC, grpc)) if on]
    assert set(ratios) == {(b, f) for b in bases for f in (False, True)}
    for (base, fsync), x in ratios.items():
        want = rows[("quorumboard", fsync)]["ops_per_s"] / rows[(base, True)]["ops_per_s"]
        assert x["paired"] == [round(want, 4)] and x["ratio"] == round(want, 4), x
        assert f"quorumboard (fsync {'on' if fsync else 'off':<3}) / {base:<9} cas" \
            in proc.stdout


def test_checker_bench_times_a_recorded_history(tmp_path: Path) -> None:
    """bench.checker --history reads a history file as a chaos run wrote it, converts it with
    the workload's own conversion, decides it, and catches the planted stale read."""
    from bench.checker import check_recorded, main, simulate
    from quorumboard.consensus.testing import HistoryWriter

    history, _order = simulate(400, 4, 3, seed=5)
    events = sorted([(op.call, 0, op) for op in history] + [(op.ret, 1, op) for op in history],
                    key=lambda e: (e[0], e[1]))
    with HistoryWriter(tmp_path / "run" / "history.jsonl") as writer:
        for t, done, op in events:
            f = op.input[0]
            if done:
                writer.write(op.client, "ok", f, op.key, list(op.output), round(t * 1e9))
            else:
                writer.write(op.client, "invoke", f, op.key,
                             None if f == "read" else list(op.input[1:]), round(t * 1e9))
    fig = check_recorded(tmp_path / "run", time_limit_s=60)
    assert (fig["workload"], fig["operations"], fig["keys"]) == ("cas-register", 400, 3)
    assert fig["check"]["verdict"] == "ok"
    assert fig["planted_stale_read"]["verdict"] == "violation"
    assert sum(k["operations"] for k in fig["check"]["keys"]) == 400
    assert (fig["reference"]["check"]["verdict"],
            fig["reference"]["planted_stale_read"]["verdict"]) == ("ok", "violation")
    out = tmp_path / "checker.json"
    assert main(["--history", str(tmp_path / "run"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["check"]["verdict"] == "ok"
    assert main(["--history", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    # A simulated history with stalls and lost writes (the campaign's shape, small).
    assert main(["--ops", "3000", "--think-s", "0.01", "--stall-every-s", "1", "--stall-s",
                 "0.5", "--lost-share", "0.05", "--out", str(out)]) == 0
    fig = json.loads(out.read_text())
    assert fig["lost_writes"] > 0 and fig["indeterminate"] >= fig["lost_writes"]
    assert fig["reference"]["check"]["verdict"] == fig["check"]["verdict"] == "ok"


def test_thousand_delivery_names_what_a_watcher_got_wrong() -> None:
    """bench.thousand: each written revision delivered once, in order; every departure counted
    (a watcher that missed one, saw one twice, saw two swapped, or saw one never written)."""
    from bench.thousand import delivery

    written = [3, 5, 8, 9]
    assert delivery(written, [3, 5, 8, 9]) == {
        "delivered": 4, "missing": 0, "duplicated": 0, "out_of_order": 0, "foreign": 0}
    assert delivery(written, [3, 8, 9]) == {
        "delivered": 3, "missing": 1, "duplicated": 0, "out_of_order": 0, "foreign": 0}
    assert delivery(written, [3, 5, 5, 8, 9])["duplicated"] == 1
    assert delivery(written, [3, 8, 5, 9])["out_of_order"] == 1
    assert delivery(written, [3, 4, 5, 8, 9])["foreign"] == 1


def test_apply_bench_measures_every_step() -> None:
    """bench.apply: the apply path and the codec steps, each a positive CPU figure per call."""
    from bench.apply import measure

    figures = measure(entries=20, repeats=2)
    assert "apply put" in figures and len(figures) == 9
    assert all(0 < best <= median for best, median in figures.values()), figures
