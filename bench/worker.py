"""A quorumboard load process: ``--agents`` agent threads, each with its own ``Board``.

Run by ``bench.throughput`` (``python -m bench.worker ...``); speaks the line protocol described
in :mod:`bench.common`. Each agent does sequential ``board.put`` calls of distinct keys
(``bench/<agent>/<n>``, so the default reject-stale policy simply creates them) through the real
client: its own TCP connection, session and exactly-once numbering.
"""

from __future__ import annotations

import argparse
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
from quorumboard.consensus import Board, connect


def _putter(board: Board, agent: str, value: str) -> Callable[[int], None]:
    def put(n: int) -> None:
        board.put(f"bench/{agent}/{n}", value)

    return put


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--endpoints", required=True, help="host:port,... client endpoints")
    parser.add_argument("--agents", type=int, required=True)
    parser.add_argument("--name", required=True, help="agent name prefix (unique per process)")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--puts-max", type=int, default=PUTS_PER_AGENT_MAX_DEFAULT)
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    parser.add_argument("--lifetime-s", type=float, default=600.0, help="hard exit after this")
    args = parser.parse_args(argv)
    watchdog(args.lifetime_s)

    value = value_of(args.value_bytes)
    names = [f"{args.name}-a{i}" for i in range(args.agents)]
    boards = [connect(args.endpoints, agent=name) for name in names]
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
        stats = run_agents([(name, _putter(board, name, value))
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
