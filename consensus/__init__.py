"""quorumboard's consensus package: a replicated blackboard for teams of LLM agents.

Agents write to a board whose edits commit only once a Raft quorum of replicas has them; per-key
conflict policies decide what colliding edits do; leases, claims and fencing tokens make task
ownership safe across stalls and crashes. Start here::

    from quorumboard.consensus import LocalCluster, Conflict

    with LocalCluster(replicas=3) as cluster:
        board = cluster.board(agent="planner")
        board.put("plan/step-1", {"text": "draft intro"})

This module is the client-facing API. The fault-injection and checking harness is
:mod:`quorumboard.consensus.testing`; the adapters for other agent stacks are
:mod:`quorumboard.consensus.adapters` (each needs its extra).
"""

from quorumboard.consensus.client import Board, Connection, EventPage, connect, connect_shared
from quorumboard.consensus.cluster import LocalCluster
from quorumboard.consensus.core.model import (
    Claim,
    Entry,
    Event,
    FenceRef,
    HistoryRecord,
    LeaseInfo,
    LeaseStatus,
    Listing,
    Pending,
    PolicyBinding,
)
from quorumboard.consensus.core.policies import Accept, Current, Reject, Write, register_policy
from quorumboard.consensus.core.state import Limits
from quorumboard.consensus.errors import (
    AuthError,
    BoardError,
    ClaimHeld,
    Conflict,
    CorruptData,
    FencedOut,
    FrameTooLarge,
    InvalidCommand,
    InvalidKey,
    InvalidValue,
    InvariantViolation,
    NotFound,
    OutcomeUnknown,
    PolicyRejected,
    ProtocolError,
    RevisionCompacted,
    SessionExpired,
    SpaceQuotaExceeded,
    StaleVersion,
    TooManyConnections,
    Unavailable,
    UnknownPolicy,
    WatchCancelled,
)
from quorumboard.consensus.logs import configure_logging
from quorumboard.consensus.wire.protocol import ReplicaStatus

__version__ = "0.1.0"

__all__ = [
    "Accept",
    "AuthError",
    "Board",
    "BoardError",
    "Claim",
    "ClaimHeld",
    "Conflict",
    "Connection",
    "CorruptData",
    "Current",
    "Entry",
    "Event",
    "EventPage",
    "FenceRef",
    "FencedOut",
    "FrameTooLarge",
    "HistoryRecord",
    "InvalidCommand",
    "InvalidKey",
    "InvalidValue",
    "InvariantViolation",
    "LeaseInfo",
    "LeaseStatus",
    "Limits",
    "Listing",
    "LocalCluster",
    "NotFound",
    "OutcomeUnknown",
    "Pending",
    "PolicyBinding",
    "PolicyRejected",
    "ProtocolError",
    "Reject",
    "ReplicaStatus",
    "RevisionCompacted",
    "SessionExpired",
    "SpaceQuotaExceeded",
    "StaleVersion",
    "TooManyConnections",
    "Unavailable",
    "UnknownPolicy",
    "WatchCancelled",
    "Write",
    "configure_logging",
    "connect",
    "connect_shared",
    "register_policy",
]
