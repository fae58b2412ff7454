"""Shared pieces of the benchmark's load processes: the timed agent loop and the line protocol.

This module does not import ``consensus``: the raw pysyncobj baseline (``bench.raw_node``) uses
it, and a quorumboard ``RaftNode`` built in the same process would replace pysyncobj's pickle
with quorumboard's codec (consensus/raft/_pysyncobj.py ``install``).

Timing: every process uses ``time.monotonic()``. On Linux (and macOS) that clock is system-wide,
so the orchestrator can hand out one absolute measurement window that every load process on the
machine agrees on.

Line protocol (JSON, one object per line) between the orchestrator and a load process:

* load process -> stdout: ``{"ready": true, ...}`` once it can generate load at once;
* orchestrator -> stdin:  ``{"start": t0, "end": t1, ...}`` (monotonic seconds): agents start
  putting immediately (warm-up), record puts that *complete* in ``[t0, t1)``, stop at ``t1``;
* load process -> stdout: ``{"done": true}`` after it wrote its result file (``AgentStats`` list).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

ERRORS_PER_AGENT_MAX = 50
PUTS_PER_AGENT_MAX_DEFAULT = 1_000_000
GO_WAIT_S_MAX = 300.0


@dataclasses.dataclass
class AgentStats:
    """What one agent did inside the measured window."""

    agent: str
    committed: int = 0  # puts acknowledged as committed inside the window
    attempted: int = 0  # puts started (warm-up and window)
    errors: int = 0
    last_error: str = ""
    latencies_us: list[int] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(obj: dict[str, Any]) -> AgentStats:
        return AgentStats(
            agent=str(obj["agent"]), committed=int(obj["committed"]),
            attempted=int(obj["attempted"]), errors=int(obj["errors"]),
            last_error=str(obj["last_error"]),
            latencies_us=[int(x) for x in obj["latencies_us"]])


@dataclasses.dataclass(frozen=True)
class Window:
    start: float
    end: float


def run_agent(put: Callable[[int], None], window: Window, stats: AgentStats,
              puts_max: int) -> None:
    """Sequential puts until the window ends (or ``puts_max`` / too many errors).

    Latency = wall time of one ``put`` call, recorded for puts that complete inside the window.
    """
    for n in range(puts_max):
        t0 = time.monotonic()
        if t0 >= window.end:
            return
        stats.attempted += 1
        try:
            put(n)
        except Exception as exc:  # a failed put is reported, not fatal
            stats.errors += 1
            stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
            if stats.errors >= ERRORS_PER_AGENT_MAX:
                return
            continue
        t1 = time.monotonic()
        if window.start <= t1 < window.end:
            stats.committed += 1
            stats.latencies_us.append(round((t1 - t0) * 1e6))


def run_agents(puts: list[tuple[str, Callable[[int], None]]], window: Window,
               puts_max: int) -> list[AgentStats]:
    """One thread per agent; joined with a bound (a hung put is reported, not waited for)."""
    stats = [AgentStats(agent=name) for name, _ in puts]
    threads = [threading.Thread(target=run_agent, args=(fn, window, st, puts_max), daemon=True,
                                name=f"agent-{name}")
               for (name, fn), st in zip(puts, stats, strict=True)]
    for t in threads:
        t.start()
    deadline = window.end + 30.0
    for t, st in zip(threads, stats, strict=True):
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            st.errors += 1
            st.last_error = "agent thread still blocked in put 30 s after the window ended"
    return [dataclasses.replace(st, latencies_us=list(st.latencies_us)) for st in stats]


def emit(obj: dict[str, Any], out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(obj) + "\n")
    out.flush()


def read_go(inp: TextIO = sys.stdin) -> dict[str, Any] | None:
    """The orchestrator's go line, or ``None`` on EOF / a bad line (the caller exits)."""
    line = inp.readline()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "start" in obj and "end" in obj else None


def write_result(path: str, stats: list[AgentStats], extra: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"agents": [s.to_json() for s in stats], **extra}, f)


def result_header(module: str, cfg: Any) -> dict[str, Any]:
    """What every benchmark's JSON starts with: its name, the command that ran it, its config."""
    return {"benchmark": module,
            "command": " ".join([Path(sys.executable).name, "-m", module, *sys.argv[1:]]),
            "config": {**dataclasses.asdict(cfg), "out": str(cfg.out)}}


def finish(out: Path, result: dict[str, Any], failed: bool) -> int:
    """Write a benchmark's JSON result to ``out`` and return its exit code (1: a row failed):
    the one ending every benchmark shares."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 1 if failed else 0


def value_of(size: int) -> str:
    return "v" * max(1, size)


def percentile(sorted_values: list[int], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def watchdog(seconds: float, code: int = 70) -> None:
    """Hard-exit this process after ``seconds`` whatever it is doing (orphan protection)."""
    import os

    def fire() -> None:
        time.sleep(seconds)
        sys.stderr.write(f"watchdog: exiting after {seconds:.0f}s\n")
        sys.stderr.flush()
        os._exit(code)

    threading.Thread(target=fire, daemon=True, name="watchdog").start()
