"""Two agents on one board, with the public Python API: a compare-and-set race on a shared
note, and a task claimed by one agent, lost when it stalls, and finished by the other.

    python examples/two_agents.py                      # starts a local 3-replica cluster
    python examples/two_agents.py --endpoints 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003

Prints one JSON line per step and exits 0 when every step went as the board promises.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from quorumboard.consensus import (
    Board,
    ClaimHeld,
    FencedOut,
    LocalCluster,
    StaleVersion,
    connect,
)

LAPSE_WAIT_S = 10.0


def say(step: str, **fields: Any) -> None:
    print(json.dumps({"step": step, **fields}, sort_keys=True), flush=True)


@contextlib.contextmanager
def endpoints(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with LocalCluster(replicas=3) as cluster:
        cluster.wait_for_leader()
        yield ",".join(cluster.endpoints)


def race(alice: Board, bob: Board, key: str) -> bool:
    """Both read version v and write with expect_version=v: exactly one wins, the other learns
    the winner's version from the error and merges."""
    base = alice.get(key)
    version = base.version if base is not None else 0
    outcomes: dict[str, Any] = {}

    def write(board: Board) -> None:
        try:
            outcomes[board.agent] = board.put(key, {"by": board.agent},
                                              expect_version=version).version
        except StaleVersion as exc:
            outcomes[board.agent] = exc

    threads = [threading.Thread(target=write, args=(b,)) for b in (alice, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    losers = [(a, o) for a, o in outcomes.items() if isinstance(o, StaleVersion)]
    winners = [a for a, o in outcomes.items() if isinstance(o, int)]
    say("race", winners=winners, losers=[a for a, _ in losers])
    if len(winners) != 1 or len(losers) != 1:
        return False
    loser, error = losers[0]
    current = error.current
    merged = (alice if loser == alice.agent else bob).put(
        key, {"by": loser, "after": winners[0]},
        expect_version=current.version if current else 0)
    say("merged", agent=loser, version=merged.version)
    return merged.version == version + 2


def task_handover(alice: Board, bob: Board, task: str) -> bool:
    """Alice claims the task with a short TTL and stalls; Bob is refused until the claim lapses,
    then takes it; Alice's late write is fenced out."""
    claim = alice.claim(task, ttl=1.0)
    try:
        bob.claim(task, ttl=5.0)
        say("claim-held", refused=False)
        return False
    except ClaimHeld as exc:
        say("claim-held", refused=True, owner=exc.current.author if exc.current else None)
    deadline = time.monotonic() + LAPSE_WAIT_S
    taken = None
    while taken is None and time.monotonic() < deadline:
        try:
            taken = bob.claim(task, ttl=5.0)
        except ClaimHeld:
            time.sleep(0.1)
    if taken is None:
        return False
    say("taken-over", agent=bob.agent, fence=taken.fence, old_fence=claim.fence)
    try:
        alice.put(f"{task}/result", "late", fence=claim)
        say("late-write", refused=False)
        return False
    except FencedOut:
        say("late-write", refused=True)
    bob.put(f"{task}/result", "done", fence=taken)
    bob.release(taken)
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoints", default=os.environ.get("QUORUMBOARD_ENDPOINTS"))
    p.add_argument("--prefix", default="example", help="key prefix (reruns use fresh keys)")
    args = p.parse_args()
    run = f"{args.prefix}/{time.time_ns()}"
    secret = os.environ.get("QUORUMBOARD_SECRET") or None
    with endpoints(args.endpoints) as eps:
        alice = connect(eps, agent="alice", secret=secret)
        bob = connect(eps, agent="bob", secret=secret)
        try:
            ok = race(alice, bob, f"{run}/note") and task_handover(alice, bob, f"{run}/task")
        finally:
            alice.close()
            bob.close()
    say("done", ok=ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
