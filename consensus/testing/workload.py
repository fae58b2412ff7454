"""Workloads that drive a board and record every operation (see :mod:`consensus.history`).

Every workload runs ``clients`` client threads over ``keys`` keys under its ``prefix``, paced to
``rate_per_s`` in total and bounded by ``ops_per_client`` and ``duration_s``; each client owns a
writer handle (through the leader) and a reader handle pinned to one replica (clients are spread
over the replicas), so linearizable reads arrive at followers as well as at the leader. A
``read_share`` of operations are reads. After the run (and, in a chaos run, after the heal) the
``final`` process reads every key once, so the checks also prove that no acknowledged write was
lost. :meth:`Workload.check` returns one :class:`~consensus.checks.Finding` per check.

=================  ============================================  ===================================
workload           writes (policy on the prefix)                 checks
=================  ============================================  ===================================
``cas-register``   compare-and-set on the last version seen      linearizable (CAS register)
                   (``reject-stale``)
``counter``        ``+1`` (``merge``, ``kind=counter``)          linearizable (counter); exactly-once
``set``            add a unique element (``merge``, ``set``)     linearizable (set); set-complete
``lww-register``   blind writes of unique values                 linearizable (LWW register)
                   (``last-writer-wins``)
``watch``          as ``lww-register``, plus a watcher per       as ``lww-register``; every watch
                   client streaming the prefix from revision 1   stream ordered, gap-free, equal to
                                                                 the committed history
=================  ============================================  ===================================

An error is classified by what it says about the operation: a refusal (:class:`Conflict`) is an
``ok`` completion that observed the state (for compare-and-set) or a ``fail`` (it changed
nothing); :class:`OutcomeUnknown` and any unexpected :class:`BoardError` are ``info`` (it may
have applied); plain :class:`Unavailable` is ``fail`` (the client knows no attempt applied).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

from quorumboard.consensus.client.board import Board
from quorumboard.consensus.errors import (
    BoardError,
    ClaimHeld,
    Conflict,
    OutcomeUnknown,
    Unavailable,
)
from quorumboard.consensus.testing.checker import (
    CasRegister,
    CheckResult,
    Counter,
    LwwRegister,
    Model,
    SetModel,
    check_operations,
)
from quorumboard.consensus.testing.checks import (
    Event,
    Finding,
    check_claims,
    check_exactly_once,
    check_set_complete,
    check_versions,
    check_watch,
)
from quorumboard.consensus.testing.history import (
    HistoryWriter,
    OpRecord,
    read_history,
    to_operations,
)

__all__ = [
    "STUCK_CLIENT",
    "WORKLOADS",
    "CasRegisterWorkload",
    "ClaimsWorkload",
    "CounterWorkload",
    "LwwRegisterWorkload",
    "SetWorkload",
    "WatchWorkload",
    "Workload",
    "WorkloadStats",
    "check_cas_register",
    "linearizability_finding",
]

CLIENTS_MAX = 256
OPS_PER_CLIENT_MAX = 1_000_000
JOIN_GRACE_S = 60.0
STUCK_CLIENT = "client still running after the deadline"
WATCH_IDLE_S = 2.0
WATCH_RESUMES_MAX = 100_000
STALL_TTLS = 1.5
"""A stalled claims agent sleeps this many TTLs before its fenced write."""


@dataclasses.dataclass
class WorkloadStats:
    ok: int = 0
    fail: int = 0
    info: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)


Record = Callable[..., OpRecord]
"""``record(process, type, f, key, value, error="")``: append one history record."""


@dataclasses.dataclass
class _Client:
    """One client thread's handles and memory."""

    process: str
    n: int
    writer: Board
    reader: Board
    rnd: random.Random
    record: Record
    seen: dict[str, int] = dataclasses.field(default_factory=dict)
    crashed: bool = False
    """The last write ended indeterminate (``info``): see :meth:`Workload.run`."""


