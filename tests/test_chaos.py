"""``quorumboard chaos`` end to end: a short campaign with every nemesis kind checks as valid and
writes every artefact; the same campaign against replicas with a planted bug (linearizable reads
answered from local state) exits with the violation code and outlines the failing window; a
scenario file is read, and a bad one refused by name. Every replica process a run starts is gone
when it returns. A recorded run is checked again offline (``--recheck``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import replicas_running_under
from pngcheck import pixels_near, read_png

from quorumboard.consensus.errors import InvalidCommand
from quorumboard.consensus.testing.chaos import (
    EXIT_UNKNOWN,
    EXIT_VIOLATION,
    ChaosReport,
    Scenario,
    load_scenario,
)
from quorumboard.consensus.testing.history import FAULT_KINDS, HistoryWriter, read_faults
from quorumboard.consensus.testing.picture import COLORS, FAULT_COLORS

RUN_TIMEOUT_S = 240.0


def _chaos(out: Path, *args: str, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quorumboard.consensus.cli", "chaos", "--out", str(out), *args],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env or dict(os.environ))


CAMPAIGN = ["--replicas", "3", "--clients", "6", "--rate", "150", "--keys", "3",
            "--nemesis", ",".join(FAULT_KINDS), "--interval", "0.3", "--fault-duration", "1.0",
            "--check-time-limit", "60"]


def test_short_campaign_with_every_nemesis_kind_is_valid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # Seven kinds of ~1.3 s each plus heals (a restart takes a few seconds): 26 s leaves room.
    proc = _chaos(out, *CAMPAIGN, "--duration", "26", "--seed", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdict: valid" in proc.stdout
    assert not replicas_running_under(out), "every replica process was stopped"

    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["verdict"] == "valid" and verdict["converged"]
    assert len(set(verdict["digests"])) == 1 and verdict["operations"] > 100

    events = read_faults(out / "faults.jsonl")
    started = {e.kind for e in events if e.phase == "start" and not e.error}
    assert started == set(FAULT_KINDS), "every nemesis kind was injected"
    assert all(not e.error for e in events), [e for e in events if e.error]
    assert {e.index for e in events if e.phase == "start"} == \
        {e.index for e in events if e.phase == "end"}, "every fault was healed"

    corrupt = next(e for e in events if e.kind == "corrupt" and e.phase == "start")
    assert corrupt.detail["outcome"].startswith("refused to start"), corrupt.detail
    assert "checksum" in corrupt.detail["outcome"] or "orrupt" in corrupt.detail["outcome"]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["faults"]) == verdict["faults_injected"] >= len(FAULT_KINDS)
    assert summary["total"]["invoked"] == summary["total"]["ok"] + summary["total"]["fail"] \
        + summary["total"]["info"]
    width, height, pixels = read_png((out / "timeline.png").read_bytes())
    assert width == 1400 and 500 < height < 1400, (width, height)
    assert pixels_near(pixels, COLORS["ok"]) > 10_000, "the operations are drawn"
    for kind in FAULT_KINDS:
        assert pixels_near(pixels, FAULT_COLORS[kind], 3) > 500, f"a {kind} band is drawn"
    assert pixels_near(pixels, COLORS["mark"]) == 0, "no violation, no window outlined"
    page = (out / "timeline.html").read_text()
    assert "<svg" in page and "Verdict: valid" in page and "kill leader" in page
    assert f'stroke="{COLORS["mark"]}"' not in page
    assert (out / "cluster" / "r0" / "replica.log").exists()


def test_negative_control_planted_stale_reads_exit_with_the_violation_code(
        tmp_path: Path) -> None:
    """Isolating the leader while clients still reach it: with the planted bug it answers
    reads from its stale state, and the run must be judged invalid."""
    out = tmp_path / "run"
    proc = _chaos(out, "--replicas", "3", "--clients", "6", "--rate", "200", "--keys", "2",
                  "--nemesis", "partition", "--interval", "0.5", "--fault-duration", "3",
                  "--duration", "12", "--seed", "1", "--planted-bug", "stale-reads")
    assert proc.returncode == EXIT_VIOLATION, proc.stdout + proc.stderr
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["verdict"] == "invalid" and verdict["linearizable"] == "violation"
    assert "not linearizable" in (out / "verdict.txt").read_text()
    assert f'stroke="{COLORS["mark"]}"' in (out / "timeline.html").read_text(), "outlined"
    _, _, pixels = read_png((out / "timeline.png").read_bytes())
    assert pixels_near(pixels, COLORS["mark"]) > 1_000, "the failing window is outlined"
    assert not replicas_running_under(out)


def test_scenario_file_and_its_errors(tmp_path: Path) -> None:
    path = tmp_path / "chaos.toml"
    path.write_text('replicas = 3\nnemesis = ["kill", "clock"]\nduration_s = 5\nseed = 9\n')
    scenario = load_scenario(path, seed=11)
    assert scenario == Scenario(replicas=3, nemesis=["kill", "clock"], duration_s=5, seed=11)
    path.write_text('replicas = 3\nnemesis = ["kill", "meteor"]\n')
    with pytest.raises(InvalidCommand, match="nemesis"):
        load_scenario(path)
    path.write_text("replicas = \n")
    with pytest.raises(InvalidCommand, match=r"chaos\.toml"):
        load_scenario(path)
    proc = _chaos(tmp_path / "x", "--scenario", str(path))
    assert proc.returncode not in (0, EXIT_VIOLATION, EXIT_UNKNOWN)
    assert "chaos.toml" in proc.stderr


def test_without_matplotlib_the_run_writes_its_data_and_page_and_says_how_to_get_the_png(
        tmp_path: Path) -> None:
    """The plotting library is an extra: with it unimportable (``sys.modules`` entry set to
    ``None`` by this test, before the CLI loads) a run still writes every data file and the
    HTML page, and its summary says how to get the PNG."""
    out = tmp_path / "run"
    script = ("import sys; sys.modules['matplotlib'] = None; "
              "from quorumboard.consensus.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run(
        [sys.executable, "-c", script, "chaos", "--out", str(out), "--replicas", "1",
         "--clients", "2", "--rate", "40", "--keys", "1", "--nemesis", "pause",
         "--interval", "0.3", "--fault-duration", "0.5", "--duration", "1.5", "--seed", "2"],
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pip install 'quorumboard[plots]'" in proc.stdout, proc.stdout
    assert not (out / "timeline.png").exists()
    wrote = next(line for line in proc.stdout.splitlines() if line.startswith("wrote "))
    assert "timeline.html" in wrote and "timeline.png" not in wrote, wrote
    for name in ("verdict.json", "summary.json", "history.jsonl", "faults.jsonl"):
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "verdict.json").read_text())["verdict"] == "valid"
    page = (out / "timeline.html").read_text()
    assert "<svg" in page and "pause " in page and FAULT_COLORS["pause"] in page
    assert not replicas_running_under(out)


def _recorded_run(out: Path, stale: bool) -> None:
    """A chaos run folder as a run leaves it, written by hand (no cluster): scenario, history
    (two cas-register keys, each created, then read by the ``final`` process), faults and the
    run's own verdict. With ``stale`` the final read of one key misses its create."""
    scenario = Scenario(replicas=3, keys=2, nemesis=["kill"], duration_s=1)
    out.mkdir()
    (out / "scenario.json").write_text(scenario.model_dump_json())
    with HistoryWriter(out / "history.jsonl") as h:
        for n, key in enumerate(["wl/cas-register/0", "wl/cas-register/1"]):
            h.write(f"c{n}", "invoke", "cas", key, [0, n], 10 + n)
            h.write(f"c{n}", "ok", "cas", key, ["ok", 1], 20 + n)
        for n, key in enumerate(["wl/cas-register/0", "wl/cas-register/1"]):
            h.write("final", "invoke", "read", key, None, 30 + 2 * n)
            seen = [0, None] if stale and n == 1 else [1, n]
            h.write("final", "ok", "read", key, seen, 31 + 2 * n)
    (out / "faults.jsonl").write_text("")
    previous = ChaosReport(verdict="unknown", linearizable="unknown", findings=[],
                           converged=True, digests=["d", "d", "d"], operations=4,
                           faults_injected=1, problems=[], explanation="", out=str(out))
    (out / "verdict.json").write_text(previous.model_dump_json())


