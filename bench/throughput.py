"""Committed puts/s and commit latency of quorumboard against raw pysyncobj, in one invocation.

``python -m bench.throughput`` (from the repository root) runs, for every agent count in
``--agents`` (default 1, 8 and 64):

* **quorumboard** - a fresh ``LocalCluster(replicas=3)`` in a temp dir; the agents are threads
  spread evenly over client processes (``bench.worker``), each with its own ``Board``, doing
  sequential ``put`` calls of ~``--value-bytes`` values through the real client;
* **raw-unbatched** - a fresh 3-node pysyncobj cluster (``bench.raw_node``) of a bare
  ``@replicated`` dict with ``SyncObjConf(appendEntriesUseBatch=False)``, the same number of
  agent threads running inside the node processes (leader first, round-robin), sync calls;
* **raw-batched** - the same with pysyncobj's default (batched) configuration.

Each run warms up for ``--warmup-s``, then measures for ``--duration-s``: puts/s = puts whose
commit was acknowledged inside the window / window length; p50/p99 = wall time of those puts.
It prints a table, ratio lines and PASS/MISS lines for the targets, and writes the same as JSON
to ``--out``. Targets are reported, never asserted: the exit status is 0 unless the harness
itself failed (a run could not start, a load process died, ...). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any

from bench.common import (
    PUTS_PER_AGENT_MAX_DEFAULT,
    AgentStats,
    Window,
    finish,
    percentile,
    result_header,
)

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
DONE_GRACE_S = 45.0
EXIT_TIMEOUT_S = 15.0
LINES_MAX = 1_000

QB = "quorumboard"
RAW_UNBATCHED = "raw-unbatched"
RAW_BATCHED = "raw-batched"

TARGET_LONE_P50_MS = 2.0
TARGET_PUTS_64 = 2_500.0
TARGET_RAW_RATIO = 0.8


class HarnessError(Exception):
    """The benchmark itself failed (not a missed target)."""


@dataclasses.dataclass
class Config:
    agents: list[int]
    duration_s: float
    warmup_s: float
    processes: str
    replicas: int
    value_bytes: int
    puts_max: int
    skip_raw: bool
    raw_batched: bool
    out: Path
    repeats: int = 1


@dataclasses.dataclass
class Row:
    system: str
    agents: int
    processes: int
    repeat: int = 0
    committed: int = 0
    window_s: float = 0.0
    puts_per_s: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    errors: int = 0
    last_error: str = ""
    leader_cpu_pct: float = 0.0
    total_cpu_pct: float = 0.0
    cpu_pct: dict[str, float] = dataclasses.field(default_factory=dict)
    machine_cpu_pct: float = 0.0  # every process on the machine, during the window
    other_cpu_pct: float = 0.0  # machine minus this run's processes: foreign load (noise)
    leader_start: str = ""
    leader_end: str = ""
    term_start: int = 0
    term_end: int = 0
    failed: str = ""


# --------------------------------------------------------------------------- load processes


class LoadProc:
    """A load process (bench.worker or bench.raw_node) in its own process group."""

    def __init__(self, name: str, argv: list[str], log_path: Path, result_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.result_path = result_path
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
        env["PYTHONUNBUFFERED"] = "1"
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, start_new_session=True)
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"read-{name}")
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        out = self.proc.stdout
        try:
            if out is not None:
                for _, line in zip(range(LINES_MAX), out, strict=False):
                    self._lines.put(line)
        finally:
            self._lines.put(None)

    def expect(self, key: str, deadline: float) -> dict[str, Any]:
        """The next protocol line carrying ``key`` (other output is ignored)."""
        for _ in range(LINES_MAX):
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise HarnessError(f"{self.name}: no '{key}' in time{self._tail()}") from None
            if line is None:
                raise HarnessError(f"{self.name}: exited ({self.proc.poll()}) before '{key}'"
                                   f"{self._tail()}")
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict) and obj.get(key):
                    return obj
        raise HarnessError(f"{self.name}: too much output before '{key}'")

    def send(self, obj: dict[str, Any]) -> None:
        stdin = self.proc.stdin
        if stdin is None:
            raise HarnessError(f"{self.name}: no stdin")
        try:
            stdin.write(json.dumps(obj) + "\n")
            stdin.flush()
        except OSError as exc:
            raise HarnessError(f"{self.name}: cannot write to it: {exc}{self._tail()}") from None

    def result(self) -> list[AgentStats]:
        try:
            data = json.loads(self.result_path.read_text())
            return [AgentStats.from_json(a) for a in data["agents"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise HarnessError(f"{self.name}: unreadable result: {exc}") from None

    def result_extra(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.result_path.read_text())
            if isinstance(data, dict):
                return {k: v for k, v in data.items() if k != "agents"}
        return {}

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").strip()
            if text:
                return "\n    " + "\n    ".join(text.splitlines()[-15:])
        return ""

    def stop(self, graceful: bool) -> None:
        """Ask it to exit (close stdin), then SIGTERM / SIGKILL its whole process group."""
        with contextlib.suppress(OSError, ValueError):
            if graceful and self.proc.stdin is not None:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.flush()
        with contextlib.suppress(OSError, ValueError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        if graceful:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(EXIT_TIMEOUT_S)
        for sig, wait_s in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait_s)
        # Anything left in the group (it is ours: start_new_session=True).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


def _stop_all(procs: list[LoadProc], graceful: bool) -> None:
    for p in procs:  # all at once first: the exit requests overlap
        with contextlib.suppress(OSError, ValueError):
            if graceful and p.proc.stdin is not None:
                p.proc.stdin.write("exit\n")
                p.proc.stdin.flush()
    for p in procs:
        p.stop(graceful)


# ------------------------------------------------------------------------------ measurement


def _cpu_seconds(pid: int) -> float | None:
    """User+system CPU seconds of ``pid`` (all its threads), from /proc; None if unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _sleep_until(t: float) -> None:
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.5))


