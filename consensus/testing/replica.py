"""The harness's replica: ``python -m quorumboard.consensus.testing.replica [--planted-bug BUG]
[--power-cut] CONFIG``, the normal replica process with one deliberate bug planted in it, or
on the power-cut disk, or both.

Every checker ships with a negative control: a bug it must catch. The bugs live here, not in
production code: each is a subclass of a production part that overrides one of its extension
points (:class:`~quorumboard.consensus.replica.server.ClientServer`'s ``_answers_locally``,
``_submit``, ``_events_to_send``; :class:`~quorumboard.consensus.replica.machine.ReplicaMachine`'s
``_apply_proposal``; :class:`~quorumboard.consensus.raft.node.RaftNode`'s
``_compaction_truncates`` and ``_confirmed_read_index``), and this entry point runs the normal replica with that part swapped
in. ``LocalCluster(planted_bug=...)`` and
:class:`~quorumboard.consensus.testing.powercut.PowerCutCluster` start their replicas here;
nothing else does. ``--power-cut`` keeps the replica's Raft log on the power-cut disk
(:mod:`quorumboard.consensus.testing.powercut`: a flushed image of the log, which a power cut
puts back).

The bugs (``--planted-bug``, else the ``QUORUMBOARD_PLANTED_BUG`` environment variable):

* ``stale-reads``: every replica, followers included, answers linearizable reads from its local
  state at once, without a confirmed read index (linearizability);
* ``unconfirmed-reads``: a leader takes its own commit index as the read index without the
  heartbeat round that confirms it still leads (ReadIndex, Raft thesis §6.4), so a leader cut
  off from its majority answers from its old state (linearizability);
* ``retry-bypass``: the leader re-proposes every fifth client proposal as a retry *without* its
  session, so the session table cannot deduplicate it (exactly-once);
* ``watch-gap``: watch streams silently skip events whose revision is a multiple of 50 (watch);
* ``divergent-apply``: replica ``r1`` keeps a stray key every 25 revisions (convergence);
* ``fence-bypass``: the leader drops the fence from writes to keys other than the claimed one,
  so a stalled holder's late write applies (claims safety);
* ``lost-write``: every replica acknowledges each put committed at a revision divisible by 20
  and then restores the key's previous value (no lost write / set completeness);
* ``unsynced-acks``: every replica's journal reports appends durable before they are flushed
  and flushes once a second (:class:`~quorumboard.consensus.testing.powercut.UnsyncedAcksJournal`),
  so followers acknowledge, and leaders count themselves for, entries a power cut takes back
  (durability; only power cuts show it: a SIGKILL keeps the page cache).

A replica with a planted bug says so at CRITICAL level when it starts.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from typing import Final

import structlog

from quorumboard.consensus.core.model import Event, Proposal, PutCmd
from quorumboard.consensus.core.state import Applied
from quorumboard.consensus.raft.node import RaftNode
from quorumboard.consensus.replica import __main__ as replica_main
from quorumboard.consensus.replica.machine import EXIT_CONFIG, Replica, ReplicaMachine
from quorumboard.consensus.replica.server import ClientServer, Done
from quorumboard.consensus.testing.planted import PLANTED_BUG_ENV, PLANTED_BUGS, PlantedBug
from quorumboard.consensus.testing.powercut import UnsyncedAcksJournal, on_power_cut_disk
from quorumboard.consensus.wire.protocol import ReadReq

__all__ = [
    "SkipFirstCompactionTruncate",
    "main",
    "replica_class",
]

log = structlog.get_logger("quorumboard.consensus.testing.replica")

RETRY_BYPASS_EVERY: Final = 5
WATCH_GAP_EVERY: Final = 50
DIVERGE_EVERY: Final = 25
DIVERGING_REPLICA: Final = "r1"
LOSE_EVERY: Final = 20


# --- the client endpoint -----------------------------------------------------------------------


class StaleReadsServer(ClientServer):
    def _answers_locally(self, req: ReadReq) -> bool:
        return True


class RetryBypassServer(ClientServer):
    def _submit(self, proposal: Proposal, done: Done) -> None:
        super()._submit(proposal, done)
        if proposal.seq % RETRY_BYPASS_EVERY == 0:
            retry = proposal.model_copy(update={"session": 0, "seq": 0, "acked_below": 0})
            super()._submit(retry, lambda _r, _f: None)


class FenceBypassServer(ClientServer):
    def _submit(self, proposal: Proposal, done: Done) -> None:
        cmd = proposal.command
        if isinstance(cmd, PutCmd) and cmd.fence is not None and cmd.fence.key != cmd.key:
            proposal = proposal.model_copy(update={"command": cmd.model_copy(
                update={"fence": None})})
        super()._submit(proposal, done)


class WatchGapServer(ClientServer):
    def _events_to_send(self, events: list[Event]) -> list[Event]:
        return [e for e in events if e.revision % WATCH_GAP_EVERY]


# --- the state machine -------------------------------------------------------------------------


class DivergentApplyMachine(ReplicaMachine):
    def _apply_proposal(self, proposal: Proposal) -> Applied:
        applied = super()._apply_proposal(proposal)
        result = applied.result
        if (self.config.name == DIVERGING_REPLICA and result.entry is not None
                and result.revision % DIVERGE_EVERY == 0):
            # A key only this replica has, never overwritten.
            stray = dataclasses.replace(self.state.kv[result.entry.key], value="diverged")
            self.state.kv[f"diverged/{result.revision}"] = stray
        return applied


class LostWriteMachine(ReplicaMachine):
    def _apply_proposal(self, proposal: Proposal) -> Applied:
        cmd = proposal.command
        if not isinstance(cmd, PutCmd):
            return super()._apply_proposal(proposal)
        before = self.state.kv.get(cmd.key)
        applied = super()._apply_proposal(proposal)
        result = applied.result
        if result.entry is not None and result.revision % LOSE_EVERY == 0:
            # On every replica alike: acknowledge, then forget.
            if before is None:
                del self.state.kv[cmd.key]
            else:
                self.state.kv[cmd.key] = before
        return applied


# --- the Raft node -----------------------------------------------------------------------------


class SkipFirstCompactionTruncate(RaftNode):
    """A fault, not a bug: the first journal truncation after a snapshot is skipped and
    compaction stops, which leaves on disk what a crash between "snapshot renamed" and
    "journal prefix dropped" leaves (tests/test_raft.py restarts from it)."""

    _truncations_skipped = 0

    def _compaction_truncates(self) -> bool:
        if self._truncations_skipped:
            return True
        self._truncations_skipped = 1
        self._sync.conf.logCompactionMinEntries = 2**62
        self._sync.conf.logCompactionMinTime = 1e12
        log.warning("raft_fault_injected_skip_compaction_truncate")
        return False


class UnconfirmedReadsNode(RaftNode):
    """ReadIndex without its heartbeat round: a leader vouches for its own commit index."""

    def _confirmed_read_index(self, on_index: Callable[[int | None], None],
                              prepare: Callable[[int | None], None] | None = None) -> None:
        if self.is_leader():
            on_index(self._sync.raftCommitIndex)
            return
        super()._confirmed_read_index(on_index, prepare)


class UnsyncedAcksNode(RaftNode):
    """Acknowledges appends before they are on disk (see :class:`UnsyncedAcksJournal`)."""

    journal_class = UnsyncedAcksJournal


# --- the replica -------------------------------------------------------------------------------


class _PlantedReplica(Replica):
    bug: str = ""

    def start(self) -> None:
        log.critical("PLANTED BUG ACTIVE: this replica is deliberately wrong", bug=self.bug,
                     replica=self.config.name)
        super().start()


_PARTS: Final[dict[str, tuple[type[ReplicaMachine], type[ClientServer], type[RaftNode]]]] = {
    "stale-reads": (ReplicaMachine, StaleReadsServer, RaftNode),
    "unconfirmed-reads": (ReplicaMachine, ClientServer, UnconfirmedReadsNode),
    "retry-bypass": (ReplicaMachine, RetryBypassServer, RaftNode),
    "watch-gap": (ReplicaMachine, WatchGapServer, RaftNode),
    "fence-bypass": (ReplicaMachine, FenceBypassServer, RaftNode),
    "divergent-apply": (DivergentApplyMachine, ClientServer, RaftNode),
    "lost-write": (LostWriteMachine, ClientServer, RaftNode),
    "unsynced-acks": (ReplicaMachine, ClientServer, UnsyncedAcksNode),
}
assert set(_PARTS) == PLANTED_BUGS


def replica_class(bug: PlantedBug | str | None, *, power_cut: bool = False) -> type[Replica]:
    """The :class:`Replica` to run with ``bug`` planted (the normal one for ``None``), its Raft
    log on the power-cut disk if ``power_cut``."""
    if bug is not None and bug not in _PARTS:
        raise ValueError(f"planted bug {bug!r} is not one of {sorted(PLANTED_BUGS)}")
    if bug is None and not power_cut:
        return Replica
    machine, server, raft = _PARTS[bug] if bug is not None else (
        ReplicaMachine, ClientServer, RaftNode)
    if power_cut:
        raft = on_power_cut_disk(raft)
    base = Replica if bug is None else _PlantedReplica
    name = "PowerCut" if bug is None else f"Planted_{bug.replace('-', '_')}"
    return type(name, (base,), {"bug": bug or "", "machine_class": machine,
                                "server_class": server, "raft_class": raft})


def main(argv: list[str] | None = None) -> int:
    parser = replica_main.parser("python -m quorumboard.consensus.testing.replica")
    parser.add_argument("--planted-bug", choices=sorted(PLANTED_BUGS), default=None,
                        help=f"negative control: the bug to plant (default: ${PLANTED_BUG_ENV})")
    parser.add_argument("--power-cut", action="store_true",
                        help="keep the Raft log on the power-cut disk (see "
                        "quorumboard.consensus.testing.powercut)")
    args = parser.parse_args(argv)
    bug = args.planted_bug or os.environ.get(PLANTED_BUG_ENV) or None
    try:
        cls = replica_class(bug, power_cut=args.power_cut)
    except ValueError as exc:
        print(f"{PLANTED_BUG_ENV}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return replica_main.main(args=args, replica_class=cls)


if __name__ == "__main__":
    sys.exit(main())
