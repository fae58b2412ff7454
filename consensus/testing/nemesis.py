"""The nemesis: faults injected into a :class:`~consensus.cluster.LocalCluster` on a schedule.

One fault at a time, Jepsen style: a quiet gap, a fault held for a while, its heal, and so on
until the deadline; then :meth:`Nemesis.heal_all` undoes everything that may still be in force
(it also runs when the caller fails). Kinds are taken in turn, so a short run still injects
every kind it was given; within a kind the *modes* are taken in turn as well, and the victims
are drawn from a seeded generator, so a seed names a schedule.

=============  ===========================================================================
kind           modes (what is done; heal)
=============  ===========================================================================
``kill``       SIGKILL the leader / one replica / a minority / a majority; restart them
``pause``      SIGSTOP the same choices; SIGCONT
``partition``  isolate the leader / one replica; split into majority and minority halves;
               a ring (each replica reaches only its neighbours: overlapping majorities);
               a bridge (two halves joined by one replica); reconnect everything
``delay``      every link, or the leader's links, slowed by a delay plus jitter; restore
``loss``       one-way loss (the leader, or one replica, cannot be heard but still hears);
               random drops on every link (each costs a retransmission timeout); restore
``clock``      the leader's lease clock (the only clock anything is decided by) jumps ahead,
               runs fast, or runs slow; back to real rate (see :mod:`consensus.clocks`)
``corrupt``    a data-file fault at rest: SIGKILL a follower, then flip a bit in the first
               half of its Raft journal or in its meta file (it must refuse to start), or
               truncate its journal at a random point past the middle (it must recover the
               intact prefix and catch up from its peers); restore the files and restart
=============  ===========================================================================

A replica that *starts* on a flipped bit, or a replica down that no fault took down, is
recorded in :attr:`Nemesis.violations` / :attr:`Nemesis.crashed` — findings, not noise.

The same faults can be driven step by step from outside instead (an agent team's run maps its
rounds to them): :meth:`Nemesis.inject` does one :class:`FaultStep` (a kind and a mode,
optionally from a timer) and leaves the :class:`Fault` in force, :meth:`Nemesis.heal` undoes
it. The schedule above is made of the same two calls, so a plan and a chaos campaign inject,
heal and record a fault with the same code.

Network kinds need ``LocalCluster(network_faults=True)``, ``clock`` needs ``clock_faults=True``
(:class:`InvalidCommand` says so up front). Every start and end of a fault is appended to a
JSON Lines timeline (:class:`~consensus.history.FaultEvent`), flushed per line, with the same
monotonic clock as the operation history (without a timeline path: logged only).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import shutil
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from quorumboard.consensus.cluster import LocalCluster
from quorumboard.consensus.errors import BoardError, InvalidCommand
from quorumboard.consensus.raft.journal import JOURNAL_FILE, JOURNAL_MAGIC
from quorumboard.consensus.testing.history import FaultEvent, FaultKind

__all__ = ["MODES", "NEEDS_NETWORK", "Fault", "FaultStep", "Nemesis", "NemesisConfig"]

log = structlog.get_logger("quorumboard.consensus.testing.nemesis")

MODES: dict[FaultKind, tuple[str, ...]] = {
    "kill": ("leader", "one", "minority", "majority"),
    "pause": ("leader", "one", "minority", "majority"),
    "partition": ("isolate-leader", "halves", "ring", "isolate-one", "bridge"),
    "delay": ("all", "leader"),
    "loss": ("one-way-leader", "drops", "one-way-one"),
    "clock": ("jump-leader", "fast-leader", "slow-leader"),
    "corrupt": ("flip-journal", "truncate-journal", "flip-meta"),
}
NEEDS_NETWORK: frozenset[FaultKind] = frozenset({"partition", "delay", "loss"})
"""Kinds that need ``LocalCluster(network_faults=True)``."""
FAULTS_MAX = 10_000
CORRUPT_BACKUP_DIR = "corrupt-backup"
CORRUPT_START_TIMEOUT_S = 15.0
HEAL_WAIT_PER_REPLICA_S = 40.0
"""Longest a heal may take, per replica (a restart waits up to 30 s for the replica to serve)."""

DELAY_S, JITTER_S = 0.05, 0.05
DROP_PROBABILITY = 0.2
CLOCK_JUMP_S = 60.0
CLOCK_FAST, CLOCK_SLOW = 10.0, 0.1


class NemesisConfig(BaseModel):
    """What the nemesis may do, and how often. ``interval_s`` of quiet precedes each fault,
    which is held for ``fault_s`` and then healed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    faults: list[FaultKind] = Field(min_length=1)
    interval_s: float = Field(default=2.0, gt=0, le=3600)
    fault_s: float = Field(default=3.0, gt=0, le=3600)
    seed: int = 0
    faults_max: int = Field(default=FAULTS_MAX, ge=1, le=FAULTS_MAX)