def _measure(row: Row, cfg: Config, procs: list[LoadProc], go_extra: list[dict[str, Any]],
             pids: dict[str, int], leader_role: str) -> None:
    """Send go, sample CPU over the window, collect and merge every process's result."""
    start = time.monotonic() + cfg.warmup_s + 0.05
    end = start + cfg.duration_s
    for p, extra in zip(procs, go_extra, strict=True):
        p.send({"start": start, "end": end, **extra})
    cpu = sample_window(pids, Window(start, end))
    for p in procs:
        p.expect("done", end + DONE_GRACE_S)
    fill_row(row, [s for p in procs for s in p.result()], Window(start, end), cpu, leader_role)


@dataclasses.dataclass
class CpuSample:
    """CPU seconds used during a window: per role (a pid), and by the whole machine."""

    per_role_s: dict[str, float]
    machine_s: float | None


def sample_window(pids: dict[str, int], window: Window) -> CpuSample:
    """Sleep until ``window`` starts, then until it ends, reading CPU counters at both ends."""
    _sleep_until(window.start)
    cpu0 = {role: _cpu_seconds(pid) for role, pid in pids.items()}
    busy0 = _machine_busy_seconds()
    _sleep_until(window.end)
    cpu1 = {role: _cpu_seconds(pid) for role, pid in pids.items()}
    busy1 = _machine_busy_seconds()
    used = {role: b - a for role in pids
            if (a := cpu0.get(role)) is not None and (b := cpu1.get(role)) is not None}
    return CpuSample(used, None if busy0 is None or busy1 is None else busy1 - busy0)


def fill_row(row: Row, stats: list[AgentStats], window: Window, cpu: CpuSample,
             leader_role: str) -> None:
    """Throughput, latency percentiles, errors and CPU shares of one run, from its agents'
    stats: the one computation every benchmark here reports its figures with."""
    latencies = sorted(x for s in stats for x in s.latencies_us)
    row.window_s = window.end - window.start
    row.committed = sum(s.committed for s in stats)
    row.puts_per_s = row.committed / row.window_s
    row.p50_ms = percentile(latencies, 50) / 1e3
    row.p99_ms = percentile(latencies, 99) / 1e3
    row.max_ms = (latencies[-1] / 1e3) if latencies else 0.0
    row.errors = sum(s.errors for s in stats)
    row.last_error = next((s.last_error for s in stats if s.last_error), "")
    row.cpu_pct = {role: round(100.0 * used / row.window_s, 1)
                   for role, used in cpu.per_role_s.items()}
    row.leader_cpu_pct = row.cpu_pct.get(leader_role, 0.0)
    row.total_cpu_pct = round(sum(row.cpu_pct.values()), 1)
    if cpu.machine_s is not None:
        row.machine_cpu_pct = round(100.0 * cpu.machine_s / row.window_s, 1)
        row.other_cpu_pct = round(max(0.0, row.machine_cpu_pct - row.total_cpu_pct), 1)


def _split(agents: int, processes: int) -> list[int]:
    base, extra = divmod(agents, processes)
    return [base + (1 if i < extra else 0) for i in range(processes) if base or i < extra]


def processes_for(agents: int, setting: str) -> int:
    """``auto``: 1 client process per 4 agents, at most 4 (1 -> 1, 8 -> 2, 64 -> 4)."""
    if setting == "auto":
        return max(1, min(4, math.ceil(agents / 4)))
    return max(1, min(int(setting), agents))


