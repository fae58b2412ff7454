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
``clock``      the leader's (or one replica's) lease clock jumps ahead, runs fast, or runs
               slow; back to real rate (see :mod:`consensus.clocks`)
=============  ===========================================================================

Network kinds need ``LocalCluster(network_faults=True)``, ``clock`` needs ``clock_faults=True``
(:class:`InvalidCommand` says so up front). Every start and end of a fault is appended to a
JSON Lines timeline (:class:`~consensus.history.FaultEvent`), flushed per line, with the same
monotonic clock as the operation history.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from consensus.cluster import LocalCluster
from consensus.errors import BoardError, InvalidCommand
from consensus.history import FaultEvent, FaultKind

__all__ = ["MODES", "Nemesis", "NemesisConfig"]

log = structlog.get_logger("consensus.nemesis")

MODES: dict[FaultKind, tuple[str, ...]] = {
    "kill": ("leader", "one", "minority", "majority"),
    "pause": ("leader", "one", "minority", "majority"),
    "partition": ("isolate-leader", "halves", "ring", "isolate-one", "bridge"),
    "delay": ("all", "leader"),
    "loss": ("one-way-leader", "drops", "one-way-one"),
    "clock": ("jump-leader", "fast-leader", "slow-one"),
}
_NEEDS_NET = {"partition", "delay", "loss"}
FAULTS_MAX = 10_000
HEAL_WAIT_S = 120.0
"""Longest a heal may take (restarting a killed majority, one replica after another)."""

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


