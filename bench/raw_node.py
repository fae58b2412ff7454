"""One node of the raw pysyncobj baseline: a bare ``@replicated`` dict, plus its share of agents.

pysyncobj has no client protocol, so the baseline's load runs *inside* the three node processes:
agent threads spread round-robin over the nodes (leader first) call ``put(k, v, sync=True)``,
which returns once the entry is committed and applied on that node. Agents on a follower go
through pysyncobj's own forwarding (``apply_command`` to the leader). This skips the client hop
quorumboard pays, so it is the best case for raw pysyncobj. Pickle is pysyncobj's default
serializer and is used here on purpose: it is the thing we compare against.

Never build a quorumboard ``RaftNode`` here: that installs quorumboard's changes to pysyncobj
(its pickle codec among them) process-wide.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, replicated

from bench.common import (
    PUTS_PER_AGENT_MAX_DEFAULT,
    Window,
    emit,
    read_go,
    run_agents,
    value_of,
    watchdog,
    write_result,
)

READY_TIMEOUT_S = 30.0
PUT_TIMEOUT_S = 10.0


class RawDict(SyncObj):  # type: ignore[misc]
    def __init__(self, self_address: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_address, partners, conf)
        self._data: dict[str, Any] = {}

    @replicated  # type: ignore[untyped-decorator]
    def put(self, key: str, value: Any) -> int:
        self._data[key] = value
        return len(self._data)


def _putter(node: RawDict, agent: str, value: str) -> Callable[[int], None]:
    def put(n: int) -> None:
        node.put(f"bench/{agent}/{n}", value, sync=True, timeout=PUT_TIMEOUT_S)

    return put


def _leader(node: RawDict) -> str | None:
    leader = node._getLeader()
    return None if leader is None else str(leader.address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_node")
    parser.add_argument("--self", dest="self_address", required=True)
    parser.add_argument("--partners", required=True, help="host:port,... of the other nodes")
    parser.add_argument("--batched", action="store_true",
                        help="pysyncobj's default appendEntriesUseBatch=True (else False)")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--puts-max", type=int, default=PUTS_PER_AGENT_MAX_DEFAULT)
    parser.add_argument("--result", required=True)
    parser.add_argument("--lifetime-s", type=float, default=600.0)
    args = parser.parse_args(argv)
    watchdog(args.lifetime_s)

    conf = SyncObjConf(appendEntriesUseBatch=args.batched, dynamicMembershipChange=False)
    node = RawDict(args.self_address, [p for p in args.partners.split(",") if p], conf)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (node.isReady() and _leader(node)):
            if time.monotonic() > deadline:
                print("no leader / not ready in time", file=sys.stderr)
                return 1
            time.sleep(0.02)
        emit({"ready": True, "leader": _leader(node), "self": args.self_address})
        go = read_go()
        if go is None:
            return 1
        window = Window(float(go["start"]), float(go["end"]))
        names = [str(a) for a in go.get("agents", [])]
        value = value_of(args.value_bytes)
        stats = run_agents([(name, _putter(node, name, value)) for name in names], window,
                           args.puts_max)
        write_result(args.result, stats, {"system": "raw", "leader_at_end": _leader(node)})
        emit({"done": True})
        sys.stdin.readline()  # the other nodes may still be serving forwarded puts
        return 0
    finally:
        node.destroy()


if __name__ == "__main__":
    sys.exit(main())