def run_quorumboard(cfg: Config, agents: int, workdir: Path) -> Row:
    from quorumboard.consensus import (
        LocalCluster,  # only the orchestrator and workers import consensus
    )

    counts = _split(agents, processes_for(agents, cfg.processes))
    row = Row(system=QB, agents=agents, processes=len(counts))
    procs: list[LoadProc] = []
    graceful = False
    cluster = LocalCluster(replicas=cfg.replicas, data_dir=workdir / "cluster")
    try:
        leader = cluster.wait_for_leader()
        for i, n in enumerate(counts):
            procs.append(LoadProc(
                f"qb-worker-{i}",
                ["-m", "bench.worker", "--endpoints", ",".join(cluster.endpoints),
                 "--agents", str(n), "--name", f"w{i}", "--value-bytes", str(cfg.value_bytes),
                 "--puts-max", str(cfg.puts_max), "--result", str(workdir / f"w{i}.json"),
                 "--lifetime-s", str(_lifetime(cfg))],
                workdir / f"w{i}.log", workdir / f"w{i}.json"))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for p in procs:
            p.expect("ready", deadline)
        pids = {f"replica-{i}": pid for i in range(cfg.replicas)
                if (pid := cluster.pid(i)) is not None}
        pids.update({p.name: p.pid for p in procs})
        row.leader_start, row.term_start = _qb_leader_term(cluster)
        _measure(row, cfg, procs, [{} for _ in procs], pids, f"replica-{leader}")
        row.leader_end, row.term_end = _qb_leader_term(cluster)
        graceful = True
    finally:
        _stop_all(procs, graceful)
        cluster.stop()
    return row


def _qb_leader_term(cluster: Any) -> tuple[str, int]:
    statuses = [st for st in cluster.status() if st is not None]
    leaders = [st.leader or "" for st in statuses]
    return (max(set(leaders), key=leaders.count) if leaders else "",
            max((st.term for st in statuses), default=0))


def run_raw(cfg: Config, agents: int, batched: bool, workdir: Path) -> Row:
    row = Row(system=RAW_BATCHED if batched else RAW_UNBATCHED, agents=agents,
              processes=cfg.replicas)
    from quorumboard.consensus.cluster import _free_ports  # the orchestrator may import consensus

    addresses = [f"{HOST}:{p}" for p in _free_ports(cfg.replicas, HOST)]
    procs: list[LoadProc] = []
    graceful = False
    try:
        for i, address in enumerate(addresses):
            argv = ["-m", "bench.raw_node", "--self", address,
                    "--partners", ",".join(a for a in addresses if a != address),
                    "--value-bytes", str(cfg.value_bytes), "--puts-max", str(cfg.puts_max),
                    "--result", str(workdir / f"n{i}.json"), "--lifetime-s", str(_lifetime(cfg))]
            if batched:
                argv.append("--batched")
            procs.append(LoadProc(f"raw-node-{i}", argv, workdir / f"n{i}.log",
                                  workdir / f"n{i}.json"))
        deadline = time.monotonic() + READY_TIMEOUT_S
        leaders = [str(p.expect("ready", deadline).get("leader")) for p in procs]
        leader = max(set(leaders), key=leaders.count)
        first = addresses.index(leader) if leader in addresses else 0
        order = [(first + k) % len(procs) for k in range(len(procs))]
        names: list[list[str]] = [[] for _ in procs]
        for a in range(agents):
            node = order[a % len(order)]
            names[node].append(f"n{node}-a{a}")
        pids = {p.name: p.pid for p in procs}
        row.leader_start = leader
        _measure(row, cfg, procs, [{"agents": n} for n in names], pids, f"raw-node-{first}")
        ends = [str(p.result_extra().get("leader_at_end")) for p in procs]
        row.leader_end = max(set(ends), key=ends.count)
        graceful = True
    finally:
        _stop_all(procs, graceful)
    return row


def _lifetime(cfg: Config) -> float:
    """Hard limit for a load process: start-up + warm-up + window + teardown, generously."""
    return READY_TIMEOUT_S + cfg.warmup_s + cfg.duration_s + DONE_GRACE_S + 60.0


# -------------------------------------------------------------------------------- reporting


def _ok(rows: list[Row], system: str, agents: int) -> list[Row]:
    return [r for r in rows if r.system == system and r.agents == agents and not r.failed]


