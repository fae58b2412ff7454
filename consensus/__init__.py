"""quorumboard's consensus package: a replicated blackboard for teams of LLM agents.

Agents write to a board whose edits commit only once a Raft quorum of replicas has them; per-key
conflict policies decide what colliding edits do; leases, claims and fencing tokens make task
ownership safe across stalls and crashes. Start here::

    from consensus import LocalCluster, Conflict

    with LocalCluster(replicas=3) as cluster:
        board = cluster.board(agent="planner")
        board.put("plan/step-1", {"text": "draft intro"})
"""

from consensus.chaos import ChaosReport, Scenario, run_chaos
from consensus.checker import (
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
from consensus.client import Board, connect
from consensus.cluster import LocalCluster
from consensus.errors import (
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
from consensus.history import FaultEvent, HistoryWriter, OpRecord, read_faults, read_history
from consensus.logs import configure_logging
from consensus.model import Claim, Entry, Event, FenceRef, HistoryRecord, LeaseInfo, Pending
from consensus.nemesis import Nemesis, NemesisConfig
from consensus.netfaults import NetworkFaults
from consensus.policies import Accept, Current, Reject, Write, register_policy
from consensus.protocol import ReplicaStatus
from consensus.state import Limits
from consensus.workload import CasRegisterWorkload

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
