"""A thousand agents on one cluster: shared connections, follower-served watches, leases.

``python -m bench.thousand --agents 1000,2000,5000 --out runs/bench/thousand.json`` (from the
repository root). For every agent count: a fresh ``LocalCluster(replicas=3)`` (default
per-replica settings: 1,024 connections, 8 MiB watch buffers); the agents are spread over
client processes (``--agents-per-process``, default 250), each process one
:func:`~quorumboard.consensus.connect_shared` Connection, every agent its **own Board** on it
(its own session) with a lease of ``--ttl-s`` kept alive every third of it, and a watch on the
shared prefix ``feed/`` (one thread per agent iterating ``Board.watch``). Boards take turns over
the replicas for their watches, so each replica serves a third of them. Once every agent holds
its lease, one writer (a Board of its own) puts to ``feed/`` every ``--interval-s`` (200 ms) for
``--duration-s``.

Measured, per agent count:

* **delivery**: every watcher must see every write exactly once, in revision order; the count
  of events delivered against agents x writes, with missing / duplicated / out-of-order ones;
* **fan-out latency**: a watcher's receipt (when its iterator yields the event) less the
  writer's acknowledgement (when ``put`` returned), both on ``time.monotonic()``, which is
  system-wide on Linux; p50 / p99 / max over every (agent, event). A follower can hand an event
  to its watcher before the leader's reply reaches the writer: such samples are negative and
  kept as they are;
* **leases**: a keepalive answered ``NotFound``, or a lease missing at the end, is a lease lost;
* **memory**: each client process's RSS growth from before its Boards existed to the end of the
  window, per agent; each replica's RSS growth from the idle cluster to the end of the window,
  per agent; and each replica's client connections and watches in ``status``.

Targets (issue 19): every event delivered, fan-out p99 <= 100 ms, no lease lost. They are
reported, never asserted; the exit status is 1 when a run missed one (0 otherwise).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import emit, finish, percentile, result_header, watchdog

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "feed/"
READY_TIMEOUT_S = 300.0
WORKER_LIFETIME_S = 1_800.0
DELIVERY_GRACE_S = 30.0
KEEPALIVE_THREADS = 32
GRANT_THREADS = 16
SESSIONS_SPARE = 1_024
LATE_KEEPALIVE_FRACTION = 0.9
"""A keepalive later than this fraction of the TTL after the previous one is counted late."""


@dataclasses.dataclass(frozen=True)
class Config:
    agents: list[int]
    agents_per_process: int
    duration_s: float
    interval_s: float
    ttl_s: float
    out: Path


# ------------------------------------------------------------------------------ measuring

def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def delivery(written: list[int], seen: list[int]) -> dict[str, int]:
    """How one watcher's revisions compare with the writer's: each written revision delivered
    once, in order."""
    wanted, got = set(written), set(seen)
    return {"delivered": len(wanted & got), "missing": len(wanted - got),
            "duplicated": len(seen) - len(got),
            "out_of_order": sum(1 for a, b in itertools.pairwise(seen) if b <= a),
            "foreign": len(got - wanted)}


# --------------------------------------------------------------------------------- worker

class _Agent:
    """One agent of a worker process: a Board on the shared Connection, a lease, a watch."""

    def __init__(self, board: Any, lease_id: int) -> None:
        self.board = board
        self.lease_id = lease_id
        self.received: list[tuple[int, float]] = []
        self.keepalives = 0
        self.lost = ""
        self.late = 0
        self.renewed_at = time.monotonic()
        self.error = ""


def _watch(agent: _Agent, start: int, last: list[int]) -> None:
    """Iterate the agent's watch until the final revision (set by the orchestrator) arrived
    or the board is closed."""
    from quorumboard.consensus import Unavailable

    try:
        for event in agent.board.watch(PREFIX, start_revision=start):
            agent.received.append((event.revision, time.monotonic()))
            if last and event.revision >= last[0]:
                return
    except Unavailable:
        return  # closed at the end
    except Exception as exc:
        agent.error = f"{type(exc).__name__}: {exc}"[:300]


def _keep_alive(agents: list[_Agent], ttl_s: float, stop: threading.Event) -> None:
    """Renew every agent's lease each third of the TTL, spread evenly over that period, from a
    small pool (each keepalive goes through the agent's own Board)."""
    from quorumboard.consensus import BoardError, NotFound

    period_s = ttl_s / 3
    step_s = period_s / max(1, len(agents))

    def renew(agent: _Agent) -> None:
        if agent.lost:
            return
        try:
            agent.board.keepalive(agent.lease_id)
        except NotFound as exc:
            agent.lost = str(exc)[:200]
            return
        except BoardError as exc:  # retried next round; a lost lease shows as NotFound
            agent.error = f"keepalive: {type(exc).__name__}: {exc}"[:300]
            return
        now = time.monotonic()
        if now - agent.renewed_at > LATE_KEEPALIVE_FRACTION * ttl_s:
            agent.late += 1
        agent.renewed_at = now
        agent.keepalives += 1

    with concurrent.futures.ThreadPoolExecutor(KEEPALIVE_THREADS) as pool:
        next_at = time.monotonic()
        for n in range(2**62):  # bounded by ``stop``
            agent = agents[n % len(agents)]
            next_at += step_s
            if stop.wait(max(0.0, next_at - time.monotonic())):
                return
            pool.submit(renew, agent)


def worker(spec: dict[str, Any]) -> int:
    """A client process: its agents on one shared Connection. Talks JSON lines with the
    orchestrator: ``ready`` once every agent holds a lease and watches, then waits for the
    final revision, then reports."""
    watchdog(WORKER_LIFETIME_S)
    from quorumboard.consensus import connect_shared

    threading.stack_size(512 * 1024)  # a thread per agent: keep their stacks small
    rss_start = rss_bytes(os.getpid())
    conn = connect_shared(spec["endpoints"], secret=spec["secret"], name=spec["name"])
    names = [f"{spec['name']}-a{i}" for i in range(spec["agents"])]

    def start(name: str) -> _Agent:
        board = conn.board(name, timeout_s=30.0)
        return _Agent(board, board.grant(spec["ttl_s"]).id)

    with concurrent.futures.ThreadPoolExecutor(GRANT_THREADS) as pool:
        agents = list(pool.map(start, names))
    last: list[int] = []
    watchers = [threading.Thread(target=_watch, args=(a, spec["start"], last), daemon=True)
                for a in agents]
    for thread in watchers:
        thread.start()
    stop = threading.Event()
    keeper = threading.Thread(target=_keep_alive, args=(agents, spec["ttl_s"], stop),
                              daemon=True)
    keeper.start()
    emit({"ready": True, "connections": conn.connections()})

    line = sys.stdin.readline()
    if not line:
        return 1
    final = int(json.loads(line)["final"])
    last.append(final)
    deadline = time.monotonic() + DELIVERY_GRACE_S
    for agent in agents:  # bounded: each waits at most until the shared deadline
        for _ in range(10_000):
            if (agent.received and agent.received[-1][0] >= final) or agent.error \
                    or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
    rss_end = rss_bytes(os.getpid())
    stop.set()
    keeper.join(10)

    def check(agent: _Agent) -> None:
        if not agent.lost and agent.board.lease(agent.lease_id) is None:
            agent.lost = "lease gone at the end"

    with concurrent.futures.ThreadPoolExecutor(GRANT_THREADS) as pool:
        list(pool.map(check, agents))
    result = {"rss_start": rss_start, "rss_end": rss_end,
              "agents": [{"name": n, "received": a.received, "keepalives": a.keepalives,
                          "late": a.late, "lost": a.lost, "error": a.error}
                         for n, a in zip(names, agents, strict=True)]}
    Path(spec["result"]).write_text(json.dumps(result))
    for agent in agents:
        agent.board.close()
    conn.close()
    emit({"done": True})
    return 0


# --------------------------------------------------------------------------- orchestrator

def _replica_rss(cluster: Any) -> list[int]:
    return [rss_bytes(pid) if (pid := cluster.pid(i)) else 0 for i in range(cluster.size)]


def _ready(proc: subprocess.Popen[str], deadline: float) -> dict[str, Any]:
    """The worker's ``ready`` line (its stdout is read on this thread; the worker writes
    nothing else before it)."""
    assert proc.stdout is not None
    for _ in range(1_000):
        if time.monotonic() >= deadline:
            break
        line = proc.stdout.readline()
        if not line:
            break
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict) and obj.get("ready"):
                return obj
    raise RuntimeError(f"a worker did not get ready (exit code {proc.poll()})")


