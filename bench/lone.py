"""One agent against a one-member board (embedded and as a process) and a 3-replica cluster.

``python -m bench.lone`` (from the repository root) measures, in one invocation, what a single
agent gets from each layout, for puts and for linearizable gets:

* **replicas=3** - ``LocalCluster(replicas=3)``: three replica processes;
* **replicas=1 process** - ``LocalCluster(replicas=1)``: one replica process;
* **replicas=1 embedded** - ``LocalCluster(replicas=1, embedded=True)`` started inside the
  agent's own process (``bench.worker --embedded``), as a prototype runs it.

The agent is one ``Board`` in a load process (``bench.worker``), doing sequential ``put`` calls
of distinct keys, or sequential linearizable ``get`` calls of one key. Measurement, window and
CPU columns are those of :mod:`bench.throughput` (same code). Runs are interleaved (for each
repeat, each op: replicas=3, then the two one-member layouts), and every one-member figure is
reported as a ratio against the replicas=3 run of the same op in the same repeat (median of the
paired ratios). Target (reported, never asserted): every ratio >= 1.0, i.e. a one-member board
is at least as fast for one agent as a 3-replica cluster. See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from bench.common import finish, result_header
from bench.throughput import (
    READY_TIMEOUT_S,
    Config,
    HarnessError,
    LoadProc,
    Row,
    _lifetime,
    _measure,
    _qb_leader_term,
    _spread,
    _stop_all,
)

THREE = "replicas=3"
ONE_PROCESS = "replicas=1 process"
ONE_EMBEDDED = "replicas=1 embedded"
LAYOUTS = (THREE, ONE_PROCESS, ONE_EMBEDDED)
OPS = ("put", "get")
TARGET_RATIO = 1.0


def _system(layout: str, op: str) -> str:
    return f"{layout} {op}"


def run_one(cfg: Config, layout: str, op: str, workdir: Path) -> Row:
    """One agent doing ``op`` for the window against a fresh cluster of ``layout``."""
    from quorumboard.consensus import LocalCluster

    row = Row(system=_system(layout, op), agents=1, processes=1)
    cluster = None if layout == ONE_EMBEDDED else LocalCluster(
        replicas=3 if layout == THREE else 1, data_dir=workdir / "cluster")
    argv = ["-m", "bench.worker", "--agents", "1", "--name", "w0", "--op", op,
            "--value-bytes", str(cfg.value_bytes), "--puts-max", str(cfg.puts_max),
            "--result", str(workdir / "w0.json"), "--lifetime-s", str(_lifetime(cfg))]
    argv += ["--embedded"] if cluster is None else ["--endpoints", ",".join(cluster.endpoints)]
    procs: list[LoadProc] = []
    graceful = False
    try:
        leader = cluster.wait_for_leader() if cluster is not None else 0
        procs.append(LoadProc("worker", argv, workdir / "w0.log", workdir / "w0.json"))
        procs[0].expect("ready", time.monotonic() + READY_TIMEOUT_S)
        pids = {"worker": procs[0].pid}
        if cluster is not None:
            pids.update({f"replica-{i}": pid for i in range(cluster.size)
                         if (pid := cluster.pid(i)) is not None})
            row.leader_start, row.term_start = _qb_leader_term(cluster)
        # Embedded: the worker process is the replica (leader) too.
        _measure(row, cfg, procs, [{}], pids, "worker" if cluster is None else f"replica-{leader}")
        if cluster is not None:
            row.leader_end, row.term_end = _qb_leader_term(cluster)
        graceful = True
    finally:
        _stop_all(procs, graceful)
        if cluster is not None:
            cluster.stop()
    return row


def _ok(rows: list[Row], system: str) -> list[Row]:
    return [r for r in rows if r.system == system and not r.failed]


def paired_ratios(rows: list[Row], layout: str, op: str) -> list[float]:
    """``layout``/replicas=3 ops/s within each repeat (adjacent runs: machine drift cancels)."""
    out: list[float] = []
    for one in _ok(rows, _system(layout, op)):
        three = next((r for r in _ok(rows, _system(THREE, op)) if r.repeat == one.repeat), None)
        if three is not None and three.puts_per_s > 0:
            out.append(one.puts_per_s / three.puts_per_s)
    return out


def report(cfg: Config, rows: list[Row]) -> dict[str, Any]:
    """Print the table, medians, ratio and target lines; return the same as a JSON-able dict."""
    header = (f"{'system':<24} | {'rep':>3} | {'ops/s':>9} | {'p50 ms':>7} | {'p99 ms':>7} | "
              f"{'ldr cpu%':>8} | {'all cpu%':>8} | {'ext cpu%':>8} | {'errors':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.failed:
            print(f"{r.system:<24} | {r.repeat:>3} | FAILED: {r.failed.splitlines()[0]}")
            continue
        print(f"{r.system:<24} | {r.repeat:>3} | {r.puts_per_s:>9.1f} | {r.p50_ms:>7.2f} | "
              f"{r.p99_ms:>7.2f} | {r.leader_cpu_pct:>8.0f} | {r.total_cpu_pct:>8.0f} | "
              f"{r.other_cpu_pct:>8.0f} | {r.errors:>6}")
    print("(one agent; ops/s = puts/s or linearizable gets/s; cpu% = % of one core over the "
          "window; ldr = the leader's process (embedded: the agent's own), ext = the rest of "
          "the machine)")
    print(f"\nmedian (min-max) over {cfg.repeats} repeat{'s' if cfg.repeats != 1 else ''}:")
    summary: list[dict[str, Any]] = []
    for op in OPS:
        for layout in LAYOUTS:
            ok = _ok(rows, _system(layout, op))
            if not ok:
                continue
            values = [r.puts_per_s for r in ok]
            summary.append({"system": _system(layout, op), "runs": len(ok), "ops_per_s": values,
                            "ops_per_s_median": statistics.median(values),
                            "p50_ms_median": statistics.median(r.p50_ms for r in ok)})
            print(f"  {_system(layout, op):<24} {_spread(values, ',.0f')} ops/s, "
                  f"p50 {statistics.median(r.p50_ms for r in ok):.2f} ms")
    print()
    ratios: list[dict[str, Any]] = []
    targets: list[dict[str, Any]] = []
    for op in OPS:
        for layout in (ONE_PROCESS, ONE_EMBEDDED):
            values = paired_ratios(rows, layout, op)
            name = f"{layout}/{THREE} {op}s/s, one agent"
            if not values:
                targets.append({"target": f"{name} >= {TARGET_RATIO:g}", "status": "n/a",
                                "measured": "not measured"})
                continue
            mid = statistics.median(values)
            ratios.append({"layout": layout, "op": op, "paired": [round(v, 4) for v in values],
                           "ratio": round(mid, 4)})
            print(f"{name}: {_spread(values, '.2f')}x")
            targets.append({"target": f"{name} >= {TARGET_RATIO:g}",
                            "status": "PASS" if mid >= TARGET_RATIO else "MISS",
                            "measured": _spread(values, ".2f"), "median": round(mid, 4)})
    print()
    for t in targets:
        print(f"{t['status']:<4} {t['target']}: {t['measured']}")
    return {
        **result_header("bench.lone", cfg),
        "rows": [dataclasses.asdict(r) for r in rows],
        "summary": summary,
        "ratios": ratios,
        "targets": targets,
    }


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m bench.lone",
        description="one agent: replicas=1 (embedded and process) against replicas=3")
    parser.add_argument("--duration-s", type=float, default=3.0, help="measured window per run")
    parser.add_argument("--warmup-s", type=float, default=0.5, help="excluded warm-up per run")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats of every run; figures are medians (default 3)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/lone.json"))
    args = parser.parse_args(argv)
    if not 0 < args.duration_s <= 600 or not 0 <= args.warmup_s <= 60:
        parser.error("--duration-s in (0, 600], --warmup-s in [0, 60]")
    if not 1 <= args.value_bytes <= 2**20 or not 1 <= args.repeats <= 20:
        parser.error("--value-bytes 1..1MiB, --repeats 1..20")
    return Config(agents=[1], duration_s=args.duration_s, warmup_s=args.warmup_s,
                  processes="1", replicas=3, value_bytes=args.value_bytes,
                  puts_max=1_000_000, skip_raw=True, raw_batched=False, out=args.out,
                  repeats=args.repeats)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    rows: list[Row] = []
    log: IO[str] = sys.stderr
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="qb-bench-lone-") as tmp:
            for repeat in range(1, cfg.repeats + 1):
                for op in OPS:
                    for layout in LAYOUTS:
                        workdir = Path(tmp) / f"{repeat}-{op}-{layout.replace(' ', '-')}"
                        workdir.mkdir()
                        print(f"[{time.monotonic() - began:6.1f}s] repeat {repeat}/"
                              f"{cfg.repeats} {_system(layout, op)} ...", file=log, flush=True)
                        try:
                            row = run_one(cfg, layout, op, workdir)
                        except (HarnessError, OSError, Exception) as exc:
                            row = Row(system=_system(layout, op), agents=1, processes=0,
                                      failed=f"{type(exc).__name__}: {exc}")
                            print(f"  run failed: {row.failed}", file=log, flush=True)
                        row.repeat = repeat
                        rows.append(row)
    except KeyboardInterrupt:
        print("interrupted; every process was stopped", file=log)
        return 130
    return finish(cfg.out, report(cfg, rows), any(r.failed for r in rows))


if __name__ == "__main__":
    sys.exit(main())
