"""The ``quorumboard`` command: thin argument parsing over the public API.

Exit codes mean something to scripts: 0 ok, 1 other error, 2 usage, 3 conflict (refused by a
policy, a stale version or a fence), 4 not found, 5 unavailable / outcome unknown, 6 invalid
input, 9 authentication failed (the cluster secret does not match: retrying cannot help), 10
space quota exceeded (delete keys to free space, then retry);
``chaos``: 0 checked and valid, 7 violation found, 8 could not decide within the limit.
``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from quorumboard.consensus.client.board import Board, connect
from quorumboard.consensus.cluster import LocalCluster
from quorumboard.consensus.core.model import Claim, HistoryRecord, LeaseStatus, PolicyBinding
from quorumboard.consensus.errors import (
    AuthError,
    BoardError,
    Conflict,
    InvalidCommand,
    NotFound,
    RevisionCompacted,
    SpaceQuotaExceeded,
    Unavailable,
)
from quorumboard.consensus.logs import configure_logging

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_CONFLICT, EXIT_NOT_FOUND, EXIT_UNAVAILABLE, EXIT_INVALID = (
    0, 1, 2, 3, 4, 5, 6)
EXIT_AUTH = 9
EXIT_SPACE_QUOTA = 10


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, AuthError):
        return EXIT_AUTH
    if isinstance(exc, SpaceQuotaExceeded):
        return EXIT_SPACE_QUOTA
    if isinstance(exc, Conflict):
        return EXIT_CONFLICT
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, Unavailable):
        return EXIT_UNAVAILABLE
    if isinstance(exc, InvalidCommand):
        return EXIT_INVALID
    return EXIT_ERROR


def _dump(obj: Any) -> str:
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    elif isinstance(obj, list):
        obj = [o.model_dump(mode="json") if hasattr(o, "model_dump") else o for o in obj]
    return json.dumps(obj, sort_keys=True)


def _secret() -> str | None:
    return os.environ.get("QUORUMBOARD_SECRET") or None


# ----------------------------------------------------------------------------------- demo


def _say(msg: str) -> None:
    print(msg, flush=True)


def demo(replicas: int, data_dir: str | None, agents: int, seconds: float, *,
         dashboard_port: int | None = None) -> int:
    """Bring up a cluster, let agents write, SIGKILL the leader mid-run, bring it back, and
    show that every replica ends with the same digest and no acknowledged edit was lost.

    The agents are the chaos harness's counter workload (increments under the ``merge``
    counter policy, each retried with its session and seq after a lost reply), recorded as a
    history and judged by the same checks a chaos run uses: exactly-once (the final count lies
    between the acknowledged increments and those plus the ones whose outcome is unknown) and
    linearizability. One definition of each, here and in ``quorumboard chaos``.

    ``dashboard_port``: serve the dashboard of the demo's cluster on 127.0.0.1 (0: any free
    port), print its address, and after the run keep cluster and page up until Ctrl-C."""
    from quorumboard.consensus.testing.history import HistoryWriter
    from quorumboard.consensus.testing.workload import CounterWorkload

    configure_logging("warning")
    t0 = time.monotonic()
    _say(f"== starting {replicas} replicas on 127.0.0.1 (separate processes, real TCP) ==")
    with LocalCluster(replicas=replicas, data_dir=data_dir) as cluster, \
            contextlib.ExitStack() as page:
        leader = cluster.wait_for_leader()
        _say(f"   client endpoints: {', '.join(cluster.endpoints)}")
        _say(f"   leader: r{leader}   (up in {time.monotonic() - t0:.1f}s)")
        if dashboard_port is not None:
            _say(f"   dashboard: {page.enter_context(_demo_dashboard(cluster, dashboard_port))}")
        workload = CounterWorkload(clients=agents, keys=2, ops_per_client=100_000,
                                   duration_s=seconds, rate_per_s=DEMO_RATE_PER_S,
                                   read_share=0.2, seed=1, prefix="team/edits/")
        _say(f"   {workload.prefix} -> merge(counter): each agent adds 1 at a time, and "
             "retries a lost reply under the same session and seq (exactly-once)")
        history_path = cluster.data_dir / f"demo-history-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        failover: dict[str, float] = {}

        def fault() -> None:
            """Mid-run: SIGKILL the leader, time the first commit after it, restart it."""
            stop.wait(seconds / 3)
            victim = cluster.wait_for_leader()
            _say(f"== SIGKILL the leader r{victim} while the agents keep writing ==")
            killed_at = time.monotonic()
            cluster.kill(victim)
            probe = cluster.board(agent="probe", timeout_s=30.0)
            probe.put(f"team/failover/{victim}", {"killed": victim})
            failover["first_commit_s"] = time.monotonic() - killed_at
            _say(f"   new leader r{cluster.wait_for_leader()}; first commit "
                 f"{failover['first_commit_s']:.2f}s after the kill")
            stop.wait(seconds / 3)
            _say(f"== restart r{victim} from its data dir; it catches up from the log ==")
            cluster.restart(victim)

        stop = threading.Event()
        faults = threading.Thread(target=fault, name="demo-fault", daemon=True)
        _say(f"== {agents} agents writing concurrently for {seconds:g}s ==")
        with HistoryWriter(history_path) as history:
            faults.start()
            stats = workload.run(
                writer_for=lambda name: cluster.board(agent=f"agent-{name}", timeout_s=20.0),
                reader_for=lambda name, _i: cluster.board(agent=f"agent-{name}-r",
                                                          timeout_s=20.0),
                history=history)
            stop.set()
            faults.join(60)
        converged, digests = cluster.convergence(30.0)
        findings, _result = workload.check(history_path)
        _say("== result ==")
        for i, d in enumerate(digests):
            _say(f"   r{i} digest {d}")
        kept = (f"history in {history_path}" if data_dir is not None
                else "pass --data-dir to keep the history")
        _say(f"   operations: {stats.ok} ok, {stats.info} unknown outcome (in flight at the "
             f"kill), {stats.fail} refused; {kept}")
        for f in findings:
            _say(f"   {f.check}: {f.verdict}: {f.detail}")
        ok = converged == "converged" and all(f.verdict == "ok" for f in findings)
        _say("   OK: every replica has the same state and no acknowledged update was lost"
             if ok else f"   FAILED: replicas {converged}, or a check above failed")
        if dashboard_port is not None:
            _say("   the cluster and the dashboard stay up: Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
        return EXIT_OK if ok else EXIT_ERROR


@contextlib.contextmanager
def _demo_dashboard(cluster: LocalCluster, port: int) -> Iterator[str]:
    """The dashboard of ``cluster`` on 127.0.0.1:``port``, for as long as the block runs."""
    try:
        serve = importlib.import_module("quorumboard.consensus.dashboard.serve")
    except ModuleNotFoundError as exc:
        raise InvalidCommand(f"demo --dashboard needs Starlette and uvicorn ({exc}): "
                             "pip install 'quorumboard[dashboard]'") from None
    app = serve.live_app(cluster.endpoints, secret=cluster.secret)
    server = serve.DashboardServer(app, port=port)
    try:
        yield server.start()
    finally:
        server.stop()


DEMO_RATE_PER_S = 400.0
"""The demo's agents together: a pace that shows the failover without saturating 2 cores."""


