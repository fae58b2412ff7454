"""A quorumboard load process: ``--agents`` agent threads, each with its own ``Board``.

Run by ``bench.throughput`` and ``bench.lone`` (``python -m bench.worker ...``); speaks the line
protocol described in :mod:`bench.common`. Each agent does sequential ``board.put`` calls of
distinct keys (``bench/<agent>/<n>``, so the default reject-stale policy simply creates them)
through the real client: its own TCP connection, session and exactly-once numbering. With
``--op get`` each agent instead reads one key it wrote, with linearizable ``board.get`` calls.
With ``--embedded`` the process first starts ``LocalCluster(replicas=1, embedded=True)`` and
its agents use that: the replica runs in the agents' own process, as in a prototype.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable

from bench.common import (
    GO_WAIT_S_MAX,
    PUTS_PER_AGENT_MAX_DEFAULT,
    Window,
    emit,
    read_go,
    run_agents,
    value_of,
    watchdog,
    write_result,
)
from quorumboard.consensus import Board, LocalCluster, connect


def _putter(board: Board, agent: str, value: str) -> Callable[[int], None]:
    def put(n: int) -> None:
        board.put(f"bench/{agent}/{n}", value)

    return put


def _getter(board: Board, agent: str, _value: str) -> Callable[[int], None]:
    key = f"bench/{agent}/warm"

    def get(_n: int) -> None:
        if board.get(key) is None:
            raise LookupError(f"{key} vanished")

    return get


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--endpoints", default="", help="host:port,... client endpoints")
    parser.add_argument("--embedded", action="store_true",
                        help="start LocalCluster(replicas=1, embedded=True) here and use it")
    parser.add_argument("--op", choices=("put", "get"), default="put")
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--name", required=True, help="agent name prefix (unique per process)")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--puts-max", type=int, default=PUTS_PER_AGENT_MAX_DEFAULT)
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    parser.add_argument("--lifetime-s", type=float, default=600.0, help="hard exit after this")
    args = parser.parse_args(argv)
    if not args.embedded and not args.endpoints:
        parser.error("--endpoints or --embedded")
    watchdog(args.lifetime_s)
    with contextlib.ExitStack() as stack:
        endpoints = args.endpoints
        if args.embedded:
            cluster = stack.enter_context(LocalCluster(replicas=1, embedded=True))
            endpoints = ",".join(cluster.endpoints)
        return _run(args, endpoints)


def _run(args: argparse.Namespace, endpoints: str) -> int:
    value = value_of(args.value_bytes)
    names = [f"{args.name}-a{i}" for i in range(args.agents)]
    boards = [connect(endpoints, agent=name) for name in names]
    make = _getter if args.op == "get" else _putter
    try:
        # Connect, find the leader and open the session outside the measurement.
        for name, board in zip(names, boards, strict=True):
            board.put(f"bench/{name}/warm", value)
        emit({"ready": True, "agents": len(names)})
        go = read_go()
        if go is None:
            return 1
        window = Window(float(go["start"]), float(go["end"]))
        if window.end - time.monotonic() > GO_WAIT_S_MAX:
            return 1
        stats = run_agents([(name, make(board, name, value))
                            for name, board in zip(names, boards, strict=True)],
                           window, args.puts_max)
        write_result(args.result, stats, {"system": "quorumboard"})
        emit({"done": True})
        sys.stdin.readline()  # wait for the orchestrator's "exit" (or EOF) before closing
        return 0
    finally:
        for board in boards:
            try:
                board.close()
            except Exception as exc:
                print(f"closing {board.agent}: {exc}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