def run(cfg: Config, agents: int) -> dict[str, Any]:
    """One agent count on a fresh cluster."""
    from quorumboard.consensus import Limits, LocalCluster

    processes = max(1, math.ceil(agents / cfg.agents_per_process))
    # Every Board holds a session: past the default table (4,096 sessions) the oldest would be
    # evicted, and their Boards' retries refused, so a larger crowd gets a larger table.
    limits = Limits()
    if agents + SESSIONS_SPARE > limits.sessions_max:
        limits = Limits(sessions_max=agents + SESSIONS_SPARE)
    with tempfile.TemporaryDirectory(prefix="qb-thousand-") as tmp, \
            LocalCluster(replicas=3, data_dir=Path(tmp) / "cluster", log_level="warning",
                         limits=limits) as c:
        c.wait_for_leader()
        writer = c.board("writer", timeout_s=30.0)
        start = writer.put(f"{PREFIX}begin", 0).revision + 1
        replica_rss_idle = _replica_rss(c)
        procs: list[subprocess.Popen[str]] = []
        try:
            for k in range(processes):
                share = agents // processes + (1 if k < agents % processes else 0)
                spec = {"endpoints": c.endpoints, "secret": None, "name": f"w{k}",
                        "agents": share, "ttl_s": cfg.ttl_s, "start": start,
                        "result": str(Path(tmp) / f"w{k}.json")}
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.thousand", "--worker", json.dumps(spec)],
                    cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    start_new_session=True))
            ready_at = time.monotonic()
            deadline = ready_at + READY_TIMEOUT_S
            for proc in procs:
                _ready(proc, deadline)
            setup_s = time.monotonic() - ready_at
            print(f"  {agents} agents ready in {setup_s:.1f}s on {processes} processes",
                  flush=True)

            acked: dict[int, float] = {}
            status_mid: list[Any] = []
            pids = [c.pid(i) or 0 for i in range(c.size)] + [p.pid for p in procs]
            cpu_start = [cpu_s(pid) for pid in pids]
            writes = max(1, round(cfg.duration_s / cfg.interval_s))
            write_errors = 0
            t0 = time.monotonic()
            for n in range(writes):
                with contextlib.suppress(Exception):
                    time.sleep(max(0.0, t0 + n * cfg.interval_s - time.monotonic()))
                try:
                    rev = writer.put(f"{PREFIX}{n}", {"n": n}).revision
                except Exception:
                    write_errors += 1
                    continue
                acked[rev] = time.monotonic()
                if n == writes // 2:
                    status_mid = c.status()
            replica_rss_end = _replica_rss(c)
            window_s = time.monotonic() - t0
            cpu_share = [round((cpu_s(pid) - start) / window_s, 2)
                         for pid, start in zip(pids, cpu_start, strict=True)]
            final = max(acked)
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(json.dumps({"final": final}) + "\n")
                proc.stdin.flush()
            for proc in procs:
                proc.wait(DELIVERY_GRACE_S + 90)
            results = [json.loads((Path(tmp) / f"w{k}.json").read_text())
                       for k in range(processes)]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        writer.close()
    row = _summary(agents, processes, write_errors, acked, results, setup_s,
                   replica_rss_idle, replica_rss_end, status_mid)
    row["sessions_max"] = limits.sessions_max
    row["cpu_cores"] = {"replicas": cpu_share[:3], "client_processes": cpu_share[3:],
                        "machine_load_1m": os.getloadavg()[0]}
    return row