@dataclasses.dataclass(frozen=True)
class Workload(abc.ABC):
    """``clients`` clients over ``keys`` keys under ``prefix``, at most ``ops_per_client``
    operations each, for at most ``duration_s``, at about ``rate_per_s`` operations per second
    in total, a ``read_share`` of them reads."""

    clients: int = 4
    keys: int = 3
    ops_per_client: int = 200
    duration_s: float = 10.0
    rate_per_s: float = 400.0
    read_share: float = 0.5
    seed: int = 0
    prefix: str = ""
    final_reads: bool = True

    name: ClassVar[str] = "workload"
    policy: ClassVar[tuple[str, dict[str, Any]] | None] = None
    """``(policy name, params)`` bound to ``prefix`` before the run; ``None``: the default."""
    records_committed: ClassVar[bool] = False
    """Whether :meth:`read_all` also records the prefix's committed event history."""

    def __post_init__(self) -> None:
        if not (1 <= self.clients <= CLIENTS_MAX and self.keys >= 1
                and 1 <= self.ops_per_client <= OPS_PER_CLIENT_MAX
                and self.duration_s > 0 and self.rate_per_s > 0 and 0 <= self.read_share <= 1):
            raise ValueError(f"invalid workload: {self}")
        if not self.prefix:
            object.__setattr__(self, "prefix", f"wl/{self.name}/")

    @property
    def key_names(self) -> list[str]:
        return [f"{self.prefix}{k}" for k in range(self.keys)]

    # ------------------------------------------------------------------------------- run

    def prepare(self, board: Board) -> None:
        """Bind the workload's policy to its prefix (a committed command)."""
        if self.policy is not None:
            name, params = self.policy
            board.set_policy(self.prefix, name, **params)

    def run(self, writer_for: Callable[[str], Board], reader_for: Callable[[str, int], Board],
            history: HistoryWriter, clock_ns: Callable[[], int] = time.monotonic_ns
            ) -> WorkloadStats:
        """Run the clients to completion; every board they open is closed."""
        lock = threading.Lock()
        stats = WorkloadStats()
        deadline_ns = clock_ns() + int(self.duration_s * 1e9)
        interval_ns = int(self.clients / self.rate_per_s * 1e9)
        setup = writer_for("setup")
        try:
            self.prepare(setup)
        finally:
            setup.close()

        def record(process: str, kind: Any, f: str, key: str, value: Any,
                   error: str = "") -> OpRecord:
            with lock:
                if kind in ("ok", "fail", "info"):
                    setattr(stats, kind, getattr(stats, kind) + 1)
                if error:
                    name = error.split(":", 1)[0]
                    stats.errors[name] = stats.errors.get(name, 0) + 1
                return history.write(process, kind, f, key, value, clock_ns(), error)

        def client(n: int) -> None:
            c = _Client(f"c{n}", n, writer_for(f"c{n}"), reader_for(f"c{n}", n),
                        random.Random(self.seed * 1_000_003 + n), record)
            names = self.key_names
            try:
                next_ns = clock_ns()
                for i in range(self.ops_per_client):
                    now = clock_ns()
                    if now >= deadline_ns:
                        return
                    if next_ns > now:
                        time.sleep(min(next_ns - now, deadline_ns - now) / 1e9)
                    next_ns += interval_ns
                    key = names[c.rnd.randrange(len(names))]
                    if c.rnd.random() < self.read_share:
                        _read(c.reader, c.process, key, c.seen, record)
                    else:
                        self.write(c, key, n * OPS_PER_CLIENT_MAX + i)
                    if c.crashed:
                        # Jepsen's rule: a client whose operation is indeterminate is done with
                        # it and goes on as a new client. Reusing the Board would make its next
                        # identical command a *retry* of the unknown one (exactly-once), which
                        # returns the old result: one operation, recorded as two.
                        c.writer.close()
                        c.writer = writer_for(c.process)
                        c.crashed = False
            finally:
                c.writer.close()
                c.reader.close()

        threads = [threading.Thread(target=client, args=(n,), name=f"workload-c{n}", daemon=True)
                   for n in range(self.clients)]
        with self.alongside(writer_for, history, clock_ns, deadline_ns):
            for t in threads:
                t.start()
            join_by = time.monotonic() + self.duration_s + JOIN_GRACE_S  # stuck: report
            for t in threads:
                t.join(max(0.0, join_by - time.monotonic()))
                if t.is_alive():
                    with lock:
                        stats.errors[STUCK_CLIENT] = stats.errors.get(STUCK_CLIENT, 0) + 1
        if self.final_reads:
            self.read_all(writer_for("final"), history, clock_ns)
        return stats

    def alongside(self, writer_for: Callable[[str], Board], history: HistoryWriter,
                  clock_ns: Callable[[], int], deadline_ns: int) -> AbstractContextManager[Any]:
        """Something to run next to the clients (the watchers); nothing here."""
        return contextlib.nullcontext()

    def read_all(self, board: Board, history: HistoryWriter,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        """One read of every key (through the leader) by process ``final``, after the run
        (after the heal, in a chaos run): the checks then also prove that no acknowledged
        write was lost. Closes ``board``."""
        def record(process: str, kind: Any, f: str, key: str, value: Any,
                   error: str = "") -> OpRecord:
            return history.write(process, kind, f, key, value, clock_ns(), error)

        try:
            if self.records_committed:
                self._record_committed(board, history, clock_ns)
            for key in self.key_names:
                _read(board, "final", key, {}, record)
        finally:
            board.close()

    def _record_committed(self, board: Board, history: HistoryWriter,
                          clock_ns: Callable[[], int]) -> None:
        """The committed event history of the prefix (a fresh watch from revision 1, ended by
        an idle spell) into ``<history>-committed.jsonl``."""
        with HistoryWriter(_sibling(history.path, "committed")) as out:
            try:
                for ev in board.watch(self.prefix, start_revision=1, idle_timeout_s=WATCH_IDLE_S):
                    out.write("committed", "ok", ev.kind, ev.key,
                              _event_value(ev), clock_ns())
            except BoardError as exc:
                out.write("committed", "fail", "watch", self.prefix, None, clock_ns(),
                          f"{type(exc).__name__}: {exc}")

    @abc.abstractmethod
    def write(self, c: _Client, key: str, unique: int) -> None:
        """One write by client ``c`` (``unique`` is never used twice in a run)."""

    # ----------------------------------------------------------------------------- check

    @abc.abstractmethod
    def model(self) -> Model[Any]:
        """The sequential specification of one key."""

    @abc.abstractmethod
    def convert(self, invoke: OpRecord, done: OpRecord | None
                ) -> tuple[tuple[Any, ...], Any] | None:
        """A history pair as ``(input, output)`` for :meth:`model` (``done`` is ``None`` when
        the outcome is unknown)."""

    def check(self, path: Path, records: list[OpRecord] | None = None, note: str = "",
              **kwargs: Any) -> tuple[list[Finding], CheckResult]:
        """Every check of this workload on the history at ``path`` (already read: pass its
        ``records`` and reader ``note``); ``kwargs`` go to the linearizability checker
        (``steps_max``, ``should_stop``)."""
        if records is None:
            records, note = read_history(path)
        result = check_operations(to_operations(records, self.convert), self.model(), **kwargs)
        findings = [linearizability_finding(result, self.model())]
        findings += self.extra_checks(records, path)
        if note:
            findings.append(Finding(check="history", verdict="ok", detail=note))
        return findings, result

    def extra_checks(self, records: list[OpRecord], path: Path) -> list[Finding]:
        return []


def linearizability_finding(result: CheckResult, model: Model[Any]) -> Finding:
    ops = sum(k.operations for k in result.keys)
    if result.verdict == "ok":
        detail = f"{ops} operations over {len(result.keys)} keys are linearizable ({model.name})"
    else:
        detail = result.explain()
    return Finding(check="linearizable", verdict=result.verdict, detail=detail)


# ---------------------------------------------------------------------------- operations


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


def _attempt(c: _Client, f: str, key: str, value: Any, put: Callable[[], Any],
             on_conflict: Callable[[Conflict], Any] | None = None) -> Any:
    """Invoke ``put`` between an invoke record and its completion; returns the entry written,
    or ``None`` after recording a refusal, a failure or an unknown outcome."""
    c.record(c.process, "invoke", f, key, value)
    try:
        return put()
    except Conflict as exc:  # refused: nothing was written
        if on_conflict is not None:
            c.record(c.process, "ok", f, key, on_conflict(exc))
        else:
            c.record(c.process, "fail", f, key, None, f"{type(exc).__name__}: {exc}")
    except OutcomeUnknown as exc:
        c.record(c.process, "info", f, key, None, f"{type(exc).__name__}: {exc}")
        c.crashed = True
    except Unavailable as exc:  # the client says no attempt can have applied
        c.record(c.process, "fail", f, key, None, f"{type(exc).__name__}: {exc}")
    except BoardError as exc:  # anything else: do not assume it did not apply
        c.record(c.process, "info", f, key, None, f"{type(exc).__name__}: {exc}")
        c.crashed = True
    return None


def _tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _read_pair(done: OpRecord | None) -> Any:
    return None if done is None else (int(done.value[0]), done.value[1])


# ----------------------------------------------------------------------------- workloads


@dataclasses.dataclass(frozen=True)
class CasRegisterWorkload(Workload):
    """Compare-and-set on the version the client last saw; a refusal records the version it
    was refused against (an observation the checker verifies too)."""

    name: ClassVar[str] = "cas-register"

    def write(self, c: _Client, key: str, unique: int) -> None:
        expect = c.seen.get(key, 0)

        def conflict(exc: Conflict) -> list[Any]:
            current = exc.current.version if exc.current is not None else 0
            c.seen[key] = current
            return ["conflict", current]

        entry = _attempt(c, "cas", key, [expect, unique],
                         lambda: c.writer.put(key, unique, expect_version=expect), conflict)
        if entry is not None:
            c.seen[key] = entry.version
            c.record(c.process, "ok", "cas", key, ["ok", entry.version])

    def model(self) -> Model[Any]:
        return CasRegister()

    def convert(self, invoke: OpRecord, done: OpRecord | None
                ) -> tuple[tuple[Any, ...], Any] | None:
        if invoke.f == "read":
            return ("read",), _read_pair(done)
        expect, value = invoke.value
        return ("cas", int(expect), value), \
            None if done is None else (str(done.value[0]), int(done.value[1]))


@dataclasses.dataclass(frozen=True)
class CounterWorkload(Workload):
    """``+1`` increments under ``merge`` (counter). Each is retried by the client with the same
    session and sequence number after a lost reply, so the final total checks exactly-once."""

    name: ClassVar[str] = "counter"
    policy: ClassVar[tuple[str, dict[str, Any]] | None] = ("merge", {"kind": "counter"})

    def write(self, c: _Client, key: str, unique: int) -> None:
        entry = _attempt(c, "add", key, 1, lambda: c.writer.put(key, 1))
        if entry is not None:
            c.record(c.process, "ok", "add", key, ["ok", entry.value])

    def model(self) -> Model[Any]:
        return Counter()

    def convert(self, invoke: OpRecord, done: OpRecord | None
                ) -> tuple[tuple[Any, ...], Any] | None:
        if invoke.f == "read":
            return ("read",), None if done is None else int(done.value[1] or 0)
        return ("add", int(invoke.value)), None if done is None else ("ok", int(done.value[1]))

    def extra_checks(self, records: list[OpRecord], path: Path) -> list[Finding]:
        return [check_exactly_once(records, self.key_names)]


@dataclasses.dataclass(frozen=True)
class SetWorkload(Workload):
    """Adds of unique elements under ``merge`` (set: union)."""

    name: ClassVar[str] = "set"
    policy: ClassVar[tuple[str, dict[str, Any]] | None] = ("merge", {"kind": "set"})

    def write(self, c: _Client, key: str, unique: int) -> None:
        entry = _attempt(c, "add", key, unique, lambda: c.writer.put(key, [unique]))
        if entry is not None:
            c.record(c.process, "ok", "add", key, ["ok", sorted(entry.value)])

    def model(self) -> Model[Any]:
        return SetModel()

    def convert(self, invoke: OpRecord, done: OpRecord | None
                ) -> tuple[tuple[Any, ...], Any] | None:
        if invoke.f == "read":
            return ("read",), None if done is None else frozenset(done.value[1] or [])
        return ("add", invoke.value), \
            None if done is None else ("ok", frozenset(done.value[1]))

    def extra_checks(self, records: list[OpRecord], path: Path) -> list[Finding]:
        return [check_set_complete(records, self.key_names)]


@dataclasses.dataclass(frozen=True)
class LwwRegisterWorkload(Workload):
    """Blind writes of unique values under ``last-writer-wins``; the completion records the
    new version and the revision it committed at."""

    name: ClassVar[str] = "lww-register"
    policy: ClassVar[tuple[str, dict[str, Any]] | None] = ("last-writer-wins", {})

    def write(self, c: _Client, key: str, unique: int) -> None:
        entry = _attempt(c, "write", key, unique, lambda: c.writer.put(key, unique))
        if entry is not None:
            c.record(c.process, "ok", "write", key, ["ok", entry.version, entry.mod_revision])

    def model(self) -> Model[Any]:
        return LwwRegister()

    def convert(self, invoke: OpRecord, done: OpRecord | None
                ) -> tuple[tuple[Any, ...], Any] | None:
        if invoke.f == "read":
            return ("read",), _read_pair(done)
        return ("write", invoke.value), None if done is None else ("ok", int(done.value[1]))


@dataclasses.dataclass(frozen=True)
class WatchWorkload(LwwRegisterWorkload):
    """``lww-register`` plus one watcher per client streaming the prefix from revision 1 into
    ``<history>-watch.jsonl`` while the clients run (resuming after every reconnect or idle
    spell), and, after the run, a fresh watch of the whole committed history into
    ``<history>-committed.jsonl``. The check compares every stream with the committed one."""

    name: ClassVar[str] = "watch"
    records_committed: ClassVar[bool] = True

    def alongside(self, writer_for: Callable[[str], Board], history: HistoryWriter,
                  clock_ns: Callable[[], int], deadline_ns: int) -> AbstractContextManager[Any]:
        return self._watchers(writer_for, history, clock_ns)

    @contextlib.contextmanager
    def _watchers(self, writer_for: Callable[[str], Board], history: HistoryWriter,
                  clock_ns: Callable[[], int]) -> Iterator[None]:
        lock = threading.Lock()
        stop = threading.Event()
        with HistoryWriter(_sibling(history.path, "watch")) as out:
            def watch(n: int) -> None:
                board = writer_for(f"w{n}")
                cursor = 1
                try:
                    for _ in range(WATCH_RESUMES_MAX):  # each ends when idle: resume unless told
                        for ev in board.watch(self.prefix, start_revision=cursor,
                                              idle_timeout_s=WATCH_IDLE_S):
                            with lock:
                                out.write(f"w{n}", "ok", ev.kind, ev.key,
                                          _event_value(ev),
                                          clock_ns())
                            cursor = ev.revision + 1
                        if stop.is_set():
                            return
                except BoardError as exc:
                    with lock:
                        out.write(f"w{n}", "fail", "watch", self.prefix, None, clock_ns(),
                                  f"{type(exc).__name__}: {exc}")
                finally:
                    board.close()

            threads = [threading.Thread(target=watch, args=(n,), daemon=True,
                                        name=f"workload-w{n}") for n in range(self.clients)]
            for t in threads:
                t.start()
            try:
                yield
            finally:
                stop.set()  # each watcher ends at its next idle spell: it has seen everything
                join_by = time.monotonic() + WATCH_IDLE_S + JOIN_GRACE_S
                for t in threads:
                    t.join(max(0.0, join_by - time.monotonic()))

    def extra_checks(self, records: list[OpRecord], path: Path) -> list[Finding]:
        watched: dict[str, list[OpRecord]] = {}
        failures: list[str] = []
        for rec in _read_stream(_sibling(path, "watch")):
            if rec.type == "ok":
                watched.setdefault(rec.process, []).append(rec)
            else:
                failures.append(f"{rec.process}: {rec.error}")
        committed_records = _read_stream(_sibling(path, "committed"))
        if any(r.type != "ok" for r in committed_records):
            return [Finding(check="watch", verdict="unknown",
                            detail="the committed history could not be read after the run")]
        streams = {name: [_event(r) for r in recs] for name, recs in watched.items()}
        finding = check_watch(records, streams, [_event(r) for r in committed_records])
        gaps = [check_versions(_versioned(committed_records), "the committed history")]
        gaps += [check_versions(_versioned(recs), f"watcher {name}")
                 for name, recs in sorted(watched.items())]
        bad = [g for g in gaps if g.verdict != "ok"]
        if bad and finding.verdict == "ok":
            finding = bad[0]
        if failures and finding.verdict == "ok":
            finding = finding.model_copy(update={
                "detail": finding.detail + f"; {len(failures)} watch stream(s) ended early: "
                          + "; ".join(failures[:3])})
        return [finding]


def _sibling(path: Path, what: str) -> Path:
    return path.with_name(f"{path.stem}-{what}.jsonl")


def _read_stream(path: Path) -> list[OpRecord]:
    if not path.exists():
        return []
    return read_history(path)[0]


def _event_value(ev: Any) -> list[Any]:
    """How a watch event is recorded: ``[revision, value, version]`` (no entry: a delete)."""
    return [ev.revision, ev.entry.value if ev.entry else None,
            ev.entry.version if ev.entry else None]


def _event(rec: OpRecord) -> Event:
    return (int(rec.value[0]), rec.f, rec.key, rec.value[1])


def _versioned(records: list[OpRecord]) -> list[tuple[int, str, str, int | None]]:
    return [(int(r.value[0]), r.f, r.key, r.value[2] if len(r.value) > 2 else None)
            for r in records if r.type == "ok"]


def _committed(path: Path) -> list[Event] | None:
    """The committed history recorded after the run; ``None`` if it could not be read."""
    records = _read_stream(_sibling(path, "committed"))
    if any(r.type != "ok" for r in records):
        return None
    return [_event(r) for r in records]


@dataclasses.dataclass(frozen=True)
class ClaimsWorkload(Workload):
    """Agents race for task claims (``<prefix>t<k>``, a short TTL), and each winner writes its
    result to ``<prefix>out/<k>`` with the claim's fence, then releases the claim. A share of
    winners *stall* past the TTL without a keepalive before writing (a hung agent): by then the
    claim may have expired and been taken over, and the fence must refuse the late write.
    Reads are of the result keys. Checks: linearizability of the result keys (LWW), and the
    claims safety check over the committed history (:func:`~consensus.checks.check_claims`)."""

    ttl_s: float = 1.0
    stall_share: float = 0.2

    name: ClassVar[str] = "claims"
    records_committed: ClassVar[bool] = True

    @property
    def key_names(self) -> list[str]:
        return [f"{self.prefix}out/{k}" for k in range(self.keys)]

    def prepare(self, board: Board) -> None:
        board.set_policy(f"{self.prefix}out/", "last-writer-wins")

    def write(self, c: _Client, key: str, unique: int) -> None:
        k = key.rsplit("/", 1)[1]
        task, out = f"{self.prefix}t{k}", f"{self.prefix}out/{k}"
        c.record(c.process, "invoke", "claim", task, None)
        try:
            claim = c.writer.claim(task, ttl=self.ttl_s)
        except ClaimHeld:
            c.record(c.process, "ok", "claim", task, ["held"])
            return
        except OutcomeUnknown as exc:  # (a subclass of Unavailable) it may have been granted
            c.record(c.process, "info", "claim", task, None, f"{type(exc).__name__}: {exc}")
            c.crashed = True
            return
        except Unavailable as exc:
            c.record(c.process, "fail", "claim", task, None, f"{type(exc).__name__}: {exc}")
            return
        except BoardError as exc:
            c.record(c.process, "info", "claim", task, None, f"{type(exc).__name__}: {exc}")
            c.crashed = True
            return
        c.record(c.process, "ok", "claim", task, ["ok", claim.fence])
        if c.rnd.random() < self.stall_share:
            time.sleep(self.ttl_s * STALL_TTLS)  # a hung agent: no keepalive
        value = [c.process, claim.fence]
        entry = _attempt(c, "write", out, value, lambda: c.writer.put(out, value, fence=claim),
                         lambda exc: ["refused", exc.current.version if exc.current else 0])
        if entry is not None:
            c.record(c.process, "ok", "write", out, ["ok", entry.version, entry.mod_revision])
        with contextlib.suppress(BoardError):
            c.writer.revoke(claim)  # done: release the task (its expiry would, later)

    def model(self) -> Model[Any]:
        return LwwRegister()

    def convert(self, invoke: OpRecord, done: OpRecord | None
                ) -> tuple[tuple[Any, ...], Any] | None:
        if invoke.f == "claim":
            return None  # checked by the claims check, over the committed history
        if invoke.f == "read":  # values are [writer, fence] lists: tuples for the checker
            read = _read_pair(done)
            return ("read",), None if read is None else (read[0], _tuple(read[1]))
        if done is not None and done.value[0] == "refused":
            return None  # fenced out: it changed nothing (and the claims check covers it)
        return ("write", _tuple(invoke.value)), \
            None if done is None else ("ok", int(done.value[1]))

    def extra_checks(self, records: list[OpRecord], path: Path) -> list[Finding]:
        committed = _committed(path)
        if committed is None:
            return [Finding(check="claims", verdict="unknown",
                            detail="the committed history could not be read after the run")]
        return [check_claims(committed, f"{self.prefix}t", f"{self.prefix}out/")]


WORKLOADS: dict[str, type[Workload]] = {
    w.name: w for w in (CasRegisterWorkload, CounterWorkload, SetWorkload, LwwRegisterWorkload,
                        WatchWorkload, ClaimsWorkload)
}
"""The workloads by name, as ``quorumboard chaos --workload`` knows them."""


def check_cas_register(path: Path, **kwargs: Any) -> tuple[CheckResult, str]:
    """Check a recorded cas-register history file; returns the result and any reader note."""
    records, note = read_history(path)
    w = CasRegisterWorkload()
    return check_operations(to_operations(records, w.convert), w.model(), **kwargs), note
