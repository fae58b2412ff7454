"""A test replica: RaftNode driving a counter dict, controlled by JSON lines on stdin/stdout.

Run as ``python tests/raft_replica_main.py '<json config>'``. Each stdin line is one request
(``{"op": ...}``); each stdout line is its JSON reply. Logs go to stderr. No pickle anywhere.
With ``QUORUMBOARD_FORBID_PICKLE=1`` in its environment it forbids unpickling; with
``QUORUMBOARD_FAULT_SKIP_COMPACTION_TRUNCATE=1`` it runs the harness's faulty node.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgpack
import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quorumboard.consensus.raft.node import ProposeFailure, RaftNode, RaftSettings, forbid_pickle
from quorumboard.consensus.testing.replica import SkipFirstCompactionTruncate

FORBID_PICKLE_ENV = "QUORUMBOARD_FORBID_PICKLE"
FAULT_SKIP_TRUNCATE_ENV = "QUORUMBOARD_FAULT_SKIP_COMPACTION_TRUNCATE"
"""Fault: skip the first journal truncation after a snapshot (a crash between the two steps)."""

REQUEST_TIMEOUT_S = 30.0


class CounterMachine:
    """Deterministic dict of counters; the key "boom" makes apply raise (guard test)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.applied = 0

    def apply(self, payload: bytes) -> object:
        key, delta = msgpack.unpackb(payload, raw=False)
        if key == "boom":
            raise ValueError("boom requested")
        self.counts[key] = self.counts.get(key, 0) + int(delta)
        self.applied += 1
        return self.counts[key]

    def snapshot(self) -> bytes:
        return bytes(
            msgpack.packb({"counts": self.counts, "applied": self.applied}, use_bin_type=True)
        )

    def restore(self, data: bytes) -> None:
        state = msgpack.unpackb(data, raw=False)
        self.counts = dict(state["counts"])
        self.applied = int(state["applied"])


class Waiter:
    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: object = None
        self.failure: ProposeFailure | None = None

    def __call__(self, result: object, failure: ProposeFailure | None) -> None:
        self.result = result
        self.failure = failure
        self.event.set()


def _payload(key: str, delta: int) -> bytes:
    return bytes(msgpack.packb([key, delta], use_bin_type=True))


def _jsonable(value: object) -> object:
    if isinstance(value, int | str | float | bool) or value is None:
        return value
    return repr(value)


def _on_tick(node: RaftNode, fn: Any, timeout_s: float = REQUEST_TIMEOUT_S) -> Any:
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        box["value"] = fn()
        done.set()

    node.call_in_tick(run)
    if not done.wait(timeout_s):
        raise TimeoutError("tick thread did not run the call")
    return box["value"]


def handle(node: RaftNode, machine: CounterMachine, request: dict[str, Any]) -> dict[str, Any]:
    op = request["op"]
    if op == "status":
        return node.status().model_dump()
    if op == "state":
        counts, applied = _on_tick(node, lambda: (dict(machine.counts), machine.applied))
        return {"counts": counts, "applied": applied, "last_applied": node.status().last_applied}
    if op == "propose":
        ok = 0
        failures: list[str] = []
        results: list[object] = []
        for _ in range(int(request.get("count", 1))):
            waiter = Waiter()
            node.propose(_payload(request["key"], int(request.get("delta", 1))), waiter)
            if not waiter.event.wait(REQUEST_TIMEOUT_S):
                failures.append("harness_timeout")
                break
            if waiter.failure is None:
                ok += 1
                results.append(_jsonable(waiter.result))
            else:
                failures.append(waiter.failure.value)
                if request.get("stop_on_failure", True):
                    break
        return {"ok": ok, "failures": failures, "results": results[-3:]}
    if op == "propose_concurrent":
        count = int(request["count"])
        window = threading.Semaphore(int(request.get("window", 500)))
        all_done = threading.Event()
        lock = threading.Lock()
        tally = {"ok": 0, "failed": 0, "finished": 0}

        def done(_result: object, failure: ProposeFailure | None) -> None:
            with lock:
                tally["ok" if failure is None else "failed"] += 1
                tally["finished"] += 1
                if tally["finished"] == count:
                    all_done.set()
            window.release()

        started = time.perf_counter()
        for i in range(count):
            if not window.acquire(timeout=REQUEST_TIMEOUT_S):
                break
            node.propose(_payload(f"k{i % 16}", 1), done)
        all_done.wait(REQUEST_TIMEOUT_S)
        elapsed_s = time.perf_counter() - started
        return dict(tally, elapsed_s=elapsed_s)
    if op == "latency":
        samples: list[float] = []
        for _ in range(int(request["count"])):
            waiter = Waiter()
            started = time.perf_counter()
            node.propose(_payload("lat", 1), waiter)
            if not waiter.event.wait(REQUEST_TIMEOUT_S) or waiter.failure is not None:
                return {"error": str(waiter.failure), "samples": len(samples)}
            samples.append(time.perf_counter() - started)
        samples.sort()
        return {
            "p50_ms": samples[len(samples) // 2] * 1e3,
            "p99_ms": samples[int(len(samples) * 0.99)] * 1e3,
            "samples": len(samples),
        }
    if op == "barrier":
        waiter = Waiter()
        node.barrier(waiter)
        waiter.event.wait(REQUEST_TIMEOUT_S)
        return {"failure": waiter.failure.value if waiter.failure else None}
    if op == "compact":
        node.compact_now()
        return {}
    if op == "pickle_forbidden":
        import pickle

        try:
            pickle.loads(pickle.dumps(1))
        except pickle.UnpicklingError:
            return {"forbidden": True}
        return {"forbidden": False}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    config = json.loads(sys.argv[1])
    secret = config.pop("secret_hex", None)
    settings = RaftSettings(
        secret=bytes.fromhex(secret) if secret else None,
        data_dir=Path(config.pop("data_dir")),
        **config,
    )
    if os.environ.get(FORBID_PICKLE_ENV) == "1":
        forbid_pickle()
    faulty = os.environ.get(FAULT_SKIP_TRUNCATE_ENV) == "1"
    node_class = SkipFirstCompactionTruncate if faulty else RaftNode
    machine = CounterMachine()
    node = node_class(settings, machine)
    print(json.dumps({"started": settings.self_address}), flush=True)
    try:
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "close":
                break
            try:
                reply = handle(node, machine, request)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(reply), flush=True)
    finally:
        node.close()
    print(json.dumps({"closed": True}), flush=True)


if __name__ == "__main__":
    main()