def _summary(agents: int, processes: int, write_errors: int,
             acked: dict[int, float], results: list[dict[str, Any]], setup_s: float,
             replica_rss_idle: list[int], replica_rss_end: list[int],
             status_mid: list[Any]) -> dict[str, Any]:
    written = sorted(acked)
    totals = {"delivered": 0, "missing": 0, "duplicated": 0, "out_of_order": 0, "foreign": 0}
    latencies_us: list[int] = []
    lost, late, keepalives, errors = 0, 0, 0, []
    for result in results:
        for agent in result["agents"]:
            seen = [rev for rev, _ in agent["received"]]
            for key, value in delivery(written, seen).items():
                totals[key] += value
            latencies_us += [round((t - acked[rev]) * 1e6) for rev, t in agent["received"]
                             if rev in acked]
            lost += bool(agent["lost"])
            late += agent["late"]
            keepalives += agent["keepalives"]
            if agent["error"]:
                errors.append(agent["error"])
    latencies_us.sort()
    client_growth = sum(r["rss_end"] - r["rss_start"] for r in results)
    replica_growth = [end - idle for idle, end in zip(replica_rss_idle, replica_rss_end,
                                                      strict=True)]
    p99_ms = percentile(latencies_us, 99) / 1e3
    row = {
        "agents": agents, "processes": processes, "setup_s": round(setup_s, 1),
        "writes": len(written), "write_errors": write_errors,
        "events_expected": agents * len(written), **{f"events_{k}": v for k, v in totals.items()},
        "fanout_ms": {"p50": percentile(latencies_us, 50) / 1e3, "p99": p99_ms,
                      "max": latencies_us[-1] / 1e3 if latencies_us else 0.0,
                      "min": latencies_us[0] / 1e3 if latencies_us else 0.0},
        "leases_lost": lost, "keepalives": keepalives, "keepalives_late": late,
        "agent_errors": len(errors), "first_errors": errors[:5],
        "client_rss_bytes_per_agent": round(client_growth / agents),
        "client_rss_bytes_per_process": [r["rss_end"] for r in results],
        "replica_rss_bytes": replica_rss_end,
        "replica_rss_bytes_per_agent": [round(g / agents) for g in replica_growth],
        "replica_connections_watches": [
            None if s is None else [s.client_connections, s.client_watches] for s in status_mid],
    }
    row["targets_met"] = (totals["delivered"] == agents * len(written) and totals["missing"] == 0
                          and totals["duplicated"] == 0 and totals["out_of_order"] == 0
                          and write_errors == 0 and p99_ms <= 100.0 and lost == 0)
    return row