def test_recheck_checks_a_recorded_run_offline_and_keeps_its_verdict(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``chaos --recheck DIR`` judges a recorded run again without a cluster, writes
    recheck.json next to the run's verdict (left as it was), and its negative control, a final
    read that misses an acknowledged create, exits with the violation code."""
    from quorumboard.consensus.cli import main

    good, bad = tmp_path / "good", tmp_path / "bad"
    _recorded_run(good, stale=False)
    _recorded_run(bad, stale=True)
    before = (good / "verdict.json").read_text()
    assert main(["chaos", "--recheck", str(good), "--check-time-limit", "5"]) == 0
    printed = capsys.readouterr().out
    assert "verdict: valid" in printed and "operations checked: 4" in printed, printed
    recheck = json.loads((good / "recheck.json").read_text())
    assert recheck["verdict"] == "valid" and recheck["converged"] and recheck["check_s"] >= 0
    assert (good / "verdict.json").read_text() == before, "the run's own verdict is kept"

    assert main(["chaos", "--recheck", str(bad)]) == EXIT_VIOLATION
    printed = capsys.readouterr().out
    assert "not linearizable" in printed and "wl/cas-register/1" in printed, printed

    assert main(["chaos", "--recheck", str(tmp_path / "nothing")]) not in (0, EXIT_VIOLATION,
                                                                           EXIT_UNKNOWN)
    assert "not a readable chaos run folder" in capsys.readouterr().err
