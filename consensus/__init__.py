"""quorumboard's consensus package: a replicated blackboard for teams of LLM agents.

Agents write to a board whose edits commit only once a Raft quorum of replicas has them; per-key
conflict policies decide what colliding edits do; leases, claims and fencing tokens make task
ownership safe across stalls and crashes. Start here::

    from quorumboard.consensus import LocalCluster, Conflict

    with LocalCluster(replicas=3) as cluster:
        board = cluster.board(agent="planner")
        board.put("plan/step-1", {"text": "draft intro"})
"""

from quorumboard.consensus.chaos import ChaosReport, Scenario, run_chaos
from quorumboard.consensus.checker import (
    UNKNOWN,
    CasRegister,
    CheckResult,
    Counter,
    KeyResult,
    LwwRegister,
    Model,
    Operation,
    SetModel,
    check_operations,
)
from quorumboard.consensus.client import Board, EventPage, connect
from quorumboard.consensus.cluster import LocalCluster
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
    StaleVersion,
    Unavailable,
    UnknownPolicy,
)
from quorumboard.consensus.history import (
    FaultEvent,
    HistoryWriter,
    OpRecord,
    read_faults,
    read_history,
)
from quorumboard.consensus.logs import configure_logging
from quorumboard.consensus.model import (
    Claim,
    Entry,
    Event,
    FenceRef,
    HistoryRecord,
    LeaseInfo,
    Listing,
    Pending,
)
from quorumboard.consensus.nemesis import Nemesis, NemesisConfig
from quorumboard.consensus.netfaults import NetworkFaults
from quorumboard.consensus.policies import Accept, Current, Reject, Write, register_policy
from quorumboard.consensus.protocol import ReplicaStatus
from quorumboard.consensus.state import Limits
from quorumboard.consensus.workload import CasRegisterWorkload

__version__ = "0.1.0"

__all__ = [
    "UNKNOWN",
    "Accept",
    "AuthError",
    "Board",
    "BoardError",
    "CasRegister",
    "CasRegisterWorkload",
    "ChaosReport",
    "CheckResult",
    "Claim",
    "ClaimHeld",
    "Conflict",
    "CorruptData",
    "Counter",
    "Current",
    "Entry",
    "Event",
    "EventPage",
    "FaultEvent",
    "FenceRef",
    "FencedOut",
    "FrameTooLarge",
    "HistoryRecord",
    "HistoryWriter",
    "InvalidCommand",
    "InvalidKey",
    "InvalidValue",
    "InvariantViolation",
    "KeyResult",
    "LeaseInfo",
    "Limits",
    "Listing",
    "LocalCluster",
    "LwwRegister",
    "Model",
    "Nemesis",
    "NemesisConfig",
    "NetworkFaults",
    "NotFound",
    "OpRecord",
    "Operation",
    "OutcomeUnknown",
    "Pending",
    "PolicyRejected",
    "ProtocolError",
    "Reject",
    "ReplicaStatus",
    "RevisionCompacted",
    "Scenario",
    "SessionExpired",
    "SetModel",
    "StaleVersion",
    "Unavailable",
    "UnknownPolicy",
    "Write",
    "check_operations",
    "configure_logging",
    "connect",
    "read_faults",
    "read_history",
    "register_policy",
    "run_chaos",
]
