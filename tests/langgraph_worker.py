"""A LangGraph worker in its own process, for the takeover test: it runs the example team's
graph once on a thread (so it holds the thread's claim), prints ``READY``, then keeps the claim
alive without writing until the test kills it (SIGKILL) or closes the pipe.

Usage: python tests/langgraph_worker.py ENDPOINTS THREAD AGENT CLAIM_TTL_S
"""

from __future__ import annotations

import importlib.util
import select
import sys
from pathlib import Path

from quorumboard.consensus import connect
from quorumboard.consensus.adapters.langgraph import BoardCheckpointSaver, BoardStore

RENEWALS_MAX = 10_000
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "langgraph_team.py"


def main() -> int:
    endpoints, thread, agent, ttl = sys.argv[1:5]
    spec = importlib.util.spec_from_file_location("langgraph_team", EXAMPLE)
    assert spec is not None and spec.loader is not None
    team = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = team  # typing.get_type_hints looks the module up there
    spec.loader.exec_module(team)
    board = connect(endpoints, agent)
    saver = BoardCheckpointSaver(board, claim_ttl_s=float(ttl))
    graph = team.build_graph(agent, saver, BoardStore(board))
    graph.invoke({"topic": agent, "log": []}, {"configurable": {"thread_id": thread}},
                 durability="sync")
    print("READY", flush=True)
    # Alive but idle: keep the thread (as a worker waiting on a slow model call would) until
    # killed, or until the test closes the pipe; bounded by the count as well.
    for _ in range(RENEWALS_MAX):
        ready, _, _ = select.select([sys.stdin], [], [], float(ttl) / 6)
        if ready and not sys.stdin.readline():
            break
        if saver.keepalive() != [thread]:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
