"""Smoke test of bench.throughput: tiny parameters, well-formed output. Never asserts timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import percentile
from bench.throughput import _split, processes_for

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


@pytest.mark.timeout(120)
def test_bench_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--agents", "1,3", "--processes", "2",
         "--duration-s", "1", "--warmup-s", "0.3", "--out", str(out)],
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