# ------------------------------------------------------------------------------ commands


def _with_board(args: argparse.Namespace, fn: Callable[[Board], Any]) -> int:
    endpoints = args.endpoints or os.environ.get("QUORUMBOARD_ENDPOINTS")
    if not endpoints:
        print("error: --endpoints (or QUORUMBOARD_ENDPOINTS) is required", file=sys.stderr)
        return EXIT_USAGE
    board = connect(endpoints, agent=args.agent, secret=_secret(), timeout_s=args.timeout)
    try:
        result = fn(board)
    except RevisionCompacted as exc:
        print(f"error: {exc} (compact revision {exc.compact_revision})", file=sys.stderr)
        return EXIT_NOT_FOUND
    except BoardError as exc:
        if args.json:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                              "current": _current(exc)}))
        else:
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return _exit_code(exc)
    finally:
        board.close()
    if result is None:
        return EXIT_OK
    if isinstance(result, int):
        return result
    print(_dump(result) if args.json else _human(result))
    return EXIT_OK


def _current(exc: BoardError) -> Any:
    current = getattr(exc, "current", None)
    return current.model_dump(mode="json") if current is not None else None


def _human(result: Any) -> str:
    if isinstance(result, list):
        return "\n".join(_human(r) for r in result) if result else "(none)"
    if isinstance(result, HistoryRecord):
        return _human_history(result)
    if isinstance(result, Claim):
        return (f"{result.key}  owner {result.owner}, fence {result.fence}, lease "
                f"{result.lease} (ttl {result.ttl:g}s)")
    if isinstance(result, LeaseStatus):
        left = "?" if result.time_left_s is None else f"{result.time_left_s:.1f}s"
        held = "".join(f", {name} {', '.join(keys)}" for name, keys in
                       (("keys", result.keys), ("claims", result.claims)) if keys)
        return (f"lease {result.id}  owner {result.owner}, {left} left of {result.ttl:g}s, "
                f"{result.refreshes} keepalives{held}")
    if isinstance(result, PolicyBinding):
        params = f" {json.dumps(result.params, sort_keys=True)}" if result.params else ""
        return f"{result.prefix or '(every key)'} -> {result.name}{params}"
    data = result.model_dump(mode="json") if hasattr(result, "model_dump") else result
    if isinstance(data, dict) and "key" in data and "version" in data and "value" in data:
        return (f"{data['key']} = {json.dumps(data['value'])}  "
                f"(version {data['version']}, by {data['author']}, rev {data['mod_revision']})")
    return json.dumps(data, indent=2, sort_keys=True)