def _flip_position(data: bytearray, mode: str, rnd: random.Random) -> int | None:
    """Where to flip a bit so that the file must be refused: in the meta file, anywhere past
    its magic; in the journal, inside the *first* record's body while a second record follows
    (a flip in the last record is indistinguishable from a torn append, which is dropped)."""
    if mode == "flip-meta":
        return rnd.randrange(12, len(data)) if len(data) > 12 else None
    head = len(JOURNAL_MAGIC)
    if len(data) < head + 8:
        return None
    (length,) = struct.unpack_from(">I", data, head)
    body = head + 8
    if length == 0 or body + length + 8 >= len(data):
        return None
    return rnd.randrange(body, body + length)


def _last_log_line(rdir: Path, exc: BaseException) -> str:
    """What the replica said when it refused (its log's last line naming the error)."""
    try:
        lines = (rdir / "replica.log").read_text(errors="replace").splitlines()[-20:]
    except OSError:
        return str(exc)
    said = [ln for ln in lines if "orrupt" in ln or "checksum" in ln]
    return (said[-1] if said else str(exc))[:500]


@dataclasses.dataclass(frozen=True)
class _Plan:
    """One fault, decided: who it hits, what the timeline says, how to do and undo it."""

    targets: list[int]
    detail: dict[str, Any]
    act: Callable[[], None]
    heal: Callable[[], None]


@dataclasses.dataclass(frozen=True)
class FaultStep:
    """One fault to inject, by name: ``kind`` and one of its :data:`MODES`. ``delay_s`` > 0:
    it is done from a timer that long (wall clock) after :meth:`Nemesis.inject` returns, so it
    lands amid whatever the caller does next (its victims are chosen at once). A mode aimed at
    the leader picks whoever leads at that moment, or a random replica mid-election (recorded
    as ``leader_known``); with ``leader_wait_s`` > 0 it first waits up to that long for one
    to be elected instead (an agent run's faults are about the leader it has)."""

    kind: FaultKind
    mode: str
    delay_s: float = 0.0
    leader_wait_s: float = 0.0


FaultState = Literal["pending", "in-force", "healed", "called-off"]


@dataclasses.dataclass(eq=False)
class Fault:
    """A fault :meth:`Nemesis.inject` decided: its timeline index, kind, mode, victims and
    detail (as its ``start`` record says). ``state`` (read it, do not set it): ``pending``
    while a delayed fault waits for its timer, ``in-force`` from its injection until a heal
    succeeds, then ``healed``; ``called-off`` if it was withdrawn before it was done."""

    index: int
    kind: FaultKind
    mode: str
    targets: list[int]
    detail: dict[str, Any]
    delay_s: float
    _plan: _Plan = dataclasses.field(repr=False)
    state: FaultState = "pending"
    _timer: threading.Timer | None = dataclasses.field(default=None, repr=False)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)