def _print(row: dict[str, Any]) -> None:
    f = row["fanout_ms"]
    print(f"  {row['agents']:>5} agents: {row['events_delivered']}/{row['events_expected']} "
          f"events (missing {row['events_missing']}, dup {row['events_duplicated']}, "
          f"order {row['events_out_of_order']}); fan-out p50 {f['p50']:.1f} ms, "
          f"p99 {f['p99']:.1f} ms, max {f['max']:.1f} ms; leases lost {row['leases_lost']}; "
          f"client {row['client_rss_bytes_per_agent'] / 1024:.0f} KiB/agent, replicas "
          f"{[round(b / 1024) for b in row['replica_rss_bytes_per_agent']]} KiB/agent; "
          f"conns/watches {row['replica_connections_watches']}; cpu {row['cpu_cores']}; "
          f"{'PASS' if row['targets_met'] else 'MISS'}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.thousand", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="1000",
                        help="comma-separated agent counts (default 1000)")
    parser.add_argument("--agents-per-process", type=int, default=250)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--interval-s", type=float, default=0.2)
    parser.add_argument("--ttl-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/thousand.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    cfg = Config(agents=[int(a) for a in args.agents.split(",")],
                 agents_per_process=args.agents_per_process, duration_s=args.duration_s,
                 interval_s=args.interval_s, ttl_s=args.ttl_s, out=args.out)
    rows = []
    for agents in cfg.agents:
        print(f"{agents} agents ...", flush=True)
        try:
            row = run(cfg, agents)
        except Exception as exc:  # a run that could not complete is a row of its own
            row = {"agents": agents, "error": f"{type(exc).__name__}: {exc}",
                   "targets_met": False}
            print(f"  {agents} agents: failed: {row['error']}", flush=True)
        else:
            _print(row)
        rows.append(row)
    result = {**result_header("bench.thousand", cfg), "rows": rows}
    return finish(cfg.out, result, failed=not all(r["targets_met"] for r in rows))


if __name__ == "__main__":
    sys.exit(main())
