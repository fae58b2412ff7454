"""A two-agent LangGraph team on a quorumboard cluster.

Shared notes live in a :class:`BoardStore`, the team's thread in a :class:`BoardCheckpointSaver`.
Alice runs the thread first; Bob, a second worker on the same thread, is refused while Alice
holds it (one writer per thread: a chain of checkpoints must not fork), and continues from
Alice's state once she hands it over. A worker that dies instead of handing over loses the
thread when its claim lapses (``claim_ttl_s`` after its last write).

Run::

    pip install 'quorumboard[langgraph]'
    python examples/langgraph_team.py                      # starts a local 3-replica cluster
    python examples/langgraph_team.py --endpoints 127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
"""

from __future__ import annotations

import argparse
import operator
import sys
import uuid
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from quorumboard.consensus import ClaimHeld, LocalCluster, connect
from quorumboard.consensus.adapters.langgraph import BoardCheckpointSaver, BoardStore

NOTES = ("team", "notes")
"""The store namespace the team shares its notes in."""


class TeamState(TypedDict):
    topic: str
    log: Annotated[list[str], operator.add]


def build_graph(agent: str, saver: BoardCheckpointSaver, store: BoardStore) -> Any:
    """research (a note in the shared store) -> write (a draft from every note so far)."""

    def research(state: TeamState, runtime: Runtime[None]) -> dict[str, Any]:
        assert runtime.store is not None
        topic = state["topic"]
        runtime.store.put(NOTES, topic, {"by": agent, "text": f"{agent} read up on {topic}"})
        return {"log": [f"{agent} researched {topic}"]}

    def write(state: TeamState, runtime: Runtime[None]) -> dict[str, Any]:
        assert runtime.store is not None
        notes = runtime.store.search(NOTES, limit=1000)
        return {"log": [f"{agent} drafted from {len(notes)} note(s)"]}

    graph = StateGraph(TeamState)
    graph.add_node("research", research)
    graph.add_node("write", write)
    graph.add_edge(START, "research")
    graph.add_edge("research", "write")
    graph.add_edge("write", END)
    return graph.compile(checkpointer=saver, store=store)


def run(endpoints: list[str]) -> int:
    thread = {"configurable": {"thread_id": f"report-{uuid.uuid4().hex[:8]}"}}
    with connect(endpoints, "alice") as alice_board, connect(endpoints, "bob") as bob_board:
        alice_saver = BoardCheckpointSaver(alice_board)
        alice = build_graph("alice", alice_saver, BoardStore(alice_board))
        # durability="sync": each checkpoint is on the board before the next step runs, so a
        # refused worker stops before any of its nodes has run.
        state = alice.invoke({"topic": "raft", "log": []}, thread, durability="sync")
        print(f"alice: {state['log']}")

        with BoardCheckpointSaver(bob_board) as bob_saver:
            bob_store = BoardStore(bob_board)
            bob = build_graph("bob", bob_saver, bob_store)
            try:
                bob.invoke({"topic": "leases"}, thread, durability="sync")
            except ClaimHeld as exc:
                print(f"bob: refused: {exc}")
            else:
                print("bob: was NOT refused while alice held the thread")
                return 1
            alice_saver.release(thread["configurable"]["thread_id"])
            print("alice: handed the thread over")
            state = bob.invoke({"topic": "leases"}, thread, durability="sync")
            print(f"bob: took over: {state['log']}")

            history = list(bob.get_state_history(thread))
            ids = [h.config["configurable"]["checkpoint_id"] for h in history]
            parents = [h.parent_config["configurable"]["checkpoint_id"] if h.parent_config
                       else None for h in history]
            if parents != [*ids[1:], None]:
                print(f"history: the chain forked: ids {ids}, parents {parents}")
                return 1
            print(f"history: {len(history)} checkpoints, one chain")
            notes = sorted(f"{n.key}: {n.value['text']}" for n in bob_store.search(NOTES))
            print(f"notes: {notes}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", help="client endpoints host:port,... (default: start a "
                        "local 3-replica cluster)")
    args = parser.parse_args(argv)
    if args.endpoints:
        return run([e.strip() for e in args.endpoints.split(",") if e.strip()])
    with LocalCluster(replicas=3, log_level="warning") as cluster:
        return run(list(cluster.endpoints))


if __name__ == "__main__":
    sys.exit(main())