def _paired_ratios(rows: list[Row], agents: int, base: str) -> list[float]:
    """quorumboard/``base`` puts/s within each repeat: the two runs of a pair are adjacent in
    time, so slow drift in the machine's speed cancels out of the ratio."""
    out: list[float] = []
    for qb in _ok(rows, QB, agents):
        raw = next((r for r in _ok(rows, base, agents) if r.repeat == qb.repeat), None)
        if raw is not None and raw.puts_per_s > 0:
            out.append(qb.puts_per_s / raw.puts_per_s)
    return out


def _spread(values: list[float], fmt: str) -> str:
    """``median`` or ``median (min-max)`` when there are several values."""
    mid = format(statistics.median(values), fmt)
    if len(values) < 2:
        return mid
    return f"{mid} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def summary(cfg: Config, rows: list[Row]) -> list[dict[str, Any]]:
    """Per (system, agents): medians over the repeats that did not fail."""
    out: list[dict[str, Any]] = []
    for agents in cfg.agents:
        for system in (QB, RAW_UNBATCHED, RAW_BATCHED):
            ok = _ok(rows, system, agents)
            if not ok:
                continue
            out.append({
                "system": system, "agents": agents, "runs": len(ok),
                "puts_per_s": [r.puts_per_s for r in ok],
                "puts_per_s_median": statistics.median(r.puts_per_s for r in ok),
                "p50_ms_median": statistics.median(r.p50_ms for r in ok),
                "p99_ms_median": statistics.median(r.p99_ms for r in ok),
            })
    return out


def report(cfg: Config, rows: list[Row]) -> dict[str, Any]:
    """Print the tables, ratio and target lines; return the same as a JSON-able dict."""
    header = (f"{'system':<14} | {'agents':>6} | {'rep':>3} | {'procs':>5} | {'puts/s':>9} | "
              f"{'p50 ms':>7} | {'p99 ms':>7} | {'max ms':>7} | {'ldr cpu%':>8} | "
              f"{'all cpu%':>8} | {'ext cpu%':>8} | {'errors':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.failed:
            print(f"{r.system:<14} | {r.agents:>6} | {r.repeat:>3} | FAILED: "
                  f"{r.failed.splitlines()[0]}")
            continue
        print(f"{r.system:<14} | {r.agents:>6} | {r.repeat:>3} | {r.processes:>5} | "
              f"{r.puts_per_s:>9.1f} | {r.p50_ms:>7.2f} | {r.p99_ms:>7.2f} | {r.max_ms:>7.1f} | "
              f"{r.leader_cpu_pct:>8.0f} | {r.total_cpu_pct:>8.0f} | {r.other_cpu_pct:>8.0f} | "
              f"{r.errors:>6}{'' if r.leader_start == r.leader_end else '  leader changed'}")
    print("(cpu% = % of one core over the window; ldr = leader process, all = this run's "
          "processes, ext = everything else on the machine)")
    medians = summary(cfg, rows)
    print(f"\nmedian (min-max) over {cfg.repeats} repeat{'s' if cfg.repeats != 1 else ''}:")
    for m in medians:
        print(f"  {m['system']:<14} {m['agents']:>4} agents: "
              f"{_spread(m['puts_per_s'], ',.0f')} puts/s, p50 {m['p50_ms_median']:.2f} ms, "
              f"p99 {m['p99_ms_median']:.2f} ms")
    print()
    ratios: list[dict[str, Any]] = []
    for base in (RAW_UNBATCHED, RAW_BATCHED):
        for a in cfg.agents:
            values = _paired_ratios(rows, a, base)
            if not values:
                continue
            ratios.append({"baseline": base, "agents": a, "paired": [round(v, 4) for v in values],
                           "puts_per_s_ratio": round(statistics.median(values), 4)})
            print(f"quorumboard/{base} puts/s at {a} agent{'s' if a != 1 else ''}: "
                  f"{_spread(values, '.2f')}x")
    targets = _targets(cfg, rows)
    if ratios:
        print()
    for t in targets:
        print(f"{t['status']:<4} {t['target']}: {t['measured']}")
    return {
        **result_header("bench.throughput", cfg),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "rows": [dataclasses.asdict(r) for r in rows],
        "summary": medians,
        "ratios": ratios,
        "targets": targets,
    }


def _targets(cfg: Config, rows: list[Row]) -> list[dict[str, Any]]:
    """Each target judged on the median over the repeats."""
    out: list[dict[str, Any]] = []

    def add(target: str, values: list[float], passed: Callable[[float], bool], fmt: str) -> None:
        if not values:
            out.append({"target": target, "status": "n/a", "measured": "not measured"})
            return
        mid = statistics.median(values)
        out.append({"target": target, "status": "PASS" if passed(mid) else "MISS",
                    "measured": _spread(values, fmt), "median": round(mid, 4)})

    add(f"lone agent commit p50 <= {TARGET_LONE_P50_MS:g} ms",
        [r.p50_ms for r in _ok(rows, QB, 1)], lambda v: v <= TARGET_LONE_P50_MS, ".2f")
    add(f">= {TARGET_PUTS_64:,.0f} committed puts/s with 64 agents",
        [r.puts_per_s for r in _ok(rows, QB, 64)], lambda v: v >= TARGET_PUTS_64, ",.0f")
    for a in cfg.agents:
        add(f">= {TARGET_RAW_RATIO:g}x raw pysyncobj unbatched puts/s at {a} agents",
            _paired_ratios(rows, a, RAW_UNBATCHED), lambda v: v >= TARGET_RAW_RATIO, ".2f")
    return out


# ------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="committed puts/s and commit latency: quorumboard vs raw pysyncobj")
    parser.add_argument("--agents", default="1,8,64",
                        help="comma-separated concurrent agent counts (default 1,8,64)")
    parser.add_argument("--duration-s", type=float, default=5.0, help="measured window per run")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="excluded warm-up per run")
    parser.add_argument("--processes", default="auto",
                        help="quorumboard client processes per run: N or auto "
                             "(1 per 4 agents, at most 4)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--puts-max", type=int, default=PUTS_PER_AGENT_MAX_DEFAULT,
                        help="bound on puts per agent per run")
    parser.add_argument("--skip-raw", action="store_true", help="no raw pysyncobj baselines")
    parser.add_argument("--no-raw-batched", action="store_true",
                        help="skip the batched (default-config) pysyncobj baseline")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats of every run; figures are medians (default 3)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/throughput.json"))
    args = parser.parse_args(argv)
    try:
        agents = [int(x) for x in str(args.agents).split(",") if x.strip()]
    except ValueError:
        parser.error("--agents: comma-separated integers")
    if not agents or any(a < 1 or a > 1024 for a in agents):
        parser.error("--agents: each between 1 and 1024")
    if args.processes != "auto" and not (args.processes.isdigit() and int(args.processes) >= 1):
        parser.error("--processes: a positive integer or 'auto'")
    if not 0 < args.duration_s <= 600 or not 0 <= args.warmup_s <= 60:
        parser.error("--duration-s in (0, 600], --warmup-s in [0, 60]")
    if not 1 <= args.replicas <= 15 or not 1 <= args.value_bytes <= 2**20 or args.puts_max < 1:
        parser.error("--replicas 1..15, --value-bytes 1..1MiB, --puts-max >= 1")
    if not 1 <= args.repeats <= 20:
        parser.error("--repeats 1..20")
    return Config(agents=agents, duration_s=args.duration_s, warmup_s=args.warmup_s,
                  processes=args.processes, replicas=args.replicas, value_bytes=args.value_bytes,
                  puts_max=args.puts_max, skip_raw=args.skip_raw,
                  raw_batched=not args.no_raw_batched, out=args.out, repeats=args.repeats)