def _human_history(record: HistoryRecord) -> str:
    """One audit line: a version written (``put`` / ``delete``) or an attempt the policy refused
    or held (``rejected`` / ``pending``, which changed nothing and have no version of their own)."""
    head = f"rev {record.revision} {record.outcome} by {record.author}"
    decided = f"[{record.policy}: {record.decision}]"
    value = _shown_value(record.value, record.value_sha256)
    if record.outcome == "put":
        return f"{head} -> version {record.version} {value} {decided}"
    if record.outcome == "delete":
        return f"{head} -> version {record.version} {decided}"
    return f"{head} (key at version {record.version}) {decided}"


def _shown_value(value: Any, sha256: str | None) -> str:
    """A value as printed, or, past the board's retained-value bound, that it was dropped."""
    return f"(value dropped, sha256 {sha256})" if sha256 is not None else json.dumps(value)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word is a string


def _cmd_get(args: argparse.Namespace) -> int:
    def go(board: Board) -> Any:
        entry = board.get(args.key, stale=args.stale)
        if entry is None:
            print(f"not found: {args.key}", file=sys.stderr)
            return EXIT_NOT_FOUND
        return entry

    return _with_board(args, go)


def _cmd_watch(args: argparse.Namespace) -> int:
    def go(board: Board) -> None:
        events = board.watch(args.prefix, args.start_revision, idle_timeout_s=args.idle_timeout)
        for count, ev in enumerate(events, start=1):
            if args.json:
                print(_dump(ev), flush=True)
            else:
                value = _shown_value(ev.entry.value, ev.value_sha256) if ev.kind == "put" else ""
                print(f"rev {ev.revision} {ev.kind} {ev.key} {value} ({ev.cause})", flush=True)
            if args.count and count >= args.count:
                return

    return _with_board(args, go)


