"""Workloads that drive a board and record every operation (see :mod:`consensus.history`).

``cas-register``: each client owns a writer handle and a reader handle pinned to one replica
(clients are spread over the replicas), so linearizable reads arrive at followers as well as at
the leader. Writes are compare-and-set on the version the client last saw; a refusal records the
version it was refused against. The recorded history is then checked with
:class:`~consensus.checker.CasRegister`. Every loop is bounded by an operation count and a
deadline; the rate is paced per client.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consensus.checker import CasRegister, CheckResult, check_operations
from consensus.client import Board
from consensus.errors import BoardError, Conflict, OutcomeUnknown, Unavailable
from consensus.history import HistoryWriter, OpRecord, read_history, to_operations

__all__ = ["CasRegisterWorkload", "WorkloadStats", "check_cas_register"]

CLIENTS_MAX = 256
OPS_PER_CLIENT_MAX = 1_000_000


@dataclasses.dataclass
class WorkloadStats:
    ok: int = 0
    fail: int = 0
    info: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class CasRegisterWorkload:
    """``clients`` clients over ``keys`` keys (``prefix``), at most ``ops_per_client`` each,
    for at most ``duration_s``, at about ``rate_per_s`` operations per second in total."""

    clients: int = 4
    keys: int = 3
    ops_per_client: int = 200
    duration_s: float = 10.0
    rate_per_s: float = 400.0
    read_share: float = 0.5
    seed: int = 0
    prefix: str = "wl/reg/"
    final_reads: bool = True

    def __post_init__(self) -> None:
        if not (1 <= self.clients <= CLIENTS_MAX and self.keys >= 1
                and 1 <= self.ops_per_client <= OPS_PER_CLIENT_MAX
                and self.duration_s > 0 and self.rate_per_s > 0 and 0 <= self.read_share <= 1):
            raise ValueError(f"invalid workload: {self}")

    def run(self, writer_for: Callable[[str], Board], reader_for: Callable[[str, int], Board],
            history: HistoryWriter, clock_ns: Callable[[], int] = time.monotonic_ns
            ) -> WorkloadStats:
        """Run the clients to completion; every board they open is closed."""
        lock = threading.Lock()
        stats = WorkloadStats()
        deadline_ns = clock_ns() + int(self.duration_s * 1e9)
        interval_s = self.clients / self.rate_per_s

        def record(process: str, kind: Any, f: str, key: str, value: Any,
                   error: str = "") -> OpRecord:
            with lock:
                if kind == "ok":
                    stats.ok += 1
                elif kind == "fail":
                    stats.fail += 1
                elif kind == "info":
                    stats.info += 1
                if error:
                    name = error.split(":", 1)[0]
                    stats.errors[name] = stats.errors.get(name, 0) + 1
                return history.write(process, kind, f, key, value, clock_ns(), error)

        def client(n: int) -> None:
            process = f"c{n}"
            rnd = random.Random(self.seed * 1_000_003 + n)
            writer = writer_for(process)
            reader = reader_for(process, n)
            seen: dict[str, int] = {}
            try:
                next_ns = clock_ns()
                for i in range(self.ops_per_client):
                    now = clock_ns()
                    if now >= deadline_ns:
                        return
                    if next_ns > now:
                        time.sleep(min(next_ns - now, deadline_ns - now) / 1e9)
                    next_ns += int(interval_s * 1e9)
                    key = f"{self.prefix}{rnd.randrange(self.keys)}"
                    if rnd.random() < self.read_share:
                        _read(reader, process, key, seen, record)
                    else:
                        _cas(writer, process, key, seen, n * OPS_PER_CLIENT_MAX + i, record)
            finally:
                writer.close()
                reader.close()

        threads = [threading.Thread(target=client, args=(n,), name=f"workload-c{n}", daemon=True)
                   for n in range(self.clients)]
        for t in threads:
            t.start()
        join_by = time.monotonic() + self.duration_s + 60.0  # a stuck call: report, not hang
        for t in threads:
            t.join(max(0.0, join_by - time.monotonic()))
            if t.is_alive():
                with lock:
                    stats.errors["client still running after the deadline"] = 1
        if self.final_reads:
            self.read_all(writer_for("final"), record)
        return stats

    def read_all(self, board: Board, record: Record) -> None:
        """One read of every key (through the leader), after the run: with them in the history,
        the linearizability check also proves no acknowledged write was lost."""
        try:
            for k in range(self.keys):
                _read(board, "final", f"{self.prefix}{k}", {}, record)
        finally:
            board.close()


Record = Callable[..., OpRecord]


def _read(board: Board, process: str, key: str, seen: dict[str, int], record: Record) -> None:
    record(process, "invoke", "read", key, None)
    try:
        entry = board.get(key)
    except BoardError as exc:  # a read that failed changed nothing and saw nothing
        record(process, "fail", "read", key, None, f"{type(exc).__name__}: {exc}")
        return
    version, value = (0, None) if entry is None else (entry.version, entry.value)
    seen[key] = version
    record(process, "ok", "read", key, [version, value])


def _cas(board: Board, process: str, key: str, seen: dict[str, int], value: int,
         record: Record) -> None:
    expect = seen.get(key, 0)
    record(process, "invoke", "cas", key, [expect, value])
    try:
        entry = board.put(key, value, expect_version=expect)
    except Conflict as exc:  # refused: it observed the version it was refused against
        current = exc.current.version if exc.current is not None else 0
        seen[key] = current
        record(process, "ok", "cas", key, ["conflict", current])
        return
    except OutcomeUnknown as exc:
        record(process, "info", "cas", key, None, f"{type(exc).__name__}: {exc}")
        return
    except Unavailable as exc:  # the client says no attempt can have applied
        record(process, "fail", "cas", key, None, f"{type(exc).__name__}: {exc}")
        return
    except BoardError as exc:  # anything else: do not assume it did not apply
        record(process, "info", "cas", key, None, f"{type(exc).__name__}: {exc}")
        return
    seen[key] = entry.version
    record(process, "ok", "cas", key, ["ok", entry.version])


def _cas_register_pair(invoke: OpRecord, done: OpRecord | None
                       ) -> tuple[tuple[Any, ...], Any] | None:
    if invoke.f == "read":
        read = None if done is None else (int(done.value[0]), done.value[1])
        return ("read",), read
    expect, value = invoke.value
    cas = None if done is None else (str(done.value[0]), int(done.value[1]))
    return ("cas", int(expect), value), cas


def check_cas_register(path: Path, **kwargs: Any) -> tuple[CheckResult, str]:
    """Check a recorded cas-register history file; returns the result and any reader note."""
    records, note = read_history(path)
    return check_operations(to_operations(records, _cas_register_pair), CasRegister(),
                            **kwargs), note