class Nemesis:
    """Injects faults into ``cluster`` per ``config``, recording them to ``timeline``."""

    def __init__(self, cluster: LocalCluster, config: NemesisConfig,
                 timeline: Path | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if cluster.embedded:
            raise InvalidCommand("the nemesis needs replica processes (embedded=False)")
        if NEEDS_NETWORK & set(config.faults) and cluster.net is None:
            raise InvalidCommand("network faults need LocalCluster(network_faults=True)")
        if "clock" in config.faults and not cluster.clock_faults:
            raise InvalidCommand("clock faults need LocalCluster(clock_faults=True)")
        self.cluster = cluster
        self.config = config
        self._clock_ns = clock_ns
        self._rnd = random.Random(config.seed)
        self._file: IO[str] | None = None
        if timeline is not None:
            timeline.parent.mkdir(parents=True, exist_ok=True)
            self._file = timeline.open("x", encoding="utf-8")
        self._file_lock = threading.Lock()
        self._index = 0
        self._turns: dict[FaultKind, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heal_lock = threading.Lock()
        self._heal_wait_s = HEAL_WAIT_PER_REPLICA_S * cluster.size
        self._delayed: list[Fault] = []
        self.injected = 0
        self.crashed: list[str] = []
        """Replicas found down that no fault took down (each restarted when noticed)."""
        self.violations: list[str] = []
        """Data-file faults a replica did not refuse (it started on a flipped bit)."""

    # --------------------------------------------------------------------------- schedule

    def start(self, duration_s: float) -> None:
        """Run the schedule on a thread for at most ``duration_s``."""
        deadline = time.monotonic() + duration_s
        self._thread = threading.Thread(target=self._run, args=(deadline,), name="nemesis",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the schedule (healing the fault in force), call off delayed faults not yet done,
        heal everything, close the timeline. Idempotent; safe to call from a ``finally``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.config.fault_s + self._heal_wait_s)
        for fault in list(self._delayed):
            self._settle(fault, call_off=True)
        if self._thread is None or not self._thread.is_alive():
            self._note_crashes(set())  # a crash in the last quiet stretch counts too
        try:
            self.heal_all()
        finally:
            with self._file_lock:
                if self._file is not None and not self._file.closed:
                    self._file.close()

    def __enter__(self) -> Nemesis:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _run(self, deadline: float) -> None:
        for n in range(self.config.faults_max):
            if self._stop.wait(self.config.interval_s) or time.monotonic() >= deadline:
                return
            kind = self.config.faults[n % len(self.config.faults)]
            hold_s = min(self.config.fault_s, max(0.0, deadline - time.monotonic()))
            try:
                self.inject_and_heal(kind, hold_s)
            except Exception:  # recorded in the timeline; the schedule goes on
                log.exception("nemesis fault failed", kind=kind)

    def inject_and_heal(self, kind: FaultKind, hold_s: float) -> None:
        """Inject one fault of ``kind`` (the next mode in turn), hold it, heal it (a failed
        heal is recorded in the timeline, and the schedule goes on)."""
        turn = self._turns.get(kind, 0)
        self._turns[kind] = turn + 1
        modes = MODES[kind]
        fault = self.inject(FaultStep(kind, modes[turn % len(modes)]))
        try:
            self._stop.wait(hold_s)
        finally:
            self._heal(fault)

    # --------------------------------------------------------------------------- steps

    def inject(self, step: FaultStep) -> Fault:
        """Inject one fault (now, or from a timer: ``step.delay_s``) and leave it in force
        until :meth:`heal`. One fault at a time: heal the last before injecting the next. The
        heal is decided before anything is done, so a fault injected only in part is healed
        too: a fault that fails is recorded, healed and raised. Raises
        :class:`InvalidCommand` for a kind this nemesis's config does not allow or an unknown
        mode, :class:`~consensus.errors.Unavailable` if no leader is elected within
        ``step.leader_wait_s``."""
        kind, mode = step.kind, step.mode
        if kind not in self.config.faults:
            raise InvalidCommand(f"this nemesis injects {', '.join(self.config.faults)}, "
                                 f"not {kind}")
        if mode not in MODES[kind]:
            raise InvalidCommand(f"no {kind} mode {mode!r} (known: {', '.join(MODES[kind])})")
        if mode == "ring" and self.cluster.size < 5:  # with 3 replicas every pair neighbours
            mode = "bridge"
        if step.leader_wait_s > 0 and "leader" in mode:
            self.cluster.wait_for_leader(step.leader_wait_s)
        index = self._index
        self._index += 1
        self._note_crashes(set())
        plan = self._plan(kind, mode)
        fault = Fault(index, kind, mode, plan.targets, plan.detail, step.delay_s, plan)
        if step.delay_s <= 0:
            self._act(fault)
            return fault
        fault._timer = threading.Timer(step.delay_s, self._act_when_due, args=(fault,))
        fault._timer.daemon = True
        self._delayed.append(fault)
        fault._timer.start()
        return fault

    def heal(self, fault: Fault, *, call_off: bool = False) -> bool:
        """Heal ``fault``; whether one in force was healed. A delayed fault not yet done is
        first let happen (waiting for its timer), so that what comes next (a restart after a
        kill) finds it done; with ``call_off`` it is withdrawn instead, and nothing is
        recorded (it never happened). Raises :class:`BoardError` naming what failed if the
        heal did (recorded in the timeline too); the fault stays in force, to be healed
        again."""
        self._settle(fault, call_off=call_off)
        if fault.state != "in-force":
            return False
        error = self._heal(fault)
        if error:
            raise BoardError(f"fault {fault.index} ({fault.kind} {fault.mode}, replicas "
                             f"{fault.targets}) not healed: {error}")
        return True

    def _act(self, fault: Fault) -> None:
        plan = fault._plan
        fault.state = "in-force"  # also when the act fails part way: its heal runs
        try:
            plan.act()
            self.injected += 1
            self._record(fault.index, "start", fault.kind, fault.mode, plan.targets,
                         plan.detail)
        except Exception as exc:
            self._record(fault.index, "start", fault.kind, fault.mode, plan.targets,
                         plan.detail, f"{type(exc).__name__}: {exc}")
            self._heal(fault)
            raise

    def _act_when_due(self, fault: Fault) -> None:
        """The timer of a delayed fault: do it unless it was called off meanwhile."""
        with fault._lock:
            if fault.state != "pending":
                return
            try:
                self._act(fault)
            except Exception:  # recorded in the timeline (healed); nobody to raise to
                log.exception("delayed fault failed", kind=fault.kind, mode=fault.mode)

    def _settle(self, fault: Fault, *, call_off: bool) -> None:
        """Let a delayed fault's timer do it, or (``call_off``) withdraw it unless the timer
        is doing it already; either way the timer is done with it on return (bounded)."""
        timer = fault._timer
        if timer is None:
            return
        if call_off:
            timer.cancel()
        timer.join(fault.delay_s + self._heal_wait_s)
        if not fault._lock.acquire(timeout=self._heal_wait_s):  # held while the timer acts
            log.error("a delayed fault is still being injected", index=fault.index)
            return
        try:
            if fault.state == "pending":
                fault.state = "called-off"  # a cancelled timer, or one that never ran
        finally:
            fault._lock.release()
        fault._timer = None
        with contextlib.suppress(ValueError):
            self._delayed.remove(fault)

    def _heal(self, fault: Fault) -> str:
        """Undo ``fault`` and record its end; what failed ("" if nothing did)."""
        error = ""
        try:
            with self._heal_lock:
                fault._plan.heal()
            fault.state = "healed"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._record(fault.index, "end", fault.kind, fault.mode, fault.targets, {}, error)
        self._note_crashes(set(fault.targets) if fault.kind == "kill" else set())
        return error

    # --------------------------------------------------------------------------- faults

    def _plan(self, kind: FaultKind, mode: str) -> _Plan:
        """Choose the victims and say how to inject and how to heal (nothing is done yet)."""
        c = self.cluster
        n = c.size
        if kind in ("kill", "pause"):
            victims, known = self._victims(mode)
            hit = c.kill if kind == "kill" else c.pause

            def act() -> None:
                for i in victims:
                    hit(i)

            return _Plan(victims, {"leader_known": known} if mode == "leader" else {}, act,
                         lambda: self._revive(victims))
        if kind == "corrupt":
            return self._plan_corrupt(mode)
        if kind == "clock":
            victim, known = self._leader_or_any()
            jump_s, rate = {"jump": (CLOCK_JUMP_S, 1.0), "fast": (0.0, CLOCK_FAST),
                            "slow": (0.0, CLOCK_SLOW)}[mode.split("-")[0]]
            return _Plan([victim], {"jump_s": jump_s, "rate": rate, "leader_known": known},
                         lambda: c.skew_clock(victim, jump_s=jump_s, rate=rate),
                         lambda: c.skew_clock(victim, rate=1.0))
        net = c.net
        if net is None:  # checked in __init__
            raise InvalidCommand("network faults need LocalCluster(network_faults=True)")
        heal = net.heal
        if kind == "partition":
            if mode in ("ring", "bridge"):
                pairs = self._unreachable(mode)
                return _Plan([], {"cut": [list(p) for p in pairs]}, lambda: net.cut(pairs), heal)
            groups, known = self._partition(mode)
            detail: dict[str, Any] = {"groups": [sorted(g) for g in groups]}
            if mode == "isolate-leader":
                detail["leader_known"] = known
            return _Plan(sorted(groups[-1]), detail, lambda: net.partition(groups), heal)
        if kind == "delay":
            if mode == "all":
                return _Plan([], {"delay_s": DELAY_S, "jitter_s": JITTER_S},
                             lambda: net.delay(DELAY_S, JITTER_S), heal)
            leader, known = self._leader_or_any()
            links = [p for j in range(n) if j != leader for p in ((leader, j), (j, leader))]
            return _Plan([leader], {"delay_s": DELAY_S, "jitter_s": JITTER_S,
                                    "leader_known": known},
                         lambda: net.delay(DELAY_S, JITTER_S, links), heal)
        if mode == "drops":
            return _Plan([], {"loss": DROP_PROBABILITY}, lambda: net.lose(DROP_PROBABILITY), heal)
        victim, known = self._leader_or_any() if mode.endswith("leader") else (self._any(), False)
        unheard = [(victim, j) for j in range(n) if j != victim]
        return _Plan([victim], {"unheard": victim, "leader_known": known},
                     lambda: net.cut(unheard, one_way=True), heal)

    def _plan_corrupt(self, mode: str) -> _Plan:
        c = self.cluster
        leader = c.leader()
        victim = self._rnd.choice([i for i in range(c.size) if i != leader] or [0])
        rdir = c.data_dir / f"r{victim}"
        name = JOURNAL_FILE + (".meta" if mode == "flip-meta" else "")
        target, backup = rdir / name, rdir / CORRUPT_BACKUP_DIR
        detail: dict[str, Any] = {"file": name}

        def act() -> None:
            c.kill(victim)
            backup.mkdir(exist_ok=True)
            for f in (JOURNAL_FILE, JOURNAL_FILE + ".meta"):
                if (rdir / f).exists():
                    shutil.copy2(rdir / f, backup / f)
            data = bytearray(target.read_bytes())
            if mode == "truncate-journal":
                cut = self._rnd.randrange(len(data) // 2, max(len(data) // 2 + 1, len(data)))
                detail.update(truncated_at=cut, size=len(data))
                data = data[:cut]
            else:
                pos = _flip_position(data, mode, self._rnd)
                if pos is None:  # nothing a flip could be told apart from a torn append
                    detail["outcome"] = "skipped: the journal holds fewer than two records"
                    c.restart(victim)
                    return
                data[pos] ^= 1 << self._rnd.randrange(8)
                detail.update(flipped_at=pos, size=len(data))
            target.write_bytes(bytes(data))
            try:
                c.restart(victim, timeout_s=CORRUPT_START_TIMEOUT_S)
                detail["outcome"] = "started"
            except BoardError as exc:
                if c.pid(victim) is not None:  # still starting: neither a refusal nor a start
                    c.kill(victim)
                    detail["outcome"] = f"did not start within {CORRUPT_START_TIMEOUT_S:g} s"
                else:
                    detail["outcome"] = f"refused to start: {_last_log_line(rdir, exc)}"
            if mode != "truncate-journal" and detail["outcome"] == "started":
                self.violations.append(f"r{victim} started on a corrupted {name} ({detail})")
            if mode == "truncate-journal" and detail["outcome"] != "started":
                self.violations.append(f"r{victim} did not recover from a journal cut at a "
                                       f"torn tail ({detail})")

        def heal() -> None:
            if detail.get("outcome") in ("started", None) or \
                    str(detail.get("outcome")).startswith("skipped"):
                return  # running on its own files: restoring them would roll its log back
            c.kill(victim)  # (already down: refused, or killed after a slow start)
            for f in (JOURNAL_FILE, JOURNAL_FILE + ".meta"):
                if (backup / f).exists():
                    shutil.copy2(backup / f, rdir / f)
            c.restart(victim)

        return _Plan([victim], detail, act, heal)

    def _revive(self, victims: list[int]) -> None:
        """Resume paused and restart killed victims; a replica that refuses to start (say, on
        corrupt data) is reported, the others are still revived."""
        errors: dict[str, str] = {}
        for i in victims:
            try:
                if self.cluster.pid(i) is not None:
                    self.cluster.resume(i)
                else:
                    self.cluster.restart(i)
            except BoardError as exc:
                errors[f"r{i}"] = str(exc)
        if errors:
            raise BoardError("; ".join(f"{k}: {v}" for k, v in errors.items()))

    def _note_crashes(self, expected_dead: set[int]) -> None:
        """A replica down that no fault took down crashed by itself: a finding, not noise.
        It is recorded in :attr:`crashed` (and restarted, so the run goes on)."""
        for i in range(self.cluster.size):
            if i in expected_dead or self.cluster.pid(i) is not None:
                continue
            self.crashed.append(f"r{i} exited on its own (noticed after fault {self._index})")
            log.error("replica crashed", replica=i)
            with contextlib.suppress(BoardError), self._heal_lock:
                self.cluster.restart(i)

    def heal_all(self) -> None:
        """Undo every fault that may be in force: network, clocks, paused and dead replicas.
        Waits (bounded) for a heal the schedule thread may still be running."""
        c = self.cluster
        if not self._heal_lock.acquire(timeout=self._heal_wait_s):
            log.error("a heal is still running; healing alongside it")
        else:
            self._heal_lock.release()
        with contextlib.suppress(Exception):
            if c.net is not None:
                c.net.heal()
        if c.clock_faults:
            for i in range(c.size):
                with contextlib.suppress(Exception):
                    c.skew_clock(i, rate=1.0)
        for i in range(c.size):
            with contextlib.suppress(Exception):
                if c.pid(i) is not None:
                    c.resume(i)
        for i in range(c.size):
            if c.pid(i) is None:
                try:
                    c.restart(i)
                except BoardError as exc:
                    log.error("replica not revived", replica=i, error=str(exc))

    # --------------------------------------------------------------------------- choices

    def _any(self) -> int:
        return self._rnd.randrange(self.cluster.size)

    def _leader_or_any(self) -> tuple[int, bool]:
        """The leader and ``True``; a random replica and ``False`` when none is known (say,
        mid-election): the timeline records which."""
        leader = self.cluster.leader()
        return (leader, True) if leader is not None else (self._any(), False)

    def _victims(self, mode: str) -> tuple[list[int], bool]:
        n = self.cluster.size
        if mode == "leader":
            leader, known = self._leader_or_any()
            return [leader], known
        if mode == "one":
            return [self._any()], False
        count = (n - 1) // 2 if mode == "minority" else n // 2 + 1
        return sorted(self._rnd.sample(range(n), max(1, count))), False

    def _partition(self, mode: str) -> tuple[list[set[int]], bool]:
        """Two sides, the smaller (the isolated replica) last."""
        n = self.cluster.size
        if mode in ("isolate-leader", "isolate-one"):
            victim, known = self._leader_or_any() if mode == "isolate-leader" \
                else (self._any(), False)
            return [set(range(n)) - {victim}, {victim}], known
        order = list(range(n))
        self._rnd.shuffle(order)
        half = n // 2 + 1
        return [set(order[:half]), set(order[half:])], False

    def _unreachable(self, mode: str) -> list[tuple[int, int]]:
        """Pairs that cannot talk: a ring over a random order (each replica reaches its two
        neighbours), or a bridge (two halves, one replica reaching both)."""
        n = self.cluster.size
        order = list(range(n))
        self._rnd.shuffle(order)
        pos = {r: k for k, r in enumerate(order)}
        pairs = []
        for a in range(n):
            for b in range(a + 1, n):
                d = abs(pos[a] - pos[b])
                if mode == "ring":
                    reach = d in (1, n - 1)
                else:
                    bridge = order[n // 2]
                    reach = bridge in (a, b) or (pos[a] < n // 2) == (pos[b] < n // 2)
                if not reach:
                    pairs.append((a, b))
        return pairs

    # --------------------------------------------------------------------------- timeline

    def _record(self, index: int, phase: Literal["start", "end"], kind: FaultKind, mode: str,
                targets: list[int], detail: dict[str, Any], error: str = "") -> None:
        event = FaultEvent(index=index, phase=phase, kind=kind, mode=mode, targets=targets,
                           detail=detail, time_ns=self._clock_ns(), error=error[:4096])
        log.info("nemesis", phase=phase, kind=kind, mode=mode, targets=targets, error=error)
        with self._file_lock:
            if self._file is not None and not self._file.closed:
                self._file.write(event.model_dump_json() + "\n")
                self._file.flush()