def _cmd_up(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    try:  # a stop asked for at any point (even while the banner prints) is a clean stop
        with LocalCluster(replicas=args.replicas, data_dir=args.data_dir, fsync=args.fsync,
                          secret=_secret(), connections_max=args.connections_max,
                          watch_buffer_bytes=args.watch_buffer_bytes,
                          poll_spin_us=args.poll_spin_us) as cluster:
            leader = cluster.wait_for_leader()
            print(f"quorumboard: {args.replicas} replicas up; leader r{leader}", flush=True)
            print(f"endpoints: {','.join(cluster.endpoints)}", flush=True)
            print(f"data dir: {cluster.data_dir}   (Ctrl-C to stop)", flush=True)
            threading.Event().wait()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    return EXIT_OK


def _cmd_chaos(args: argparse.Namespace) -> int:
    from quorumboard.consensus.testing.chaos import (
        load_scenario,
        print_recheck,
        print_summary,
        recheck_chaos,
        run_chaos,
        scenario_from,
    )

    if args.recheck is not None:
        configure_logging(args.log_level)
        report = recheck_chaos(Path(args.recheck), args.check_time_limit)
        print(report.model_dump_json(indent=2) if args.json else print_recheck(report),
              flush=True)
        return report.exit_code

    overrides = {
        "replicas": args.replicas, "workload": args.workload, "clients": args.clients,
        "rate": args.rate, "duration_s": args.duration, "keys": args.keys, "seed": args.seed,
        "interval_s": args.interval, "fault_s": args.fault_duration,
        "check_time_limit_s": args.check_time_limit,
        "compaction_entries": args.compaction_entries, "planted_bug": args.planted_bug,
        "nemesis": None if args.nemesis is None else
        [k.strip() for k in args.nemesis.split(",") if k.strip()],
    }
    scenario = (load_scenario(Path(args.scenario), **overrides) if args.scenario
                else scenario_from({k: v for k, v in overrides.items() if v is not None},
                                   "arguments"))
    out = Path(args.out) if args.out else Path(
        "runs", f"chaos-{scenario.seed}-{time.strftime('%Y%m%d-%H%M%S')}")
    configure_logging(args.log_level)
    report = run_chaos(scenario, out, progress=lambda m: None if args.json else print(
        f"chaos: {m}", flush=True))
    print(report.model_dump_json(indent=2) if args.json
          else print_summary(report, out / "summary.json"), flush=True)
    return report.exit_code


def _cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from quorumboard.consensus.replica.machine import ReplicaConfig, run

    peers: dict[str, str] = {}
    for item in args.peer or []:
        raft, sep, client = item.partition("=")
        if not sep:
            print(f"error: --peer wants RAFT_ADDR=CLIENT_ADDR, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        peers[raft] = client
    try:
        config = ReplicaConfig(
            name=args.name or args.raft_address, raft_address=args.raft_address,
            client_address=args.client_address, peers=peers, data_dir=Path(args.data_dir),
            fsync=args.fsync, policy_modules=args.policy_module or [],
            secret_env=args.secret_env, log_level=args.log_level,
            **{name: getattr(args, name) for name in _PER_REPLICA
               if getattr(args, name) is not None})
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        print(f"error: --{where.replace('_', '-')}: {first['msg']} (got {first.get('input')!r})",
              file=sys.stderr)
        return EXIT_USAGE
    configure_logging(args.log_level)
    secret = os.environ.get(config.secret_env)
    return run(config, secret=secret.encode() if secret else None)


_PER_REPLICA = ("connections_max", "watch_buffer_bytes", "poll_spin_us")


def _per_replica_options(p: argparse.ArgumentParser) -> None:
    """The settings each replica may choose for itself (not ``Limits``, which all share)."""
    p.add_argument("--connections-max", type=int, default=None,
                   help="client connections each replica serves at once (default 1024); past "
                   "it a client gets TooManyConnections")
    p.add_argument("--watch-buffer-bytes", type=int, default=None,
                   help="per watch: bytes of events sent and not yet consumed before the watch "
                   "is cancelled as too slow (default 8 MiB)")
    p.add_argument("--poll-spin-us", type=int, default=None,
                   help="while one client is served, poll the sockets this many microseconds "
                   "before sleeping (default 200; 0: never): faster lone-client requests for "
                   "CPU time")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quorumboard", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="local cluster, agents, leader SIGKILL, recovery, digests")
    d.add_argument("--replicas", type=int, default=3)
    d.add_argument("--agents", type=int, default=4)
    d.add_argument("--seconds", type=float, default=6.0)
    d.add_argument("--data-dir", default=None)
    d.add_argument("--dashboard", action="store_true",
                   help="watch it live in the browser (the [dashboard] extra): prints the "
                   "page's address, and keeps the cluster and the page up after the run "
                   "until Ctrl-C")
    d.add_argument("--port", type=int, default=8080, help="the dashboard's port (0: any free)")

    u = sub.add_parser("up", help="run a local cluster in the foreground until Ctrl-C")
    u.add_argument("--replicas", type=int, default=3)
    u.add_argument("--data-dir", default="./quorumboard-data")
    u.add_argument("--fsync", action="store_true",
                   help="acknowledge a write only once a majority has it on disk (fdatasync)")
    u.add_argument("--log-level", default="warning")
    _per_replica_options(u)

    s = sub.add_parser("serve", help="run one replica of a multi-machine cluster")
    s.add_argument("--name", default=None)
    s.add_argument("--raft-address", required=True, help="host:port peers reach this replica on")
    s.add_argument("--client-address", required=True, help="host:port clients connect to")
    s.add_argument("--peer", action="append", metavar="RAFT=CLIENT",
                   help="another member: its raft address = its client address (repeat)")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--fsync", action="store_true",
                   help="acknowledge a write only once a majority has it on disk (fdatasync)")
    s.add_argument("--policy-module", action="append", help="import to register custom policies")
    s.add_argument("--secret-env", default="QUORUMBOARD_SECRET",
                   help="environment variable holding the shared secret (>= 16 bytes)")
    s.add_argument("--log-level", default="info")
    _per_replica_options(s)

    ch = sub.add_parser("chaos", help="fault-injection run: workload + nemesis + checks",
                        description="Run a local cluster under a workload while a nemesis "
                        "injects faults; record and check the history. Flags override "
                        "--scenario file values.")
    ch.add_argument("--scenario", default=None, help="TOML file with the Scenario fields")
    ch.add_argument("--replicas", type=int, default=None)
    ch.add_argument("--workload", default=None,
                    help="cas-register (default), counter, set, lww-register, watch, claims")
    ch.add_argument("--clients", type=int, default=None)
    ch.add_argument("--rate", type=float, default=None, help="operations/s in total")
    ch.add_argument("--duration", type=float, default=None, help="seconds of workload")
    ch.add_argument("--keys", type=int, default=None)
    ch.add_argument("--nemesis", default=None,
                    help="comma list of kill,pause,partition,delay,loss,clock,corrupt")
    ch.add_argument("--interval", type=float, default=None, help="quiet seconds before a fault")
    ch.add_argument("--fault-duration", type=float, default=None, help="seconds a fault lasts")
    ch.add_argument("--seed", type=int, default=None)
    ch.add_argument("--check-time-limit", type=float, default=None)
    ch.add_argument("--compaction-entries", type=int, default=None,
                    help="compact the Raft log past this many entries (default 20000)")
    ch.add_argument("--planted-bug", default=None,
                    help="negative control: run replicas with this bug planted (stale-reads, "
                    "retry-bypass, watch-gap, divergent-apply, fence-bypass, lost-write; "
                    "unsynced-acks shows only under power cuts); a sound check judges the run "
                    "invalid")
    ch.add_argument("--out", default=None, help="output dir (default runs/chaos-SEED-TIME)")
    ch.add_argument("--json", action="store_true", help="print verdict.json")
    ch.add_argument("--recheck", default=None, metavar="DIR",
                    help="check a recorded run (a chaos --out folder) again, offline, with "
                    "--check-time-limit; writes DIR/recheck.json, leaves the run's verdict")
    ch.add_argument("--log-level", default="warning")

    for name, entry in sorted(_registered().items()):
        sub.add_parser(name, add_help=False,
                       help=f"registered by {entry.value.split(':')[0]} ('{name} --help')")
    sub.add_parser("dashboard", add_help=False,
                   help="a read-only page over a live cluster or a run's folder (the "
                        "[dashboard] extra): 'dashboard --endpoints ...' or 'dashboard --run DIR'")
    sub.add_parser("mcp", add_help=False,
                   help="serve one agent's seat at the board over MCP (stdio or HTTP; the "
                        "[mcp] extra): 'mcp --endpoints ... --agent NAME'")

    def client(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_)
        c.add_argument("--endpoints", default=None, help="host:port,... (or QUORUMBOARD_ENDPOINTS)")
        c.add_argument("--agent", default="cli")
        c.add_argument("--json", action="store_true")
        c.add_argument("--timeout", type=float, default=15.0)
        return c

    c = client("put", "write a value (JSON, or a bare string)")
    c.add_argument("key")
    c.add_argument("value")
    c.add_argument("--expect-version", type=int, default=None)
    c.set_defaults(run=lambda a: _with_board(a, lambda b: b.put(
        a.key, _parse_value(a.value), expect_version=a.expect_version)))
    c = client("get", "read a key (linearizable unless --stale)")
    c.add_argument("key")
    c.add_argument("--stale", action="store_true")
    c.set_defaults(run=_cmd_get)
    c = client("delete", "delete a key")
    c.add_argument("key")
    c.add_argument("--expect-version", type=int, default=None)
    c.set_defaults(run=lambda a: _with_board(a, lambda b: b.delete(
        a.key, expect_version=a.expect_version)))
    c = client("ls", "list keys under a prefix")
    c.add_argument("prefix", nargs="?", default="")
    c.add_argument("--stale", action="store_true")
    c.set_defaults(run=lambda a: _with_board(a, lambda b: b.list(a.prefix, stale=a.stale)))
    c = client("watch", "stream committed events under a prefix")
    c.add_argument("prefix", nargs="?", default="")
    c.add_argument("--start-revision", type=int, default=None)
    c.add_argument("--idle-timeout", type=float, default=None, help="stop after idle seconds")
    c.add_argument("--count", type=int, default=0, help="stop after this many events")
    c.set_defaults(run=_cmd_watch)
    c = client("history", "audit trail of a key: versions and refusals")
    c.add_argument("key")
    c.set_defaults(run=lambda a: _with_board(a, lambda b: b.history(a.key)))
    c = client("claims", "claims under a prefix: owner, fence, lease")
    c.add_argument("prefix", nargs="?", default="")
    c.add_argument("--stale", action="store_true")
    c.set_defaults(run=lambda a: _with_board(a, lambda b: b.claims(a.prefix, stale=a.stale)))
    c = client("leases", "leases with their time left as the leader counts it")
    c.set_defaults(run=lambda a: _with_board(a, lambda b: b.leases()))
    c = client("policies", "the conflict policies bound to prefixes")
    c.add_argument("--stale", action="store_true")
    c.set_defaults(run=lambda a: _with_board(a, lambda b: b.policies(stale=a.stale)))
    c = client("status", "the connected replica's view of the cluster")
    c.set_defaults(run=lambda a: _with_board(a, lambda b: b.status()))
    return p


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (what ``timeout``, ``docker stop``, systemd and a closed terminal send)
    stop ``up`` and ``demo`` the way Ctrl-C does: the cluster's ``with`` block runs and every
    replica is stopped, instead of the process vanishing with its replicas still running."""
    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # A signal ignored on entry stays ignored: ``nohup quorumboard up`` must survive a hangup.
    saved = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)
             if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


COMMANDS_GROUP = "quorumboard.commands"
"""Entry-point group through which other packages add subcommands: ``quorumboard experiment``
(the agents package) and ``quorumboard prove`` (the proofs package) register there, so this
package never imports the packages built on it. A command is ``main(argv) -> exit code``."""


def _registered() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=COMMANDS_GROUP)}


def _optional_main(module: str, extra: str, needs: str) -> Callable[[Sequence[str]], int] | None:
    """The ``main`` of a command that lives in an extra: imported only for that command, never
    by the core; ``None`` after saying which extra to install when it is missing."""
    try:
        loaded = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        print(f"error: quorumboard {extra} needs {needs} ({exc}): "
              f"pip install 'quorumboard[{extra}]'", file=sys.stderr)
        return None
    command: Callable[[Sequence[str]], int] = loaded.main
    return command


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    registered = _registered().get(argv[0]) if argv else None
    if registered is not None:
        command: Callable[[Sequence[str]], int] = registered.load()
        return command(argv[1:])
    if argv[:1] == ["dashboard"]:
        serve_dashboard = _optional_main("quorumboard.consensus.dashboard.serve", "dashboard",
                                         "Starlette and uvicorn")
        if serve_dashboard is None:
            return EXIT_USAGE
        with _terminate_as_interrupt():
            return serve_dashboard(argv[1:])
    if argv[:1] == ["mcp"]:
        serve_mcp = _optional_main("quorumboard.consensus.adapters.mcp", "mcp", "the MCP SDK")
        return EXIT_USAGE if serve_mcp is None else serve_mcp(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            with _terminate_as_interrupt():
                return demo(args.replicas, args.data_dir, args.agents, args.seconds,
                            dashboard_port=args.port if args.dashboard else None)
        if args.command == "up":
            with _terminate_as_interrupt():
                return _cmd_up(args)
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "chaos":
            return _cmd_chaos(args)
        code: int = args.run(args)
        return code
    except KeyboardInterrupt:
        return EXIT_ERROR
    except BoardError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return _exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