def _on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    systems: list[str] = [QB]
    if not cfg.skip_raw:
        systems.append(RAW_UNBATCHED)
        if cfg.raw_batched:
            systems.append(RAW_BATCHED)
    rows: list[Row] = []
    log: IO[str] = sys.stderr
    began = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="qb-bench-") as tmp:
            runs = [(repeat, agents, system) for repeat in range(1, cfg.repeats + 1)
                    for agents in cfg.agents for system in systems]
            for repeat, agents, system in runs:
                workdir = Path(tmp) / f"{system}-{agents}-{repeat}"
                workdir.mkdir()
                print(f"[{time.monotonic() - began:6.1f}s] repeat {repeat}/{cfg.repeats} "
                      f"{system}: {agents} agent(s) ...", file=log, flush=True)
                try:
                    if system == QB:
                        row = run_quorumboard(cfg, agents, workdir)
                    else:
                        row = run_raw(cfg, agents, system == RAW_BATCHED, workdir)
                except (HarnessError, OSError, Exception) as exc:
                    row = Row(system=system, agents=agents, processes=0,
                              failed=f"{type(exc).__name__}: {exc}")
                    print(f"  run failed: {row.failed}", file=log, flush=True)
                row.repeat = repeat
                rows.append(row)
    except KeyboardInterrupt:
        print("interrupted; every process was stopped", file=log)
        return 130
    print(f"[{time.monotonic() - began:6.1f}s] done", file=log, flush=True)
    return finish(cfg.out, report(cfg, rows), any(r.failed for r in rows))


if __name__ == "__main__":
    sys.exit(main())