class Nemesis:
    """Injects faults into ``cluster`` per ``config``, recording them to ``timeline``."""

    def __init__(self, cluster: LocalCluster, config: NemesisConfig, timeline: Path,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if cluster.embedded:
            raise InvalidCommand("the nemesis needs replica processes (embedded=False)")
        if _NEEDS_NET & set(config.faults) and cluster.net is None:
            raise InvalidCommand("network faults need LocalCluster(network_faults=True)")
        if "clock" in config.faults and not cluster.clock_faults:
            raise InvalidCommand("clock faults need LocalCluster(clock_faults=True)")
        self.cluster = cluster
        self.config = config
        self._clock_ns = clock_ns
        self._rnd = random.Random(config.seed)
        timeline.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = timeline.open("x", encoding="utf-8")
        self._file_lock = threading.Lock()
        self._index = 0
        self._turns: dict[FaultKind, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.injected = 0

    # --------------------------------------------------------------------------- schedule

    def start(self, duration_s: float) -> None:
        """Run the schedule on a thread for at most ``duration_s``."""
        deadline = time.monotonic() + duration_s
        self._thread = threading.Thread(target=self._run, args=(deadline,), name="nemesis",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the schedule (healing the fault in force), heal everything, close the timeline.
        Idempotent; safe to call from a ``finally``."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.config.fault_s + HEAL_WAIT_S)
        try:
            self.heal_all()
        finally:
            with self._file_lock:
                if not self._file.closed:
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
        """Inject one fault of ``kind`` (the next mode in turn), hold it, heal it."""
        turn = self._turns.get(kind, 0)
        self._turns[kind] = turn + 1
        modes = MODES[kind]
        mode = modes[turn % len(modes)]
        if mode == "ring" and self.cluster.size < 5:  # with 3 replicas every pair neighbours
            mode = "bridge"
        index = self._index
        self._index += 1
        heal: Callable[[], dict[str, Any]] | None = None
        targets: list[int] = []
        try:
            targets, detail, heal = self._inject(kind, mode)
            self.injected += 1
            self._record(index, "start", kind, mode, targets, detail)
            self._stop.wait(hold_s)
        except Exception as exc:
            self._record(index, "start", kind, mode, targets, {},
                         f"{type(exc).__name__}: {exc}")
            raise
        finally:
            error, outcome = "", {}
            try:
                if heal is not None:
                    outcome = heal()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            self._record(index, "end", kind, mode, targets, outcome, error)

    # --------------------------------------------------------------------------- faults

    def _inject(self, kind: FaultKind, mode: str
                ) -> tuple[list[int], dict[str, Any], Callable[[], dict[str, Any]]]:
        c = self.cluster
        n = c.size
        if kind in ("kill", "pause"):
            victims = self._victims(mode)
            act = c.kill if kind == "kill" else c.pause
            for i in victims:
                act(i)
            return victims, {}, lambda: self._revive(victims)
        if kind == "clock":
            victim = self._leader_or_any() if mode.endswith("leader") else self._any()
            jump_s, rate = {"jump": (CLOCK_JUMP_S, 1.0), "fast": (0.0, CLOCK_FAST),
                            "slow": (0.0, CLOCK_SLOW)}[mode.split("-")[0]]
            c.skew_clock(victim, jump_s=jump_s, rate=rate)
            return [victim], {"jump_s": jump_s, "rate": rate}, lambda: self._clock_ok([victim])
        net = c.net
        if net is None:  # checked in __init__
            raise InvalidCommand("network faults need LocalCluster(network_faults=True)")
        detail: dict[str, Any] = {}
        if kind == "partition":
            if mode in ("ring", "bridge"):
                pairs = self._unreachable(mode)
                net.cut(pairs)
                targets, detail = [], {"cut": [list(p) for p in pairs]}
            else:
                groups = self._partition(mode)
                net.partition(groups)
                targets, detail = sorted(groups[-1]), {"groups": [sorted(g) for g in groups]}
        elif kind == "delay":
            targets = [self._leader_or_any()] if mode == "leader" else []
            links = None if not targets else [
                p for j in range(n) if j != targets[0] for p in ((targets[0], j), (j, targets[0]))]
            net.delay(DELAY_S, JITTER_S, links)
            detail = {"delay_s": DELAY_S, "jitter_s": JITTER_S}
        else:  # loss
            if mode == "drops":
                targets = []
                net.lose(DROP_PROBABILITY)
                detail = {"loss": DROP_PROBABILITY}
            else:
                victim = self._leader_or_any() if mode.endswith("leader") else self._any()
                targets = [victim]
                net.cut([(victim, j) for j in range(n) if j != victim], one_way=True)
                detail = {"unheard": victim}
        return targets, detail, self._net_heal

    def _net_heal(self) -> dict[str, Any]:
        if self.cluster.net is not None:
            self.cluster.net.heal()
        return {}

    def _revive(self, victims: list[int]) -> dict[str, Any]:
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
        return {}

    def _clock_ok(self, victims: list[int]) -> dict[str, Any]:
        for i in victims:
            self.cluster.skew_clock(i, rate=1.0)
        return {}

    def heal_all(self) -> None:
        """Undo every fault that may be in force: network, clocks, paused and dead replicas."""
        c = self.cluster
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

    def _leader_or_any(self) -> int:
        leader = self.cluster.leader()
        return leader if leader is not None else self._any()

    def _victims(self, mode: str) -> list[int]:
        n = self.cluster.size
        if mode == "leader":
            return [self._leader_or_any()]
        if mode == "one":
            return [self._any()]
        count = (n - 1) // 2 if mode == "minority" else n // 2 + 1
        return sorted(self._rnd.sample(range(n), max(1, count)))

    def _partition(self, mode: str) -> list[set[int]]:
        n = self.cluster.size
        if mode in ("isolate-leader", "isolate-one"):
            victim = self._leader_or_any() if mode == "isolate-leader" else self._any()
            return [set(range(n)) - {victim}, {victim}]
        order = list(range(n))
        self._rnd.shuffle(order)
        half = n // 2 + 1
        return [set(order[:half]), set(order[half:])]

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
            if not self._file.closed:
                self._file.write(event.model_dump_json() + "\n")
                self._file.flush()
